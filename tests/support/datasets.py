"""The datasets tests read: synthetic COCO folders (`mal.data.synthetic`) and the shared development data.

`synthetic_dataset` builds one folder; the session fixture `synthetic_coco` of tests/conftest.py calls it once per
distinct set of parameters, and each folder's conftest names the dataset its tests use (`synthetic`,
`synthetic_dir`) with its own size and seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mal.data.synthetic import make_synthetic_coco

SHARED_DATA = Path("/work/shared/data")
"""The shared development datasets (coco128_dev, dsb2018_dev, ...); tests that need them skip where absent."""


def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory, **params: Any) -> Path:
    """A new folder holding `images/` and `annotations.json` from `make_synthetic_coco(folder, **params)`."""
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_coco(root, **params)
    return root
