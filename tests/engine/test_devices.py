"""How the Trainer's process layout follows the spec, or an external launcher (torchrun, srun) when one started us."""

from __future__ import annotations

import pytest

from mal.engine.trainer import launcher_layout, resolve_devices
from mal.spec import load_spec


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8", "RANK": "3"}, (8, 2)),
        ({"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}, (2, 1)),
        ({"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "16", "SLURM_NTASKS_PER_NODE": "8"}, (8, 2)),
        ({"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "4", "SLURM_TASKS_PER_NODE": "2(x2)"}, (2, 2)),
        ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}, None),  # a plain sbatch script: the spec decides
    ],
)
def test_launcher_layout(env, expected):
    assert launcher_layout(env) == expected


def test_cpu_layout_from_the_spec(monkeypatch):
    for name in ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "SLURM_JOB_ID", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    single = resolve_devices(load_spec(None))
    assert (single["accelerator"], single["devices"], single["world_size"], single["precision"]) == \
        ("cpu", 1, 1, "32-true")
    double = resolve_devices(load_spec(None, ["train.num_gpus=2", "train.num_nodes=2"]))
    assert double["world_size"] == 4 and double["strategy"].process_group_backend == "gloo"


def test_cpu_layout_follows_torchrun(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    placement = resolve_devices(load_spec(None))
    assert (placement["devices"], placement["num_nodes"], placement["world_size"]) == (2, 2, 4)
