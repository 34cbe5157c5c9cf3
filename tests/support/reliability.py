"""Helpers of the reliability suite: the real CLI in a subprocess, a tiny dataset, one tiny trained model."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from support.specs import write_tiny_spec


def mal_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MAL_")}
    env.update(MAL_NO_PROGRESS="1", **extra)
    return env


def run_mal(
    *args: str, timeout: float = 300, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mal", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or mal_env(),
        cwd=cwd,
    )


def sigint_as_in_a_terminal() -> None:
    """`preexec_fn` for a child that is sent Ctrl-C: a shell without job control (CI's, `make test &`) starts
    background commands with SIGINT ignored, children inherit that, and Python then never raises KeyboardInterrupt.
    A terminal's foreground job, which is what the tests stand for, has the default."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def popen_mal(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mal", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or mal_env(),
        start_new_session=True,
        preexec_fn=sigint_as_in_a_terminal,
    )


def write_spec(path: Path, ann: Path, images: Path, results: Path, epochs: int = 2) -> Path:
    return write_tiny_spec(path, ann, images, results, {"train.num_epochs": epochs})


def assert_user_error(result: subprocess.CompletedProcess[str], *names: str) -> str:
    """Exit 2, no traceback, and the last stderr line is the one sentence naming the culprit."""
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, "no error line on stderr"
    last = lines[-1]
    assert "error:" in last and "internal error" not in last, last
    for name in names:
        assert name in last, f"{name!r} not named in: {last}"
    return last


def leftovers(results_dir: Path) -> list[str]:
    """Files in results_dir that a failed job must not leave: temp files, outputs, checkpoints."""
    if not results_dir.exists():
        return []
    bad = []
    for path in results_dir.rglob("*"):
        if path.is_dir():
            continue
        name = path.name
        if name.endswith(".tmp") or name.startswith(".") or name.endswith((".pth", ".onnx", ".json")):
            if name == "status.json":
                events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
                if events and events[-1]["status"] not in ("FAILURE",):
                    bad.append(f"{path} ends with {events[-1]['status']}")
                continue
            bad.append(str(path))
    return bad


def status_events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class Bench:
    """One bad-input case's sandbox: its own folder, and the session's synthetic data (never modified)."""

    root: Path
    synthetic: Path
    trained: Path | None = None

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def images(self) -> Path:
        return self.synthetic / "images"

    @property
    def ann(self) -> Path:
        return self.synthetic / "annotations.json"

    def coco(self) -> dict:
        return json.loads(self.ann.read_text())

    def write_json(self, data: object, name: str = "ann.json") -> Path:
        path = self.root / name
        path.write_text(json.dumps(data))  # allow_nan: NaN / Infinity are written as Python's reader accepts them
        return path

    def spec_text(self, text: str, name: str = "spec.yaml") -> Path:
        path = self.root / name
        path.write_text(text)
        return path

    def spec_for(self, ann: Path, images: Path | None = None, name: str = "spec.yaml") -> Path:
        return write_spec(self.root / name, ann, images or self.images, self.results)

    def spec(self) -> Path:
        return self.spec_for(self.ann)

    def copied_images(self) -> Path:
        folder = self.root / "images"
        shutil.copytree(self.images, folder)
        return folder
