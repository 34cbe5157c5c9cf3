"""The search loop of a local study: ask the algorithm, launch trials on the platform, feed it their epochs (it
may stop them), tell it how they ended, until it has nothing left to recommend.

Every state change is saved before the next action (`StudyContext.save`), so a resume finds each trial either
not yet asked, running (re-attached or re-run), or finished. Values that failed because of the values themselves
are remembered by hash and not trained twice; three trials in a row without a metric stop the study.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from mal.automl.failures import Failure, check_streak, classify, params_hash
from mal.automl.hooks import hook_rec, metric_value, one_line
from mal.automl.platforms.base import JobRecord
from mal.automl.platforms.contract import best_checkpoint, dump_yaml, latest_checkpoint
from mal.automl.study_state import StudyContext, job_id_of
from mal.automl.trial_record import TrialRecord, best_of
from mal.automl.trials import log_tail, new_epochs, now, trial_spec
from mal.automl.workspace import write_private_text
from mal.dotted import get_dotted
from mal.jobfiles import final_event, read_status_events
from mal.redaction import redact_text


class Scheduler:
    """Runs the search of one study (`run`), and re-attaches or re-runs its trials after a restart (`restore`)."""

    def __init__(self, ctx: StudyContext) -> None:
        self.ctx = ctx

    # == the loop ==================================================================================================

    def run(self) -> None:
        from mal.automl.report import trials_table

        ctx = self.ctx
        live = None
        if ctx.live:
            from rich.live import Live

            live = Live(trials_table(self._history()), console=ctx.console, refresh_per_second=2)
            live.start()
        try:
            while True:
                for job_id in sorted(ctx.running):
                    self._poll(job_id)
                check_streak(ctx.state.no_metric_streak, ctx.ws.root)
                asked = self._fill_slots()
                if live is not None:
                    live.update(trials_table(self._history()))
                if not ctx.running:
                    if ctx.algorithm.is_finished():
                        return
                    if asked:
                        continue
                    raise RuntimeError(
                        f"the {ctx.algorithm.name} search neither finished nor recommended a "
                        f"training while none was running"
                    )
                ctx.platform.wait(sorted(ctx.running), ctx.poll_interval)
        finally:
            if live is not None:
                live.stop()

    def _history(self) -> list[dict]:
        return [r.entry() for r in sorted(self.ctx.state.trials.values(), key=lambda r: r.rec_id)]

    def _fill_slots(self) -> bool:
        ctx = self.ctx
        asked = False
        while len(ctx.running) < ctx.platform.capacity:
            rec = ctx.algorithm.ask()
            if rec is None:
                break
            asked = True
            job_id = job_id_of(rec.rec_id)
            record = TrialRecord(
                job_id=job_id,
                rec_id=rec.rec_id,
                params=dict(rec.params),
                budget=rec.budget,
                results_dir=str(ctx.trial_dir(job_id)),
                resume_from=rec.resume_from,
                info=dict(rec.info),
            )
            ctx.state.trials[job_id] = record
            if rec.resume_from is not None:
                parent = ctx.state.by_rec_id(rec.resume_from)
                record.resume_checkpoint = parent.latest_checkpoint if parent else None
                if not record.resume_checkpoint or not Path(record.resume_checkpoint).exists():
                    missing = f"the checkpoint of rec {rec.resume_from} to continue from is missing"
                    self._conclude(job_id, None, Failure("infrastructure", missing))
                    continue
            spec, record.adjustments = self._spec(record)
            record.spec_params = {p.name: get_dotted(spec, p.name) for p in ctx.space.params}
            record.params_hash = params_hash(record.spec_params)
            cached = ctx.state.invalid_cache.get(record.params_hash)
            if cached is not None:
                record.cached = True
                reason = f"same values as {cached['job_id']}, which failed: {cached['reason']}"
                self._conclude(job_id, None, Failure(cached["category"], reason, cached.get("exit_code")))
                continue
            ctx.save()  # the ask is on disk before anything runs
            self._launch(job_id)
        return asked

    def _spec(self, record: TrialRecord) -> tuple[dict, list[dict]]:
        ctx = self.ctx
        return trial_spec(
            ctx.base_spec,
            record.params,
            record.budget,
            Path(record.results_dir),
            record.resume_checkpoint,
            ctx.platform.devices_per_job,
            ctx.sample_count,
        )

    def _launch(self, job_id: str, relaunch: bool = False) -> None:
        ctx = self.ctx
        record = ctx.state.trials[job_id]
        trial_dir = Path(record.results_dir)
        if relaunch:
            # Outputs of the lost attempt would be read as this attempt's: start clean (logs are appended).
            shutil.rmtree(trial_dir / ctx.action, ignore_errors=True)
        # Written at every (re)launch from the record alone, so a runner killed before writing it loses nothing.
        spec, _ = self._spec(record)
        trial_dir.mkdir(parents=True, exist_ok=True)
        write_private_text(trial_dir / "spec.yaml", dump_yaml(spec))
        job = ctx.platform.submit(job_id, ctx.action, trial_dir / "spec.yaml", trial_dir)
        record.state = "running"
        record.job = job.to_dict()
        record.started = record.started or now()
        record.attempts += 1
        record.launched_at = time.time()
        ctx.running.add(job_id)
        ctx.save()

    # == watching trials ===========================================================================================

    def _poll(self, job_id: str) -> None:
        ctx = self.ctx
        record = ctx.state.trials[job_id]
        if self._feed_reports(record, may_stop=True):
            ctx.platform.cancel(job_id)
            self._conclude(job_id, best_of(record.epochs, ctx.settings.direction), None, stopped=True)
            return
        status = ctx.platform.status(job_id)
        if status.state == "running":
            return
        if status.state == "lost":
            self._launch(job_id, relaunch=True)
            return
        self._finish_trial(job_id, status.exit_code)

    def _feed_reports(self, record: TrialRecord, may_stop: bool) -> bool:
        """Pass new per-epoch metrics to the algorithm; True when it asks to stop the trial."""
        ctx = self.ctx
        fresh = new_epochs(record.results_dir, ctx.action, ctx.metric, record.reported_until)
        stop = False
        for epoch in sorted(fresh):
            record.add_epoch(epoch, fresh[epoch])
            ctx.tracker.epoch(record.job_id, record.params, epoch, fresh[epoch])
            if ctx.algorithm.report(record.rec_id, epoch, fresh[epoch]) and may_stop:
                stop = True
                break
        if fresh:
            ctx.save()
        return stop

    def _finish_trial(self, job_id: str, exit_code: int | None) -> None:
        ctx = self.ctx
        record = ctx.state.trials[job_id]
        self._feed_reports(record, may_stop=False)
        if exit_code != 0:
            events = read_status_events(record.results_dir, ctx.action)
            message = (final_event(events) or {}).get("message", "")
            self._conclude(job_id, None, classify(exit_code, log_tail(ctx.platform, job_id), message))
            return
        metric, failure = self._trial_metric(record)
        self._conclude(job_id, metric, failure)

    def _trial_metric(self, record: TrialRecord) -> tuple[float | None, Failure | None]:
        ctx = self.ctx
        hooks = ctx.hooks
        if hooks.eval_fn is not None:
            try:
                value = metric_value(hooks.eval_fn(hook_rec(record), record.job_id))
            except Exception as exc:
                return None, Failure("metric_missing", f"eval_fn raised {one_line(exc)}", 0)
            return value, None if value is not None else Failure("metric_missing", "eval_fn returned no metric", 0)
        if hooks.metric_extractor is not None:
            try:
                value = metric_value(hooks.metric_extractor(ctx.platform.logs(record.job_id, 200), ctx.metric))
            except Exception as exc:
                return None, Failure("metric_missing", f"metric_extractor raised {one_line(exc)}", 0)
            if value is not None:
                return value, None
        value = best_of(record.epochs, ctx.settings.direction)
        if value is None:
            return None, Failure(
                "metric_missing",
                f"the training succeeded but its status.json reported no {ctx.metric!r} (check automl_settings.metric)",
                0,
            )
        return value, None

    def _conclude(self, job_id: str, metric: float | None, failure: Failure | None, stopped: bool = False) -> None:
        """Record a trial's end, tell the algorithm, persist, and call the hooks."""
        ctx = self.ctx
        state = ctx.state
        record = state.trials[job_id]
        results_dir = Path(record.results_dir)
        events = read_status_events(results_dir, ctx.action)
        record.checkpoint = _path_or_none(best_checkpoint(results_dir, events))
        record.latest_checkpoint = _path_or_none(latest_checkpoint(results_dir))
        record.finished = now()
        if record.launched_at:
            record.seconds = round(time.time() - record.launched_at, 3)
        if failure is not None:
            metric = None
        record.metric = metric
        record.failure = failure.to_dict() if failure else None
        record.state = "failed" if failure else ("stopped" if stopped else "done")
        ctx.algorithm.tell(record.rec_id, metric, failed=failure is not None)
        ctx.running.discard(job_id)
        state.completion_order.append(job_id)
        if failure is not None and failure.config_dependent and not record.cached and record.params_hash:
            state.invalid_cache[record.params_hash] = {"job_id": job_id, **failure.to_dict()}
        if not record.cached:
            failed = failure.to_dict() if failure else None
            state.no_metric_streak = [] if metric is not None else [*state.no_metric_streak, failed]
        if record.job is not None:
            ctx.platform.forget(job_id)
        self._delete_unused_checkpoints()
        ctx.save()
        best = ctx.algorithm.best()
        ctx.tracker.trial_done(
            job_id,
            record.params,
            metric,
            record.state,
            None if best is None else best.metric,
            len(state.completion_order),
        )
        self._say(record)
        if ctx.hooks.on_result is not None:
            try:
                ctx.hooks.on_result(hook_rec(record), metric, record.state)
            except Exception as exc:
                ctx.console.print(f"[yellow]on_result raised {redact_text(one_line(exc))} (ignored)[/yellow]")

    def _say(self, record: TrialRecord) -> None:
        if self.ctx.live:
            return
        metric = record.metric
        text = f"{metric:.4f}" if metric is not None else (record.failure or {}).get("reason", "no metric")
        text = redact_text(text)  # a failure reason quotes the trial's stderr, which may name a data URL
        self.ctx.console.print(f"{record.job_id}: {record.state} ({record.budget} epochs) {self.ctx.metric} {text}")

    # == stopping, restarting, cleaning up ============================================================================

    def stop_running(self) -> None:
        """Cancel the running trials; the next resume re-runs them from the start."""
        ctx = self.ctx
        for job_id in sorted(ctx.running):
            ctx.platform.cancel(job_id)
            ctx.state.trials[job_id].state = "interrupted"
        ctx.running.clear()

    def restore(self) -> None:
        """After a restart: re-attach to trials still running, finalise those that ended unwatched, re-run lost ones."""
        ctx = self.ctx
        for record in sorted(ctx.state.trials.values(), key=lambda r: r.rec_id):
            if record.is_final:
                continue
            job_id = record.job_id
            if record.state == "interrupted" or not ctx.platform.attach(self._job_record(record)):
                if self._exit_code_known(record):
                    ctx.running.add(job_id)  # ended while no runner watched: finalised at the next poll
                else:
                    self._launch(job_id, relaunch=True)
            else:
                record.state = "running"
                record.job = ctx.platform.record(job_id).to_dict()
                ctx.running.add(job_id)

    def _job_record(self, record: TrialRecord) -> JobRecord:
        if record.job:
            return JobRecord.from_dict(record.job)
        trial_dir = self.ctx.trial_dir(record.job_id)
        return JobRecord(
            job_id=record.job_id,
            action=self.ctx.action,
            spec_path=str(trial_dir / "spec.yaml"),
            results_dir=str(trial_dir),
            log_dir=str(trial_dir),
        )

    def _exit_code_known(self, record: TrialRecord) -> bool:
        if record.state == "interrupted":
            return False
        return self.ctx.platform.status(record.job_id).state == "exited"

    def _delete_unused_checkpoints(self) -> None:
        """Free disk: drop checkpoints no future recommendation resumes from (never the best trial's)."""
        ctx = self.ctx
        if not ctx.settings.automl_delete_intermediate_ckpt:
            return
        keep = {job_id_of(rec_id) for rec_id in ctx.algorithm.checkpoints_in_use()}
        best = ctx.algorithm.best()
        if best is not None:
            keep.add(job_id_of(best.rec_id))
        for job_id in ctx.running:
            parent = ctx.state.trials[job_id].resume_from
            if parent is not None:
                keep.add(job_id_of(parent))
        for job_id, record in ctx.state.trials.items():
            if job_id in keep or not record.is_final or record.checkpoints_deleted:
                continue
            train_dir = Path(record.results_dir) / ctx.action
            for path in train_dir.glob("*.pth") if train_dir.is_dir() else ():
                path.unlink(missing_ok=True)
            record.checkpoints_deleted = True


def _path_or_none(path: Path | None) -> str | None:
    return None if path is None else str(path)
