"""`mal inference` and `mal evaluate` over several processes (gloo on CPU, real subprocesses): the merged label
file is the single process's byte for byte, a killed rank loses no finished shard, and the world size is free.

Three launches, as users start them: torchrun (`python -m torch.distributed.run --nproc_per_node 2`), plain rank
variables (what srun or a hand-written launcher sets), and mal's own spawn of `num_gpus` local processes.
MAL_SHARD_BOXES=3 with batches of 4 boxes cuts the 24 synthetic boxes into several chunks per rank.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("this torch build has no gloo backend", allow_module_level=True)

from mal.data.coco import load_coco  # noqa: E402
from mal.data.datasets import LabelBoxDataset  # noqa: E402
from mal.engine.ranks import Ranked, Spawn, first_host, plan_launch, spawn_local  # noqa: E402
from mal.engine.sharding import plan_chunks  # noqa: E402
from mal.errors import SpecError  # noqa: E402
from mal.spec import load_spec  # noqa: E402
from mal.spec.schema import InferenceConfig  # noqa: E402
from support.engine import status_events  # noqa: E402
from support.services import free_port  # noqa: E402
from support.specs import write_tiny_spec  # noqa: E402

SHARDED = {"train.num_epochs": 1, "inference.batch_size": 4, "evaluate.batch_size": 4}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC_", "PMI_", "OMPI_"))}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    env.update(MAL_NO_PROGRESS="1", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", MAL_SHARD_BOXES="3", **extra)
    return env


def _mal(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mal", *args], env=_env(**env), capture_output=True, text=True,
                          timeout=300, check=False)


def _torchrun(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "mal", *args]
    return subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300, check=False)


def _by_rank_variables(*args: str, **env: str) -> list[subprocess.CompletedProcess[str]]:
    """Both ranks started by hand with RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT."""
    port = str(free_port())
    procs = [subprocess.Popen([sys.executable, "-m", "mal", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=_env(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank),
                                                  MASTER_ADDR="127.0.0.1", MASTER_PORT=port, **env))
             for rank in (0, 1)]
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


@pytest.fixture(scope="module")
def data(synthetic_coco) -> Path:
    return synthetic_coco(num_images=8, seed=0)


@pytest.fixture(scope="module")
def spec(data, tmp_path_factory) -> Path:
    """The tiny spec trained for one epoch; its checkpoint is named explicitly so each test has its own results_dir."""
    root = tmp_path_factory.mktemp("sharded")
    path = write_tiny_spec(root / "spec.yaml", data / "annotations.json", data / "images", overrides=SHARDED)
    done = _mal("train", "-e", str(path), f"results_dir={root / 'trained'}")
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoint = root / "trained" / "train" / "mal_model_best.pth"
    assert checkpoint.is_file()
    overrides = {**SHARDED, "inference.checkpoint": str(checkpoint), "evaluate.checkpoint": str(checkpoint)}
    return write_tiny_spec(path, data / "annotations.json", data / "images", overrides=overrides)


@pytest.fixture(scope="module")
def single_labels(spec, tmp_path_factory) -> bytes:
    """The label file of one process: what every sharded run must reproduce."""
    results = tmp_path_factory.mktemp("single")
    done = _mal("inference", "-e", str(spec), f"results_dir={results}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (results / "inference" / "shards").exists()  # one process labels straight through
    return (results / "inference" / "labels.json").read_bytes()


@pytest.mark.slow
def test_torchrun_two_ranks_write_the_single_process_file(spec, single_labels, tmp_path):
    done = _torchrun("inference", "-e", str(spec), f"results_dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "inference" / "labels.json").read_bytes() == single_labels
    assert "over 2 processes" in done.stdout and done.stdout.count("labels written to") == 1  # rank 0 alone
    assert [event["status"] for event in status_events(tmp_path, "inference")] == ["STARTED", "SUCCESS"]
    assert not (tmp_path / "inference" / "shards").exists()  # merged, then removed


@pytest.mark.slow
def test_a_killed_rank_loses_no_finished_shard(spec, single_labels, tmp_path):
    args = ("inference", "-e", str(spec), f"results_dir={tmp_path}")
    rank0, rank1 = _by_rank_variables(*args, MAL_TEST_KILL_AFTER_SHARDS="1:1")
    assert rank1.returncode == -9  # SIGKILLed right after its first shard
    assert rank0.returncode == 1, rank0.stderr[-3000:]
    error = rank0.stderr.strip().splitlines()[-1]
    assert "stopped before it finished" in error and "run the same command again to continue" in error
    assert not (tmp_path / "inference" / "labels.json").exists()
    assert status_events(tmp_path, "inference")[-1]["status"] == "FAILURE"
    shards = sorted((tmp_path / "inference" / "shards").glob("chunk_*.json"))
    assert shards  # rank 1's first one and rank 0's whole share

    # Resumed by one process: the chunks do not depend on the world size, the finished ones are not relabeled.
    done = _mal(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"reusing {len(shards)} finished shards" in done.stdout
    assert (tmp_path / "inference" / "labels.json").read_bytes() == single_labels
    assert not (tmp_path / "inference" / "shards").exists()


@pytest.mark.slow
def test_evaluate_on_two_spawned_ranks_scores_like_one(spec, tmp_path, monkeypatch):
    one, two = tmp_path / "one", tmp_path / "two"
    done = _mal("evaluate", "-e", str(spec), f"results_dir={one}")
    assert done.returncode == 0, done.stderr[-3000:]
    # mal's own spawn of inference.num_gpus local processes (on GPUs it is chosen by num_gpus; here it is called).
    for name, value in _env().items():
        monkeypatch.setenv(name, value)
    loaded = load_spec(str(spec), [f"results_dir={two}", "evaluate.num_gpus=2"])
    assert spawn_local(loaded, "evaluate", Spawn(per_node=2, node_rank=0, num_nodes=1, master_addr="127.0.0.1",
                                                 master_port=free_port())) == 0
    metrics = [json.loads((folder / "evaluate" / "metrics.json").read_text()) for folder in (one, two)]
    for each in metrics:
        each.pop("seconds")
    assert metrics[0] == metrics[1] and metrics[0]["mIoU"] is not None
    assert [event["status"] for event in status_events(two, "evaluate")] == ["STARTED", "SUCCESS"]
    assert not (two / "evaluate" / "shards").exists()


def test_chunks_cover_every_box_once_in_file_batches(data):
    coco = load_coco(data / "annotations.json", data / "images")
    dataset = LabelBoxDataset(coco, crop_size=32, chunk_size=4)
    chunks = plan_chunks(dataset, 4, 3)
    assert len(chunks) > 2 and [chunk.index for chunk in chunks] == list(range(len(chunks)))
    rows = [row for chunk in chunks for row in chunk.rows.tolist()]
    assert sorted(rows) == list(range(len(coco)))
    assert all(len(chunk.rows) >= 3 for chunk in chunks[:-1])
    whole = plan_chunks(dataset, 4, 10**9)  # one chunk: exactly the batches of one process
    assert len(whole) == 1 and [list(b) for b in whole[0].batches] == [b for c in chunks for b in map(list, c.batches)]


def test_launch_plans_and_their_errors(capsys):
    two = InferenceConfig(num_gpus=2)
    torchrun = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "h0", "MASTER_PORT": "29400",
                "TORCHELASTIC_RUN_ID": "x"}
    assert plan_launch(InferenceConfig(), "inference", torchrun) == Ranked(1, 2, 1, "h0", 29400, "torchrun")
    assert plan_launch(two, "inference", torchrun).size == 2  # a spec that matches the launcher
    with pytest.raises(SpecError, match=r"inference.num_gpus x inference.num_nodes = 4 x 1 = 4 processes, but the "
                                        r"launch has 2 \(torchrun\)"):
        plan_launch(InferenceConfig(num_gpus=4), "inference", torchrun)
    with pytest.raises(SpecError, match="MASTER_ADDR is not set"):
        plan_launch(InferenceConfig(), "inference", {"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(SpecError, match="RANK = 2 is not below WORLD_SIZE = 2"):
        plan_launch(InferenceConfig(), "inference", {"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "h"})
    srun = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "16", "SLURM_PROCID": "9",
            "SLURM_LOCALID": "1", "SLURM_JOB_NODELIST": "gpu[007-008]"}
    assert plan_launch(InferenceConfig(), "evaluate", srun) == Ranked(9, 16, 1, "gpu007", 19242, "srun")
    assert plan_launch(InferenceConfig(), "evaluate", {**srun, "SLURM_STEP_ID": ""}) is None  # a batch script
    assert first_host("cpu3,cpu4") == "cpu3" and first_host("n[1-2,5],m1") == "n1"

    assert plan_launch(two, "inference", {}, gpus=0) is None  # no GPU: one process, said once
    assert "inference.num_gpus = 2" in capsys.readouterr().out
    with pytest.raises(SpecError, match="inference.num_gpus = 2: this machine has 1 GPU"):
        plan_launch(two, "inference", {}, gpus=1)
    spawn = plan_launch(two, "inference", {}, gpus=8)
    assert isinstance(spawn, Spawn) and spawn.per_node == 2 and spawn.master_addr == "127.0.0.1"
    nodes = InferenceConfig(num_gpus=2, num_nodes=2)
    with pytest.raises(SpecError, match="NODE_RANK is not set"):
        plan_launch(nodes, "inference", {"MASTER_ADDR": "h0"}, gpus=8)
    with pytest.raises(SpecError, match="MASTER_ADDR is not set"):
        plan_launch(nodes, "inference", {"NODE_RANK": "1"}, gpus=8)
    assert plan_launch(nodes, "inference", {"NODE_RANK": "1", "MASTER_ADDR": "h0"}, gpus=8) == Spawn(2, 1, 2, "h0",
                                                                                                       29500)
