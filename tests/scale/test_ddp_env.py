"""`mal train` as two DDP processes on CPU (gloo), started the way a cluster starts them.

Two launch paths, both with WORLD_SIZE=2, NODE_RANK=0, MASTER_ADDR=127.0.0.1 and a free MASTER_PORT:
  - plain environment variables: we start both ranks ourselves with RANK / LOCAL_RANK set (what srun, mpirun or
    a hand-written launcher does; Lightning sees LOCAL_RANK and does not spawn processes of its own);
  - torchrun (`python -m torch.distributed.run --nproc_per_node=2 -m mal train ...`), the docs' command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lightning")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("this torch build has no gloo backend", allow_module_level=True)

from mal.data.synthetic import make_synthetic_coco  # noqa: E402
from support.services import free_port  # noqa: E402
from support.specs import write_tiny_spec  # noqa: E402

DDP_SPEC = {
    "dataset.crop_size": 64,
    "dataset.min_obj_size": 256,
    "model.mask_head_hidden_channel": 64,
    "model.mask_head_out_channel": 64,
    "train.num_epochs": 1,
    "train.batch_size": 16,
}
OVERRIDES = ["train.num_epochs=1", "train.num_gpus=2", "train.validation_interval=1", "train.num_threads=1"]


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    make_synthetic_coco(root / "data", num_images=24, seed=0)
    path = root / "spec.yaml"
    return write_tiny_spec(path, root / "data" / "annotations.json", root / "data" / "images", overrides=DDP_SPEC)


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC_", "PMI_", "OMPI_"))}
    env.update(MAL_NO_PROGRESS="1", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    return env


def _launch_by_env(spec, results, port) -> list[subprocess.CompletedProcess]:
    procs = []
    for rank in (0, 1):
        env = _base_env()
        env.update(WORLD_SIZE="2", NODE_RANK="0", RANK=str(rank), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
        command = [sys.executable, "-m", "mal", "train", "-e", str(spec), f"results_dir={results}", *OVERRIDES]
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def _launch_by_torchrun(spec, results, port) -> list[subprocess.CompletedProcess]:
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--node_rank=0", "--nproc_per_node=2",
               "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "mal", "train", "-e", str(spec),
               f"results_dir={results}", *OVERRIDES]  # fmt: skip
    return [subprocess.run(command, env=_base_env(), capture_output=True, text=True, timeout=300, check=False)]


@pytest.mark.parametrize("launch", [_launch_by_env, _launch_by_torchrun], ids=["env-vars", "torchrun"])
def test_two_process_ddp_through_the_cluster_env_path(spec, tmp_path, launch):
    results = tmp_path / "out"
    for done in launch(spec, results, free_port()):
        assert done.returncode == 0, done.stderr[-3000:]
    lines = (results / "train" / "status.json").read_text().splitlines()
    events = [json.loads(line) for line in lines if line.strip()]
    assert [e["status"] for e in events] == ["STARTED", "RUNNING", "SUCCESS"]  # rank 0 alone writes status
    saved = sorted((results / "train").glob("mal_model_epoch_*.pth"))
    assert saved, "no epoch checkpoint was written"
    checkpoint = torch.load(saved[-1], weights_only=True, map_location="cpu")
    assert checkpoint["hyper_parameters"]["world_size"] == 2
