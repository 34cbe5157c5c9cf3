"""Run each job as a Slurm batch job: `sbatch --parsable`, `squeue`, `scontrol`/`sacct`, `scancel`.

Resources come from the job's own spec: `train.num_nodes` -> `--nodes`, `train.num_gpus` -> one task per device
on every node (`--ntasks-per-node`) and, on GPU partitions, `--gres=gpu:N`. The batch script starts the job with
`srun`, so every task gets SLURM_PROCID / SLURM_LOCALID / SLURM_NTASKS / SLURM_NODELIST and Lightning's Slurm
environment wires up DDP across nodes by itself. Time limit, partition, account, CPUs and memory per task come
from the platform's settings.

Every Slurm command is an argument list (never a shell string); the batch script is written by us with each
argument quoted. The script records the job's exit code in `exit_code` beside the logs, so the outcome is known
even on clusters without Slurm accounting; `scontrol show job` and `sacct` are the fallbacks (TIMEOUT,
cancellation, node failure).
"""

from __future__ import annotations

import inspect
import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mal.automl.platforms.base import JobRecord, JobStatus, Platform, command_template
from mal.automl.platforms.contract import load_yaml
from mal.automl.platforms.local import DEFAULT_COMMAND, EXIT_FILE, STDERR_LOG, STDOUT_LOG, tail_text
from mal.dotted import get_dotted
from mal.errors import UserError

SLURM_ID_FILE = "slurm_job_id"
SCRIPT_FILE = "job.sbatch"
# squeue states in which the job still holds (or waits for) its allocation.
_ACTIVE = {
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "COMPLETING",
    "SUSPENDED",
    "REQUEUED",
    "RESIZING",
    "SIGNALING",
    "STAGE_OUT",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESV_DEL_HOLD",
    "STOPPED",
}
_COMMAND_TIMEOUT = 60


class SlurmError(UserError):
    """A Slurm command failed in a way the user must fix (no sbatch, rejected options)."""


def _run(args: Sequence[str], env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=_COMMAND_TIMEOUT, check=False, env=env)


def parse_exit_code(text: str) -> int | None:
    """Slurm's `ExitCode=code:signal` as a subprocess-style code (negative for a signal)."""
    try:
        code, sig = (int(part) for part in text.strip().split(":", 1))
    except ValueError:
        return None
    return -sig if sig else code


