"""status.json: the job contract's event log, one JSON object per line (read by AutoML to prune or promote).

Each event: {"status": STARTED|RUNNING|SUCCESS|FAILURE, "epoch", "max_epoch", "kpi", "message", "time", ...}.
Lines are appended with a flush and fsync each, so a reader never sees a half line unless the writer died
mid-write; the reader (`mal.automl.platforms.contract.read_status_events`, the job contract's side) skips such a
last line.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

STATUSES = ("STARTED", "RUNNING", "SUCCESS", "FAILURE")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class StatusFile:
    """Appends job events to `results_dir/<action>/status.json`."""

    def __init__(self, path: str | os.PathLike[str], max_epoch: int = 0) -> None:
        self.path = Path(path)
        self.max_epoch = max_epoch
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, status: str, *, epoch: int = 0, kpi: Mapping[str, float] | None = None,
              message: str = "", **extra: Any) -> dict[str, Any]:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        event = {
            "status": status,
            "epoch": int(epoch),
            "max_epoch": int(self.max_epoch),
            "kpi": {key: _finite(float(value)) for key, value in (kpi or {}).items()},
            "message": message,
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            **{key: _finite(value) for key, value in extra.items()},
        }
        line = json.dumps(event) + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        return event
