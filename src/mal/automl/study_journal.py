"""Trials in an Optuna store, both ways: a local study's records mirrored into `study.journal` in its run folder
(so optuna-dashboard and every Optuna tool open it), and any store's trials read back as `TrialRecord`s (so one
report serves local and shared studies).

The user attributes are the same for both engines: `params` (the real values, dotted keys), `job_id`,
`results_dir`, `budget`, `state`, `failure`, `metric`, `started`, `finished`, `seconds` and the rest of the record.
A local study's state.json stays the truth; the journal follows it after every save, writing only what changed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mal.automl.trial_record import TrialRecord

JOURNAL_FILE = "study.journal"

# Record fields written as user attributes (the rest are the runner's own bookkeeping).
_ATTRS = (
    "rec_id", "job_id", "params", "budget", "resume_from", "info", "state", "adjustments", "metric", "failure",
    "cached", "checkpoint", "results_dir", "started", "finished", "seconds", "attempts",
)  # fmt: skip
_WHERE_ATTRS = ("worker", "host", "platform", "platform_job_id", "retry_of")


def optuna_distributions(space: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Optuna distributions for the searched parameters (`SearchSpace.describe()` entries)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    distributions: dict[str, Any] = {}
    for param in space:
        if "low" in param:
            log = bool(param.get("log_scale")) and param["low"] > 0
            if param["type"] == "int":
                distributions[param["name"]] = IntDistribution(int(param["low"]), int(param["high"]), log=log)
            else:
                distributions[param["name"]] = FloatDistribution(float(param["low"]), float(param["high"]), log=log)
        else:
            distributions[param["name"]] = CategoricalDistribution([hashable(c) for c in param["choices"]])
    return distributions


def hashable(value: Any) -> Any:
    """A value Optuna accepts as a categorical choice (lists and mappings become their text)."""
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


class StudyJournal:
    """The Optuna journal that mirrors one local study (`path`, study `name`)."""

    def __init__(self, path: Path, name: str, direction: str, space: Sequence[Mapping[str, Any]]) -> None:
        self.path = path
        self.name = name
        self.direction = direction
        self.space = list(space)
        self._storage: Any = None
        self._study_id = 0
        self._trial_ids: dict[int, int] = {}
        self._written: dict[int, dict[str, str]] = {}
        self._epochs: dict[int, set[int]] = {}
        self._finished: set[int] = set()

    def sync(self, records: Iterable[TrialRecord]) -> None:
        """Bring the journal in line with the records (new trials, changed attributes, new epochs, ends)."""
        if self._storage is None:
            self._open()
        for record in sorted(records, key=lambda r: r.rec_id):
            if record.rec_id in self._finished:
                continue
            tid = self._trial_ids.get(record.rec_id)
            if tid is None:
                tid = self._create(record)
            self._write(tid, record)

    def _open(self) -> None:
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend
        from optuna.trial import TrialState

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._storage = JournalStorage(JournalFileBackend(str(self.path)))
        study = optuna.create_study(
            storage=self._storage, study_name=self.name, direction=self.direction, load_if_exists=True
        )
        self._study_id = self._storage.get_study_id_from_name(study.study_name)
        for frozen in self._storage.get_all_trials(self._study_id, deepcopy=False):
            rec_id = int(frozen.user_attrs.get("rec_id", frozen.number))
            self._trial_ids[rec_id] = frozen._trial_id
            self._written[rec_id] = {key: _canon(value) for key, value in frozen.user_attrs.items()}
            self._epochs[rec_id] = set(frozen.intermediate_values)
            if frozen.state.is_finished() and frozen.state != TrialState.RUNNING:
                self._finished.add(rec_id)

    def _create(self, record: TrialRecord) -> int:
        tid = self._storage.create_new_trial(self._study_id)
        for name, distribution in optuna_distributions(self.space).items():
            if name not in record.params:
                continue
            try:
                internal = distribution.to_internal_repr(hashable(record.params[name]))
                self._storage.set_trial_param(tid, name, internal, distribution)
            except (ValueError, TypeError):
                pass  # a value outside the schema's range (custom ranges): kept in the `params` attribute only
        self._trial_ids[record.rec_id] = tid
        self._written[record.rec_id] = {}
        self._epochs[record.rec_id] = set()
        return tid

    def _write(self, tid: int, record: TrialRecord) -> None:
        from optuna.trial import TrialState

        written = self._written[record.rec_id]
        data = record.to_dict()
        attrs = {key: data[key] for key in _ATTRS}
        attrs.update({key: data[key] for key in _WHERE_ATTRS if data[key] is not None})
        for key, value in attrs.items():
            canon = _canon(value)
            if written.get(key) != canon:
                self._storage.set_trial_user_attr(tid, key, value)
                written[key] = canon
        seen = self._epochs[record.rec_id]
        for epoch in sorted(set(record.epochs) - seen):
            self._storage.set_trial_intermediate_value(tid, epoch, record.epochs[epoch])
            seen.add(epoch)
        if not record.is_final:
            return
        if record.state == "done" and record.metric is not None:
            self._storage.set_trial_state_values(tid, TrialState.COMPLETE, [record.metric])
        elif record.state == "stopped":
            self._storage.set_trial_state_values(tid, TrialState.PRUNED)
        else:
            self._storage.set_trial_state_values(tid, TrialState.FAIL)
        self._finished.add(record.rec_id)


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


_STATES = {"COMPLETE": "done", "PRUNED": "stopped", "FAIL": "failed", "RUNNING": "running", "WAITING": "pending"}


def record_from_frozen(trial: Any, default_budget: int | None = None) -> TrialRecord:
    """A stored trial (an Optuna FrozenTrial written by either engine) as a TrialRecord."""
    attrs = trial.user_attrs
    state = _STATES.get(trial.state.name, trial.state.name.lower())
    if state == "running" and attrs.get("state") == "interrupted":
        state = "interrupted"
    if state == "done":
        metric = trial.value
    elif state == "stopped":
        metric = attrs.get("metric")
    else:
        metric = None
    results_dir = attrs.get("results_dir") or ""
    checkpoint = attrs.get("checkpoint")
    if checkpoint is None and state == "done" and results_dir:
        best = Path(results_dir) / "train" / "mal_model_best.pth"
        checkpoint = str(best) if best.exists() else None
    return TrialRecord(
        job_id=attrs.get("job_id", f"trial_{trial.number:04d}"),
        rec_id=int(attrs.get("rec_id", trial.number)),
        params=dict(attrs.get("params") or {}),
        budget=attrs.get("budget", default_budget),
        results_dir=results_dir,
        resume_from=attrs.get("resume_from"),
        info=dict(attrs.get("info") or {}),
        state=state,  # type: ignore[arg-type]
        adjustments=list(attrs.get("adjustments") or []),
        epochs={int(step): float(value) for step, value in trial.intermediate_values.items()},
        metric=metric,
        failure=attrs.get("failure") if state == "failed" else None,
        cached=bool(attrs.get("cached", False)),
        checkpoint=checkpoint if state in ("done", "stopped") else None,
        started=attrs.get("started"),
        finished=attrs.get("finished"),
        seconds=attrs.get("seconds"),
        attempts=int(attrs.get("attempts", 1)),
        worker=attrs.get("worker"),
        host=attrs.get("host"),
        platform=attrs.get("platform"),
        platform_job_id=attrs.get("platform_job_id"),
        retry_of=attrs.get("retry_of"),
    )
