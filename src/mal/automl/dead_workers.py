"""A shared study's answer to a worker that dies: its running trials stop receiving heartbeats, and the first live
worker to notice fails each of them (an atomic storage update, so exactly one wins) and queues ONE retry with the
same values. A worker leaving on SIGTERM or Ctrl-C hands its trials back the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from mal.automl.failures import Failure
from mal.automl.storage import HEARTBEAT_ATTR
from mal.automl.trials import now


def study_storage(study: optuna.Study) -> Any:
    # The study's own storage object: for SQL stores Optuna wraps the RDBStorage in a cache that must see every
    # write this process makes, so nothing may go around it.
    return study._storage


def fail_trial_and_retry(study: optuna.Study, frozen: FrozenTrial, failure: Mapping[str, Any]) -> FrozenTrial | None:
    """Fail a RUNNING trial on behalf of its (dead or leaving) worker and queue ONE retry with the same values.

    Only the caller whose FAIL update the storage accepts does anything more, so two workers noticing the same
    dead trial never queue two retries. Returns the failed trial, or None when someone else got there first.
    """
    storage = study_storage(study)
    tid = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study.study_name), frozen.number
    )
    try:
        # Written first: a finished trial accepts no more attributes.
        storage.set_trial_user_attr(tid, "failure", dict(failure))
        storage.set_trial_user_attr(tid, "finished", now())
        if not storage.set_trial_state_values(tid, TrialState.FAIL):
            return None
    except UpdateFinishedTrialError:
        return None
    # A scheduled job is not retried here: its scheduler sees it lost and submits it again.
    if "retry_of" not in frozen.user_attrs and not frozen.user_attrs.get("scheduled"):
        attrs = {"retry_of": frozen.number, "slot": frozen.user_attrs.get("slot")}
        if "params" in frozen.user_attrs:
            attrs["params"] = frozen.user_attrs["params"]
        study.enqueue_trial(dict(frozen.params), user_attrs=attrs)
    return frozen


def fail_stale_trials(
    study: optuna.Study,
    grace_period: float,
    alive: set[int] = frozenset(),
    on_failed: Callable[[FrozenTrial], None] | None = None,
) -> list[int]:
    """Fail (and retry once) every running trial whose heartbeat is older than grace_period; their numbers.

    on_failed(trial) runs for each trial this call failed (never for one another worker got to first)."""
    storage = study_storage(study)
    study_id = storage.get_study_id_from_name(study.study_name)
    checked_at = time.time()
    failed = []
    for frozen in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        if frozen.number in alive:
            continue
        beat = frozen.system_attrs.get(HEARTBEAT_ATTR)
        if beat is None and frozen.datetime_start is not None:
            beat = frozen.datetime_start.timestamp()
        if beat is None or checked_at - float(beat) <= grace_period:
            continue
        worker = frozen.user_attrs.get("worker", "its worker")
        failure = Failure(
            "infrastructure",
            f"{worker} stopped sending heartbeats ({checked_at - float(beat):.0f}s > grace period {grace_period:g}s)",
            None,
        )
        if fail_trial_and_retry(study, frozen, failure.to_dict()) is not None:
            failed.append(frozen.number)
            if on_failed is not None:
                on_failed(frozen)
    return failed
