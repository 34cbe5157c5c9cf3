"""Why a trial failed, read from its exit code and the tail of its log (the job contract's only outputs).

Classes:
    spec            the spec or a searched value is invalid (exit 2, spec words): the same values fail again
    data            data not visible or unreadable (exit 2 or a file error naming a data path)
    out_of_memory   CUDA / host out of memory (the same values fail again on the same hardware)
    model_code      an exception inside training (exit 1 with a traceback)
    infrastructure  killed by a signal, lost process, distributed/network faults: worth retrying
    metric_missing  the job succeeded but its status.json never reported the metric

`spec` and `out_of_memory` depend on the values tried, so the runner remembers them by a hash of the values and
does not pay for the same invalid configuration twice.
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from mal.errors import UserError

FailureClass = Literal["spec", "data", "out_of_memory", "model_code", "infrastructure", "metric_missing"]

# Failures caused by the values themselves: retrying the same values cannot succeed.
CONFIG_DEPENDENT: frozenset[str] = frozenset({"spec", "out_of_memory"})

_OOM = re.compile(
    r"out of memory|OutOfMemoryError|CUDA error: out of memory|MemoryError|Cannot allocate memory|"
    r"std::bad_alloc",
    re.IGNORECASE,
)
_DATA = re.compile(
    r"DataError|FileNotFoundError|No such file|does not exist|not found|cannot (?:read|open)|"
    r"permission denied|unreadable|annotation|image|dataset\.|_ann_path|_img_dir|NoCredentials|"
    r"AccessDenied|403|404",
    re.IGNORECASE,
)
_INFRA = re.compile(
    r"NCCL|Gloo|connection (?:refused|reset)|Address already in use|timed? ?out|Broken pipe|"
    r"No space left on device|Too many open files|CUDA driver|no CUDA-capable device|"
    r"ECC error|device-side assert",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Failure:
    """A classified failure: its class, one line of cause, and the exit code it came with."""

    category: FailureClass
    reason: str
    exit_code: int | None = None

    @property
    def config_dependent(self) -> bool:
        return self.category in CONFIG_DEPENDENT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Failure:
        return cls(data["category"], data["reason"], data.get("exit_code"))


def last_line(text: str) -> str:
    """The last non-empty line: the job contract puts the cause there."""
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()
    return ""


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(code).name
    except ValueError:
        return f"signal {code}"


def classify(exit_code: int | None, log_tail: str, status_message: str = "") -> Failure:
    """Classify a failed job from its exit code (None: unknown/lost, negative: signal) and log tail."""
    cause = last_line(log_tail) or status_message or "no output"
    text = f"{log_tail}\n{status_message}"
    if _OOM.search(text):
        return Failure("out_of_memory", cause, exit_code)
    if exit_code is None:
        return Failure("infrastructure", f"the job's process disappeared without an exit code ({cause})", None)
    if exit_code < 0 or exit_code in (128 + signal.SIGKILL, 128 + signal.SIGTERM):
        signum = -exit_code if exit_code < 0 else exit_code - 128
        hint = " (possibly the kernel's out-of-memory killer)" if signum == signal.SIGKILL else ""
        return Failure("infrastructure", f"killed by {_signal_name(signum)}{hint}; last output: {cause}", exit_code)
    if exit_code == 2:
        # The contract's user-input exit: the spec or the data. The last line names which.
        if re.search(r"DataError|_ann_path|_img_dir|image|annotation|dataset", cause) and not re.search(
            r"SpecError|unknown key|did you mean", cause, re.IGNORECASE
        ):
            return Failure("data", cause, exit_code)
        return Failure("spec", cause, exit_code)
    if _INFRA.search(text):
        return Failure("infrastructure", cause, exit_code)
    if re.search(r"FileNotFoundError|No such file|DataError", cause) and _DATA.search(cause):
        return Failure("data", cause, exit_code)
    return Failure("model_code", cause, exit_code)


def params_hash(params: Mapping[str, Any]) -> str:
    """A stable hash of a configuration (the key of the invalid-configuration cache)."""
    canonical = json.dumps(dict(params), sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


NO_METRIC_LIMIT = 3


class StudyStoppedError(UserError):
    """The study stopped before its end (repeated failures, no metric); the message names the cause."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def check_streak(streak: list[dict[str, Any] | None], run_dir: Path) -> None:
    """Stop the study (StudyStoppedError) once the last three trials in a row ended without a metric."""
    if len(streak) < NO_METRIC_LIMIT:
        return
    last = streak[-NO_METRIC_LIMIT:]
    categories = {entry["category"] if entry else "metric_missing" for entry in last}
    if len(categories) == 1:
        category = categories.pop()
        reason = last[-1]["reason"] if last[-1] else "no metric"
        exit_code = 2 if category in ("spec", "data", "metric_missing") else 1
        raise StudyStoppedError(
            f"Three trials in a row ended without a metric, all with the same cause ({category}): {reason}. "
            f"Fix it, then continue with `mal automl resume {run_dir}`.",
            exit_code,
        )
    causes = "; ".join(f"{e['category']}: {e['reason']}" if e else "no metric" for e in last)
    raise StudyStoppedError(
        f"Three recommendations in a row produced no metric ({causes}). Fix the causes, "
        f"then continue with `mal automl resume {run_dir}`.",
        1,
    )
