"""Fixtures shared by several test folders; each folder's conftest.py keeps the fixtures only its tests use.

Plain helpers (functions, constants, spec writers) live in the `support` package (tests/support/), imported as
`from support.x import y`; only pytest fixtures belong here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from support.datasets import synthetic_dataset

# One CPU thread per test and per process it starts (they inherit the variable): `make test` runs two pytest
# workers on a 2-core machine, where a second intra-op thread per worker only makes the two wait on each other
# (a 13 s training took 73 s so). Set before torch is imported, which reads it then.
os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(scope="session")
def synthetic_coco(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """`synthetic_coco(num_images=8, seed=0)`: a synthetic COCO folder (`images/`, `annotations.json`) built once
    per session for each set of `make_synthetic_coco` parameters. Read-only: copy it before changing anything."""
    built: dict[tuple[tuple[str, Any], ...], Path] = {}

    def build(**params: Any) -> Path:
        key = tuple(sorted(params.items()))
        if key not in built:
            built[key] = synthetic_dataset(tmp_path_factory, **params)
        return built[key]

    return build