class SlurmPlatform(Platform):
    """Up to `max_concurrent` Slurm jobs in the queue at once.

    command: argument template as for `LocalPlatform` (`{action}`, `{spec}`).
    partition, account, time_limit (Slurm syntax: "04:00:00", "2-00:00:00"), cpus_per_task, mem ("32G"):
        passed to sbatch when set.
    use_gpus: request `--gres=gpu:N` (N = train.num_gpus); off on CPU-only clusters, where train.num_gpus
        still sets the number of tasks per node.
    extra_sbatch_args: further sbatch options, e.g. ["--qos=high", "--constraint=a100"].
    env: extra environment for the jobs (sbatch exports the submitting environment).
    """

    def __init__(
        self,
        max_concurrent: int = 4,
        command: Sequence[str] = DEFAULT_COMMAND,
        partition: str | None = None,
        account: str | None = None,
        time_limit: str | None = None,
        cpus_per_task: int | None = None,
        mem: str | None = None,
        use_gpus: bool = True,
        extra_sbatch_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        job_name_prefix: str = "mal",
    ) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.command = command_template(command)
        self.max_concurrent = max_concurrent
        self.partition, self.account, self.time_limit = partition, account, time_limit
        self.cpus_per_task, self.mem, self.use_gpus = cpus_per_task, mem, use_gpus
        self.extra_sbatch_args = [str(arg) for arg in extra_sbatch_args]
        self.env = dict(env or {})
        self.job_name_prefix = job_name_prefix
        self._records: dict[str, JobRecord] = {}
        self._slurm_ids: dict[str, str] = {}
        self._cancelled: set[str] = set()

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], **overrides: Any) -> SlurmPlatform:
        """From a study's `slurm:` mapping (keys as the constructor's); unknown keys are an error."""
        known = set(inspect.signature(cls).parameters)
        merged = {**dict(settings), **{k: v for k, v in overrides.items() if v is not None}}
        unknown = sorted(set(merged) - known)
        if unknown:
            raise UserError(f"Slurm settings {unknown} are unknown; use {sorted(known)}.")
        return cls(**merged)

    @property
    def capacity(self) -> int:
        return self.max_concurrent

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            partition=self.partition,
            account=self.account,
            time_limit=self.time_limit,
            use_gpus=self.use_gpus,
            command=self.command,
        )
        return info

    # -- submission ------------------------------------------------------------------------------------------------

    def sbatch_args(self, spec: Mapping[str, Any], job_id: str, log_dir: Path) -> list[str]:
        """sbatch options for a job of this spec (without the script)."""
        gpus = max(1, int(get_dotted(spec, "train.num_gpus", 1) or 1), len(get_dotted(spec, "train.gpu_ids") or []))
        nodes = max(1, int(get_dotted(spec, "train.num_nodes", 1) or 1))
        args = [
            "sbatch",
            "--parsable",
            f"--job-name={self.job_name_prefix}-{job_id}",
            f"--output={log_dir / STDOUT_LOG}",
            f"--error={log_dir / STDERR_LOG}",
            f"--chdir={log_dir}",
            "--open-mode=append",
            f"--nodes={nodes}",
            f"--ntasks-per-node={gpus}",
        ]
        if self.use_gpus:
            args.append(f"--gres=gpu:{gpus}")
        for flag, value in (
            ("--partition", self.partition),
            ("--account", self.account),
            ("--time", self.time_limit),
            ("--cpus-per-task", self.cpus_per_task),
            ("--mem", self.mem),
        ):
            if value is not None:
                args.append(f"{flag}={value}")
        return args + self.extra_sbatch_args

    def build_command(self, action: str, spec_path: str | Path, extra_args: Sequence[str] = ()) -> list[str]:
        return [part.replace("{action}", action).replace("{spec}", str(spec_path)) for part in self.command] + [
            str(arg) for arg in extra_args
        ]

    def batch_script(self, command: Sequence[str], log_dir: Path) -> str:
        exit_file = log_dir / EXIT_FILE
        return "\n".join(
            [
                "#!/bin/bash",
                "# Written by mal.automl: one task per device on every node; Lightning reads the Slurm environment.",
                f"srun --kill-on-bad-exit=1 {shlex.join(command)}",
                "code=$?",
                f'echo "$code" > {shlex.quote(str(exit_file))}.tmp && mv {shlex.quote(str(exit_file))}.tmp '
                f"{shlex.quote(str(exit_file))}",
                'exit "$code"',
                "",
            ]
        )

    def submit(
        self, job_id: str, action: str, spec_path: str | Path, results_dir: str | Path, extra_args: Sequence[str] = ()
    ) -> JobRecord:
        if shutil.which("sbatch") is None:
            raise SlurmError("The Slurm platform needs `sbatch` on PATH; run this on a Slurm login node.")
        log_dir = Path(spec_path).parent
        log_dir.mkdir(parents=True, exist_ok=True)
        for name in (EXIT_FILE, SLURM_ID_FILE):
            (log_dir / name).unlink(missing_ok=True)
        script = log_dir / SCRIPT_FILE
        script.write_text(self.batch_script(self.build_command(action, spec_path, extra_args), log_dir))
        env = dict(os.environ)
        env.update(self.env)
        env["MAL_AUTOML_JOB_ID"] = job_id
        done = _run([*self.sbatch_args(load_yaml(spec_path), job_id, log_dir), str(script)], env=env)
        if done.returncode != 0:
            message = (done.stderr or done.stdout).strip().splitlines()
            raise SlurmError(f"sbatch refused job {job_id}: {message[-1] if message else 'no message'}")
        slurm_id = done.stdout.strip().split(";", 1)[0]  # --parsable: "id" or "id;cluster"
        (log_dir / SLURM_ID_FILE).write_text(slurm_id + "\n")
        record = JobRecord.submitted(job_id, action, spec_path, results_dir, log_dir)
        self._records[job_id] = record
        self._slurm_ids[job_id] = slurm_id
        self._cancelled.discard(job_id)
        return record

    # -- watching ----------------------------------------------------------------------------------------------

    def slurm_id(self, job_id: str) -> str | None:
        """The Slurm job id of one of our jobs (read back from its log folder after a restart)."""
        if job_id not in self._slurm_ids and job_id in self._records:
            try:
                self._slurm_ids[job_id] = (Path(self._records[job_id].log_dir) / SLURM_ID_FILE).read_text().strip()
            except OSError:
                return None
        return self._slurm_ids.get(job_id)

    native_id = slurm_id

    def record(self, job_id: str) -> JobRecord:
        return self._records[job_id]

    def attach(self, record: JobRecord) -> bool:
        self._records[record.job_id] = record
        self._slurm_ids.pop(record.job_id, None)
        if self.slurm_id(record.job_id) is None:
            return False
        return self.status(record.job_id).state == "running"

    def attach_known_id(self, record: JobRecord, slurm_id: str) -> bool:
        """`attach` for a job whose Slurm id is already known (its folder may not be visible from this machine)."""
        self._records[record.job_id] = record
        self._slurm_ids[record.job_id] = str(slurm_id)
        return self.status(record.job_id).state == "running"

    def _exit_code(self, job_id: str) -> int | None:
        try:
            return int((Path(self._records[job_id].log_dir) / EXIT_FILE).read_text().strip())
        except (OSError, ValueError):
            return None

    def _queue_state(self, slurm_id: str) -> str | None:
        done = _run(["squeue", "--noheader", "--jobs", slurm_id, "--format=%T"])
        state = done.stdout.strip().split()
        return state[0] if done.returncode == 0 and state else None

    def _ended_state(self, slurm_id: str) -> tuple[str, int | None] | None:
        """(state, exit code) of an ended job from scontrol (recent jobs) or sacct (accounting); None: unknown."""
        done = _run(["scontrol", "--oneliner", "show", "job", slurm_id])
        if done.returncode == 0:
            fields = dict(part.split("=", 1) for part in done.stdout.split() if "=" in part)
            if "JobState" in fields:
                return fields["JobState"], parse_exit_code(fields.get("ExitCode", ""))
        if shutil.which("sacct"):
            done = _run(
                ["sacct", "--noheader", "--parsable2", "--allocations", "--jobs", slurm_id, "--format=State,ExitCode"]
            )
            lines = done.stdout.strip().splitlines() if done.returncode == 0 else []
            if lines and "|" in lines[0]:
                state, code = lines[0].split("|", 1)
                return state.split()[0], parse_exit_code(code)
        return None

    def status(self, job_id: str) -> JobStatus:
        slurm_id = self.slurm_id(job_id)
        if slurm_id is None:
            return JobStatus("lost")
        code = self._exit_code(job_id)
        if code is None and self._queue_state(slurm_id) in _ACTIVE:
            return JobStatus("running")
        code = self._exit_code(job_id) if code is None else code  # it may have ended between the two looks
        if job_id in self._cancelled:
            return JobStatus("cancelled", code)
        if code is not None:
            return JobStatus("exited", code)
        ended = self._ended_state(slurm_id)
        if ended is None:
            return JobStatus("lost")
        state, slurm_code = ended
        if state.startswith("CANCELLED"):
            return JobStatus("cancelled", slurm_code)
        # Killed by Slurm before the script could record a code (TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, PREEMPTED):
        # say so on the job's last stderr line, where failure classification reads the cause.
        self._note(job_id, f"slurm: job {slurm_id} ended {state} before it finished (see `sacct -j {slurm_id}`)")
        if state.startswith("OUT_OF_MEMORY"):
            self._note(job_id, "slurm: out of memory (raise mem in the Slurm settings)")
        return JobStatus("exited", slurm_code if slurm_code not in (None, 0) else -signal.SIGKILL)

    def _note(self, job_id: str, line: str) -> None:
        with open(Path(self._records[job_id].log_dir) / STDERR_LOG, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def logs(self, job_id: str, tail_lines: int = 50) -> str:
        log_dir = Path(self._records[job_id].log_dir)
        out = tail_text(log_dir / STDOUT_LOG, tail_lines)
        err = tail_text(log_dir / STDERR_LOG, tail_lines)
        return "\n".join(part for part in (out, err) if part)

    def cancel(self, job_id: str) -> None:
        slurm_id = self.slurm_id(job_id)
        if slurm_id is None:
            return
        self._cancelled.add(job_id)
        _run(["scancel", slurm_id])

    def forget(self, job_id: str) -> None:
        self._cancelled.discard(job_id)
