"""Experiment tracking of a study: TensorBoard scalars per trial, and W&B runs when `wandb` is installed.

TensorBoard events are written with tensorboard's own protobuf writer (no torch in AutoML): one run folder per
trial (`tensorboard/<job id>`: the metric per epoch) and a `tensorboard/study` run (each trial's final metric
and the best so far, by completion order). W&B, when importable and enabled in the base spec (`wandb.enable`),
gets one run per trial and a summary table, offline unless `wandb.mode` is online. Only metrics and searched
values are logged: never settings, keys or environment values.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mal.redaction import redact_tree


class TensorBoardTracker:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = Path(log_dir)
        self._writers: dict[str, Any] = {}

    def _writer(self, run: str) -> Any:
        if run not in self._writers:
            from tensorboard.summary.writer.event_file_writer import EventFileWriter

            self._writers[run] = EventFileWriter(str(self.log_dir / run))
        return self._writers[run]

    def scalar(self, run: str, tag: str, value: float, step: int) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        summary = Summary(value=[Summary.Value(tag=tag, simple_value=float(value))])
        self._writer(run).add_event(Event(wall_time=time.time(), step=int(step), summary=summary))

    def close_run(self, run: str) -> None:
        writer = self._writers.pop(run, None)
        if writer is not None:
            writer.close()

    def close(self) -> None:
        for run in list(self._writers):
            self.close_run(run)


class WandbTracker:
    """One W&B run per trial; created only when wandb is importable."""

    def __init__(self, root: Path, project: str, mode: str, group: str) -> None:
        import wandb

        self._wandb = wandb
        self.root, self.project, self.mode, self.group = root, project, mode, group
        self._runs: dict[str, Any] = {}
        self._rows: list[list[Any]] = []

    def epoch(self, job_id: str, params: Mapping[str, Any], metric_name: str, epoch: int, value: float) -> None:
        run = self._runs.get(job_id)
        if run is None:
            run = self._wandb.init(
                project=self.project,
                name=job_id,
                group=self.group,
                mode=self.mode,
                dir=str(self.root),
                config=redact_tree(dict(params)),  # a categorical choice may be a data URL with a password
                reinit="create_new",
            )
            self._runs[job_id] = run
        run.log({metric_name: value, "epoch": epoch}, step=epoch)

    def finish(self, job_id: str, params: Mapping[str, Any], metric: float | None, status: str) -> None:
        run = self._runs.pop(job_id, None)
        if run is not None:
            run.summary["final_metric"] = metric
            run.summary["status"] = status
            run.finish()
        self._rows.append([job_id, status, metric, *[redact_tree(params.get(k)) for k in sorted(params)]])

    def close(self, param_names: list[str]) -> None:
        if not self._rows:
            return
        run = self._wandb.init(
            project=self.project,
            name=f"{self.group}-summary",
            group=self.group,
            mode=self.mode,
            dir=str(self.root),
            reinit="create_new",
        )
        table = self._wandb.Table(columns=["job", "status", "metric", *sorted(param_names)], data=self._rows)
        run.log({"trials": table})
        run.finish()


class StudyTracker:
    """Fans trial events out to TensorBoard (always) and W&B (when available and enabled)."""

    def __init__(self, root: Path, metric: str, wandb_spec: Mapping[str, Any] | None = None) -> None:
        self.metric = metric
        self.tensorboard = TensorBoardTracker(root / "tensorboard")
        self.wandb: WandbTracker | None = None
        wandb_spec = wandb_spec or {}
        if wandb_spec.get("enable") and importlib.util.find_spec("wandb") is not None:
            mode = wandb_spec.get("mode") or "offline"
            self.wandb = WandbTracker(root / "wandb", wandb_spec.get("project") or "mal", mode, root.name)

    def epoch(self, job_id: str, params: Mapping[str, Any], epoch: int, value: float) -> None:
        self.tensorboard.scalar(job_id, self.metric, value, epoch)
        if self.wandb is not None:
            self.wandb.epoch(job_id, params, self.metric, epoch, value)

    def trial_done(
        self,
        job_id: str,
        params: Mapping[str, Any],
        metric: float | None,
        status: str,
        best_so_far: float | None,
        completed: int,
    ) -> None:
        """A trial ended; `completed` is its position in completion order (the study run's step)."""
        self.tensorboard.close_run(job_id)
        if self.wandb is not None:
            self.wandb.finish(job_id, params, metric, status)
        if metric is not None:
            self.tensorboard.scalar("study", f"trial/{self.metric}", metric, completed)
        if best_so_far is not None:
            self.tensorboard.scalar("study", f"best/{self.metric}", best_so_far, completed)

    def close(self, param_names: list[str]) -> None:
        self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.close(param_names)
