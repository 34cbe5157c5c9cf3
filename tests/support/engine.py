"""Helpers of the engine tests: the real CLI in a subprocess (the caller's MAL_* variables kept, unlike
`support.reliability.run_mal`) and the status events a run wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def run_mal(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mal", *args], capture_output=True, text=True, timeout=timeout, env=_env()
    )


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["MAL_NO_PROGRESS"] = "1"
    return env


def status_events(results_dir: Path, action: str = "train") -> list[dict]:
    path = results_dir / action / "status.json"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
