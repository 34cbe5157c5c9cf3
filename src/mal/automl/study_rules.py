"""What the runner checks in a user's study before anything runs, and what it sets on every trial.

- The skill: its `references/skill_info.yaml` may switch AutoML off (model or action level); its spec template
  must exist and parse, or every trial would train on `{}`.
- The metric: TAO users write `metric: mIoU`; it resolves to the one KPI the job reports with that last name
  (`val/mIoU`, from skill_info's `kpis`), and a name no KPI has is refused before the first training.
- The user's own values: `train.num_epochs` in the user's spec is the full budget R (pbt: its generations x
  automl_eval_interval) unless the setting is given too, when the two must agree;
  `train.resume_training_checkpoint_path` is refused, since every trial replaces it.
- `runner_set_keys`: every spec key the runner sets per trial and where its value comes from, for the review.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mal.automl.settings import AutoMLSettings
from mal.dotted import get_dotted
from mal.errors import SpecError
from mal.safe_yaml import load_mapping

SKILL_INFO = Path("references") / "skill_info.yaml"
RESUME_KEY = "train.resume_training_checkpoint_path"


def read_skill_info(skill_dir: Path) -> dict[str, Any]:
    """skill_info.yaml as a mapping ({} when the skill has none: a hand-made skill dir may omit it)."""
    path = skill_dir / SKILL_INFO
    if not path.is_file():
        return {}
    return load_mapping(path, f"skill_info {path}", "must hold a mapping, not a {kind}; regenerate it with "
                        "`mal schema --out DIR`.")  # fmt: skip


def check_skill(skill_dir: Path, action: str, info: Mapping[str, Any]) -> None:
    """Refuse a skill whose AutoML is switched off, and one whose spec template is missing or unreadable."""
    where = skill_dir / SKILL_INFO
    if info.get("automl_enabled") is False:
        raise SpecError(f"{where} sets automl_enabled: false: this skill does not allow AutoML studies.")
    action_info = (info.get("actions") or {}).get(action)
    if isinstance(action_info, Mapping) and action_info.get("automl_enabled") is False:
        raise SpecError(f"{where} sets actions.{action}.automl_enabled: false: `{action}` cannot be tuned by AutoML.")
    template = skill_dir / "references" / f"spec_template_{action}.yaml"
    if not template.is_file():
        raise SpecError(
            f"skill dir {skill_dir} has no references/spec_template_{action}.yaml, so trials would train on an empty "
            f"spec; regenerate the skill with `mal schema --out {skill_dir}`."
        )
    load_mapping(template, f"spec template {template}", "must hold a mapping of spec keys, not a {kind}; regenerate "
                 f"it with `mal schema --out {skill_dir}`.")  # fmt: skip


def action_kpis(info: Mapping[str, Any], action: str) -> list[str]:
    """The KPI names the action's job reports, as the skill declares them ([] when it does not say)."""
    action_info = (info.get("actions") or {}).get(action)
    kpis = action_info.get("kpis") if isinstance(action_info, Mapping) else None
    return [str(kpi) for kpi in kpis] if isinstance(kpis, list) else []


def resolve_metric(settings: AutoMLSettings, kpis: Sequence[str], action: str) -> str | None:
    """Set settings.metric to the KPI it names; the note to show when a short name was resolved, else None."""
    metric = settings.metric
    if not kpis or metric in kpis:
        return None
    short = metric.rsplit("/", 1)[-1].lower()
    matches = [kpi for kpi in kpis if kpi.rsplit("/", 1)[-1].lower() == short]
    if len(matches) != 1:
        raise SpecError(
            f"automl_settings.metric {metric!r} is not a KPI the {action} job reports; it reports "
            f"{', '.join(kpis)} (skill_info.yaml). Set metric to one of them."
        )
    settings.metric = matches[0]
    return f"metric {metric!r} is the job's KPI {matches[0]!r}"


