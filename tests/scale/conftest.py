"""Fixtures of the scale tests: private services (skipped with the reason when they cannot run), the dummy job."""

from __future__ import annotations

import os

import pytest

from support.services import ServiceUnavailable, start_postgres, start_slurm


@pytest.fixture(scope="module")
def postgres():
    try:
        service = start_postgres()
    except ServiceUnavailable as exc:
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    yield service
    service.stop()


@pytest.fixture(scope="module")
def slurm():
    """A private single-node Slurm; SLURM_CONF points this process (and so sbatch/squeue/scancel) at it."""
    try:
        cluster = start_slurm()
    except ServiceUnavailable as exc:
        pytest.skip(f"Slurm unavailable: {exc}")
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    yield cluster
    if saved is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = saved
    cluster.stop()
