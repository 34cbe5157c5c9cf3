"""mal.automl: hyperparameter search over `mal train`, driven through the job contract only.

    from mal.automl import AutoMLRunner
    result = AutoMLRunner(skill_dir="skill/", workspace_dir="automl/").run(automl_algorithm="asha", ...)

Names load lazily so that light entry points (the job wrapper of the local platform) start fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AutoMLRunner": "mal.automl.runner",
    "StudyStoppedError": "mal.automl.failures",
    "LocalPlatform": "mal.automl.platforms.local",
    "Platform": "mal.automl.platforms.base",
    "Workspace": "mal.automl.workspace",
    "study_result": "mal.automl.report",
    "write_report": "mal.automl.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mal.automl' has no attribute {name!r}")