def honour_user_values(settings: AutoMLSettings, user_spec: Mapping[str, Any]) -> list[str]:
    """Fit the settings to what the user's spec says, or refuse; notes saying what was taken from where."""
    if get_dotted(user_spec, RESUME_KEY):
        raise SpecError(
            f"your spec (spec: and spec_overrides) sets {RESUME_KEY} = {get_dotted(user_spec, RESUME_KEY)!r}, "
            "which every trial would replace (a trial trains from the start, or from its own checkpoint when "
            "promoted); to measure that checkpoint as the baseline set evaluate.checkpoint to it, to start trials "
            "from backbone weights set "
            "train.pretrained_model_path."
        )
    epochs = get_dotted(user_spec, "train.num_epochs")
    if epochs is None:
        return []
    if settings.algorithm == "pbt":
        return _pbt_generations(settings, epochs)
    multiplier = settings.epoch_multiplier
    full = settings.automl_max_epochs * multiplier
    if "automl_max_epochs" in settings.model_fields_set:
        if epochs != full:
            raise SpecError(
                f"your spec (spec: and spec_overrides) sets train.num_epochs = {epochs!r} but automl_max_epochs x "
                f"epoch_multiplier makes a full training {full} epochs; the runner sets each trial's train.num_epochs, "
                "so keep only one."
            )
        return []
    if not isinstance(epochs, int) or epochs < 1 or epochs % multiplier:
        raise SpecError(
            f"your spec's train.num_epochs = {epochs!r} must be a whole number of resource units of "
            f"epoch_multiplier ({multiplier}) epochs to be the full budget; change one of them."
        )
    settings.automl_max_epochs = epochs // multiplier
    return [f"a full training is {epochs} epochs: your train.num_epochs, read as automl_max_epochs = "
            f"{epochs // multiplier}"]


def _pbt_generations(settings: AutoMLSettings, epochs: Any) -> list[str]:
    """PBT trains every member automl_eval_interval epochs per generation: the user's train.num_epochs is the
    members' whole training, so it sets the number of generations (or must agree with it)."""
    interval = settings.automl_eval_interval
    if "automl_max_generations" in settings.model_fields_set:
        if epochs != interval * settings.automl_max_generations:
            raise SpecError(
                f"your spec (spec: and spec_overrides) sets train.num_epochs = {epochs!r} but pbt trains "
                f"automl_max_generations ({settings.automl_max_generations}) x automl_eval_interval ({interval}) "
                "epochs; the runner sets each member's train.num_epochs, so keep only one."
            )
        return []
    if not isinstance(epochs, int) or epochs < interval or epochs % interval:
        raise SpecError(
            f"your spec's train.num_epochs = {epochs!r} must be a whole number of pbt generations of "
            f"automl_eval_interval ({interval}) epochs; change one of them."
        )
    settings.automl_max_generations = epochs // interval
    return [f"pbt trains {epochs // interval} generations of {interval} epochs: your train.num_epochs ({epochs})"]


def runner_set_keys(
    settings: AutoMLSettings,
    user_spec: Mapping[str, Any],
    searched: Sequence[str],
    full_budget: int,
    devices_per_job: int,
) -> list[dict[str, str]]:
    """Every key the runner sets in a trial's spec: {key, value, source}; the user's own value is named."""

    def yours(key: str) -> str:
        value = get_dotted(user_spec, key)
        return "" if value is None else f"; your {value!r} is not used by trials"

    epochs_from = (
        "your train.num_epochs"
        if get_dotted(user_spec, "train.num_epochs") is not None
        else f"automl_max_epochs {settings.automl_max_epochs} x epoch_multiplier {settings.epoch_multiplier}"
    )
    keys = [
        {"key": "results_dir", "value": "RUN_DIR/trials/JOB_ID", "source": "the runner: one folder per trial"
         + yours("results_dir")},
        {"key": "train.num_epochs", "value": f"the trial's budget, up to {full_budget}",
         "source": f"the algorithm ({settings.algorithm}); a full training from {epochs_from}"},
        {"key": RESUME_KEY, "value": "null, or the trial's own checkpoint",
         "source": "the algorithm: a promoted trial continues its own checkpoint"},
        {"key": "train.batch_size", "value": "yours, capped when an epoch would have no step",
         "source": "the runner (the report lists every cap)"},
    ]  # fmt: skip
    if devices_per_job:
        for key in ("train.num_gpus", "train.gpu_ids"):
            keys.append({"key": key, "value": f"{devices_per_job} GPU(s) per trial",
                         "source": "the platform" + yours(key)})  # fmt: skip
    for name in searched:
        value = get_dotted(user_spec, name)
        mine = "" if value is None else f"; your {value!r} is the baseline's value"
        keys.append({"key": name, "value": "drawn per trial", "source": f"the search space{mine}"})
    return keys
