"""What a study is made of, read once at its start: the search space from the skill dir's schema, and the base spec
(the skill's template with the caller's overrides, local data paths made absolute); the skill, the metric and the
user's own values are checked on the way (`study_rules`), and `notes` says what was read from where."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mal.automl.algorithms import make_algorithm
from mal.automl.platforms.contract import load_yaml
from mal.automl.preflight import DATA_KEYS
from mal.automl.settings import AutoMLSettings
from mal.automl.space import SearchSpace
from mal.automl.study_rules import action_kpis, check_skill, honour_user_values, read_skill_info, resolve_metric
from mal.dotted import deep_merge, get_dotted, nest_dotted, set_dotted
from mal.spec.schema import is_timm_name


@dataclass
class StudyInputs:
    skill_dir: Path
    space: SearchSpace
    base_spec: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, config: Mapping[str, Any], settings: AutoMLSettings) -> StudyInputs:
        """Read and check everything; settings.metric and automl_max_epochs may be fitted to what the user wrote
        (so build before the settings are saved)."""
        skill_dir = Path(config["skill_dir"])
        action = config.get("action", "train")
        info = read_skill_info(skill_dir)
        check_skill(skill_dir, action, info)
        notes = [f"{alias} read as {name}" for alias, name in settings.renamed]
        metric_note = resolve_metric(settings, action_kpis(info, action), action)
        overrides = nest_dotted(config.get("spec_overrides") or {})
        notes += [metric_note] if metric_note else []
        notes += honour_user_values(settings, overrides)
        space = SearchSpace.from_skill_dir(
            skill_dir, config.get("hyperparameters"), config.get("custom_param_ranges") or None, action=action
        )
        make_algorithm(settings.algorithm, space, settings)  # unknown names fail here, before any folder exists
        base = load_yaml(skill_dir / "references" / f"spec_template_{action}.yaml")
        return cls(skill_dir, space, deep_merge(base, overrides), notes)


def absolute_data_paths(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Nested overrides with relative local data paths made absolute: trials run in their own folders, and a
    resume may start from another directory."""
    nested = nest_dotted(overrides)
    for key in (*DATA_KEYS, "evaluate.checkpoint"):
        value = get_dotted(nested, key)
        if key == "train.pretrained_model_path" and isinstance(value, str) and not Path(value).exists() and \
                is_timm_name(value):
            continue  # a timm model name, not a path
        if isinstance(value, str) and value and "://" not in value and not Path(value).expanduser().is_absolute():
            set_dotted(nested, key, str(Path(value).expanduser().resolve()))
    return nested
