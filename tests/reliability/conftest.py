"""Fixtures of the reliability suite: a tiny synthetic dataset and one tiny trained checkpoint (once per session)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from support.reliability import run_mal, write_spec


@pytest.fixture(scope="session")
def synthetic(synthetic_coco: Callable[..., Path]) -> Path:
    """8 images of shapes (read-only: a case copies what it changes)."""
    return synthetic_coco(num_images=8, seed=0)


@pytest.fixture(scope="session")
def trained(synthetic, tmp_path_factory) -> Path:
    """A checkpoint of a 2-epoch run on the synthetic data (about 15 s on 2 cores)."""
    results = tmp_path_factory.mktemp("trained")
    spec = write_spec(results / "spec.yaml", synthetic / "annotations.json", synthetic / "images", results)
    result = run_mal("train", "-e", spec)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = (results / "train" / "mal_model_latest.pth").resolve()
    assert checkpoint.is_file()
    return checkpoint


@pytest.fixture
def small_disk(tmp_path):
    """A 300 kB tmpfs (needs root and mount); skipped where mounting is not allowed."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount_point)],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except FileNotFoundError:
        pytest.skip("no mount command here, so no small disk can be made")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip() or 'not root'})")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=20)
