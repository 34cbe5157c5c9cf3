"""What a study is made of, read once at its start: the search space from the skill dir's schema, and the base spec
(the skill's template with the caller's overrides, local data paths made absolute)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mal.automl.algorithms import make_algorithm
from mal.automl.platforms.contract import load_yaml
from mal.automl.preflight import DATA_KEYS
from mal.automl.settings import AutoMLSettings
from mal.automl.space import SearchSpace
from mal.dotted import deep_merge, get_dotted, nest_dotted, set_dotted


@dataclass
class StudyInputs:
    skill_dir: Path
    space: SearchSpace
    base_spec: dict[str, Any]

    @classmethod
    def build(cls, config: Mapping[str, Any], settings: AutoMLSettings) -> StudyInputs:
        skill_dir = Path(config["skill_dir"])
        action = config.get("action", "train")
        space = SearchSpace.from_skill_dir(
            skill_dir, config.get("hyperparameters"), config.get("custom_param_ranges") or None, action=action
        )
        make_algorithm(settings.algorithm, space, settings)  # unknown names fail here, before any folder exists
        template = skill_dir / "references" / f"spec_template_{action}.yaml"
        base = load_yaml(template) if template.is_file() else {}
        base_spec = deep_merge(base, nest_dotted(config.get("spec_overrides") or {}))
        return cls(skill_dir, space, base_spec)


def absolute_data_paths(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Nested overrides with relative local data paths made absolute: trials run in their own folders, and a
    resume may start from another directory."""
    nested = nest_dotted(overrides)
    for key in DATA_KEYS:
        value = get_dotted(nested, key)
        if isinstance(value, str) and value and "://" not in value and not Path(value).expanduser().is_absolute():
            set_dotted(nested, key, str(Path(value).expanduser().resolve()))
    return nested
