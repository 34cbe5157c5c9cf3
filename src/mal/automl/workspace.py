"""A study's folder: `workspace_dir/run_<UTC timestamp>/`, everything needed to resume it from the path alone.

    run.json              what was asked: skill dir, algorithm, settings, overrides, command (secrets as ***)
    state.json            the search: algorithm state + every trial's record, written as ONE file so the two
                          never disagree after a crash
    study.journal         the trials mirrored into an Optuna journal (`optuna-dashboard study.journal`)
    baseline.json, final_evaluation.json, preflight.json, launch_review.{json,md}, result.json
    trials/<job id>/      spec.yaml, stdout.log, stderr.log, exit_code, and the job's own outputs
    report/               report.md, report.html, plots
    tensorboard/          one run per trial

Every file here is written through `write_json`/`write_text`, which hide secrets (`mal.redaction`: URL
passwords, credential parameters, llm_api_key) so that a run folder can be shared. The only exceptions are the
specs the trainings read (`base_spec.yaml`, `trials/*/spec.yaml`): a data URL must reach its job whole, so they
are written by `write_input_text`, readable by the owner only.

Every write is atomic (`mal.fileio`) and happens under `state.lock`; a second file lock, held for the whole
life of a runner, stops two runners from driving the same study (the kernel drops it when a runner dies,
even by SIGKILL).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from mal.errors import UserError
from mal.fileio import atomic_open, atomic_write_json, atomic_write_text
from mal.redaction import redact_text, redact_tree

RUN_PREFIX = "run_"
RUN_FILE = "run.json"


class WorkspaceBusyError(UserError):
    """Another runner is driving this study."""


class Workspace:
    """One study's run folder."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._state_lock = FileLock(str(self.root / "state.lock"))
        self._runner_lock = FileLock(str(self.root / "runner.lock"))

    # -- finding and making run folders ----------------------------------------------------------------------

    @classmethod
    def create(cls, workspace_dir: str | os.PathLike[str]) -> Workspace:
        """A fresh `run_<UTC timestamp>` folder (a suffix keeps two runs in the same second apart)."""
        parent = Path(workspace_dir)
        parent.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        for suffix in range(1000):
            root = parent / (f"{RUN_PREFIX}{stamp}" + (f"_{suffix}" if suffix else ""))
            try:
                root.mkdir()
            except FileExistsError:
                continue
            (root / "trials").mkdir()
            return cls(root)
        raise RuntimeError(f"could not create a run folder in {parent}")

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Workspace:
        """The run folder at `path`, or the newest `run_*` inside `path`; UserError when there is none."""
        root = Path(path)
        if (root / RUN_FILE).is_file():
            return cls(root)
        runs = (
            sorted(child for child in root.glob(f"{RUN_PREFIX}*") if (child / RUN_FILE).is_file())
            if root.is_dir()
            else []
        )
        if not runs:
            raise UserError(
                f"{root} holds no AutoML study (no {RUN_FILE}, no run_* folder with one); "
                f"pass the run folder that `mal automl run` printed."
            )
        return cls(runs[-1])

    # -- paths --------------------------------------------------------------------------------------------------

    @property
    def trials_dir(self) -> Path:
        return self.root / "trials"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    @property
    def tensorboard_dir(self) -> Path:
        return self.root / "tensorboard"

    def trial_dir(self, job_id: str) -> Path:
        return self.trials_dir / job_id

    def path(self, name: str) -> Path:
        return self.root / name

    # -- JSON state ---------------------------------------------------------------------------------------------

    def read_json(self, name: str) -> Any:
        """The parsed file, or None when it does not exist yet."""
        try:
            with self._state_lock:
                text = (self.root / name).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return json.loads(text)

    def write_json(self, name: str, obj: Any) -> None:
        """Write `obj` as JSON with its secrets hidden."""
        with self._state_lock:
            atomic_write_json(self.root / name, redact_tree(obj))

    def write_text(self, name: str, text: str) -> None:
        """Write `text` with the secrets of its URLs hidden."""
        with self._state_lock:
            atomic_write_text(self.root / name, redact_text(text))

    def write_input_text(self, name: str, text: str) -> None:
        """Write a spec a training reads, as it is (its data URLs may need their credentials), owner-only."""
        with self._state_lock:
            write_private_text(self.root / name, text)

    # -- the runner lock ----------------------------------------------------------------------------------------

    @contextmanager
    def runner_lock(self) -> Iterator[None]:
        """Hold the study for one runner; WorkspaceBusyError when another live runner holds it."""
        try:
            self._runner_lock.acquire(timeout=0)
        except Timeout:
            raise WorkspaceBusyError(
                f"Another AutoML runner is driving {self.root}; wait for it or stop it before resuming."
            ) from None
        try:
            yield
        finally:
            self._runner_lock.release()


def write_private_text(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` atomically with mode 0600: the file may hold a credential the user put in a data URL."""
    with atomic_open(path, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)  # before any byte is written, so no reader ever sees it open
        handle.write(text)
