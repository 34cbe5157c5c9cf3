"""Run jobs as subprocesses of this machine: one GPU each when there are GPUs, CPU slots otherwise.

Every job runs in its own session (so its own process group): `cancel` signals the whole tree, and a runner
killed with SIGKILL leaves its jobs running for the next runner to re-attach to (by pid + kernel start time,
so a recycled pid is never mistaken for the job). GPUs are found with `nvidia-smi -L` or
CUDA_VISIBLE_DEVICES, never by importing torch.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from mal.automl.platforms.base import JobRecord, JobStatus, Platform, command_template

DEFAULT_COMMAND = (sys.executable, "-m", "mal", "{action}", "-e", "{spec}")
EXIT_FILE = "exit_code"
# Written by the job wrapper (_exit_recorder), defined here: a package module that imports the wrapper makes
# `python -m mal.automl.platforms._exit_recorder` warn "found in sys.modules" in every job's stderr.
PID_FILE = "job.pid"
STDOUT_LOG = "stdout.log"
STDERR_LOG = "stderr.log"
WAKE_INTERVAL = 0.05


def detect_gpus(env: Mapping[str, str] | None = None) -> list[str]:
    """GPU ids this process may use: CUDA_VISIBLE_DEVICES when set, else what `nvidia-smi -L` lists."""
    env = os.environ if env is None else env
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [part.strip() for part in visible.split(",") if part.strip()]
        # CUDA stops at the first invalid id, so "-1" (or anything after it) hides every later GPU.
        valid = []
        for gpu in ids:
            if gpu.startswith("-"):
                break
            valid.append(gpu)
        return valid
    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi is None:
        return []
    try:
        listing = subprocess.run([nvidia_smi, "-L"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if listing.returncode != 0:
        return []
    return [
        str(index) for index, line in enumerate(line for line in listing.stdout.splitlines() if line.startswith("GPU "))
    ]


def process_start_ticks(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks since boot), or None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields we want follow the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def tail_text(path: Path, lines: int, max_bytes: int = 64_000) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-lines:])


class LocalPlatform(Platform):
    """Up to `max_concurrent` jobs at once on this machine.

    command: argument list template; `{action}` and `{spec}` are replaced, extra arguments are appended.
    gpus: GPU ids to hand out (default: detected); each job gets one and at most len(gpus) run at once.
    kill_grace: seconds between SIGTERM and SIGKILL on cancel.
    env: extra environment for every job.
    """

    def __init__(
        self,
        max_concurrent: int = 1,
        command: Sequence[str] = DEFAULT_COMMAND,
        gpus: Sequence[str] | None = None,
        kill_grace: float = 5.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.command = command_template(command)
        self.gpus = list(detect_gpus() if gpus is None else gpus)
        self.max_concurrent = max_concurrent
        self.kill_grace = kill_grace
        self.env = dict(env or {})
        self._records: dict[str, JobRecord] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._cancelled: set[str] = set()

    @property
    def capacity(self) -> int:
        return min(self.max_concurrent, len(self.gpus)) if self.gpus else self.max_concurrent

    @property
    def devices_per_job(self) -> int:
        return 1 if self.gpus else 0

    def describe(self) -> dict[str, object]:
        info = super().describe()
        info.update(gpus=self.gpus, command=self.command)
        return info

    # -- jobs ----------------------------------------------------------------------------------------------------

    def build_command(self, action: str, spec_path: str | Path, extra_args: Sequence[str] = ()) -> list[str]:
        return [part.replace("{action}", action).replace("{spec}", str(spec_path)) for part in self.command] + [
            str(arg) for arg in extra_args
        ]

    def submit(
        self, job_id: str, action: str, spec_path: str | Path, results_dir: str | Path, extra_args: Sequence[str] = ()
    ) -> JobRecord:
        if job_id in self._records and self.status(job_id).state == "running":
            raise RuntimeError(f"job {job_id} is already running")
        # The job runs inside its own folder: paths relative to ours would not reach it.
        spec_path, results_dir = Path(spec_path).resolve(), Path(results_dir).resolve()
        log_dir = spec_path.parent
        log_dir.mkdir(parents=True, exist_ok=True)
        exit_file = log_dir / EXIT_FILE
        exit_file.unlink(missing_ok=True)
        (log_dir / PID_FILE).unlink(missing_ok=True)
        devices = self._free_devices()
        env = dict(os.environ)
        env.update(self.env)
        env["MAL_AUTOML_JOB_ID"] = job_id
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
        elif "OMP_NUM_THREADS" not in env:
            # Concurrent CPU jobs would otherwise each start one thread per core and slow one another down.
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // self.capacity))
        wrapped = [
            sys.executable,
            "-m",
            "mal.automl.platforms._exit_recorder",
            str(exit_file),
            "--",
            *self.build_command(action, spec_path, extra_args),
        ]
        with open(log_dir / STDOUT_LOG, "ab") as out, open(log_dir / STDERR_LOG, "ab") as err:
            proc = subprocess.Popen(
                wrapped,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=str(log_dir),
                start_new_session=True,
            )
        record = JobRecord.submitted(
            job_id, action, spec_path, results_dir, log_dir,
            pid=proc.pid, start_ticks=process_start_ticks(proc.pid), devices=devices,
        )  # fmt: skip
        self._records[job_id] = record
        self._procs[job_id] = proc
        self._cancelled.discard(job_id)
        return record

    def _free_devices(self) -> list[str]:
        if not self.gpus:
            return []
        busy = {
            gpu
            for job_id, rec in self._records.items()
            if self.status(job_id).state == "running"
            for gpu in rec.devices
        }
        free = [gpu for gpu in self.gpus if gpu not in busy]
        if not free:
            raise RuntimeError("no free GPU: submit called with every GPU busy")
        return free[:1]

    def record(self, job_id: str) -> JobRecord:
        return self._records[job_id]

    def attach(self, record: JobRecord) -> bool:
        self._records[record.job_id] = record
        self._procs.pop(record.job_id, None)
        if record.pid is None or record.start_ticks is None:
            # The runner died before saving the pid: the wrapper wrote its own at start-up.
            try:
                pid, ticks = (Path(record.log_dir) / PID_FILE).read_text().split()
                record.pid, record.start_ticks = int(pid), int(ticks)
            except (OSError, ValueError):
                return False
        return process_start_ticks(record.pid) == record.start_ticks

    def _exit_code_from_file(self, record: JobRecord) -> int | None:
        try:
            return int((Path(record.log_dir) / EXIT_FILE).read_text().strip())
        except (OSError, ValueError):
            return None

    def status(self, job_id: str) -> JobStatus:
        record = self._records[job_id]
        proc = self._procs.get(job_id)
        if proc is not None:
            wrapper_code = proc.poll()
            if wrapper_code is None:
                return JobStatus("running")
        elif record.pid is not None and process_start_ticks(record.pid) == record.start_ticks:
            return JobStatus("running")
        if job_id in self._cancelled:
            return JobStatus("cancelled", self._exit_code_from_file(record))
        code = self._exit_code_from_file(record)
        if code is not None:
            return JobStatus("exited", code)
        if proc is not None:
            # The wrapper itself died (killed from outside): its own status is all there is.
            return JobStatus("exited", proc.returncode)
        return JobStatus("lost")

    def wait(self, job_ids: Sequence[str], timeout: float) -> None:
        # Checking our own children is nearly free, so a finished job is noticed within WAKE_INTERVAL instead
        # of a whole poll interval: the runner's overhead per trial stops depending on poll_interval.
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            if any(self.status(job_id).state != "running" for job_id in job_ids if job_id in self._records):
                return
            time.sleep(min(WAKE_INTERVAL, remaining))

    def logs(self, job_id: str, tail_lines: int = 50) -> str:
        log_dir = Path(self._records[job_id].log_dir)
        out = tail_text(log_dir / STDOUT_LOG, tail_lines)
        err = tail_text(log_dir / STDERR_LOG, tail_lines)
        return "\n".join(part for part in (out, err) if part)

    def stderr_tail(self, job_id: str, tail_lines: int = 50) -> str:
        return tail_text(Path(self._records[job_id].log_dir) / STDERR_LOG, tail_lines)

    def cancel(self, job_id: str) -> None:
        record = self._records.get(job_id)
        if record is None or record.pid is None:
            return
        self._cancelled.add(job_id)
        if self.status(job_id).state != "running":
            return
        pgid = record.pid  # start_new_session: the wrapper leads its own process group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.kill_grace
        while time.monotonic() < deadline and self._group_alive(pgid):
            self._reap(job_id)
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        self._reap(job_id, block=True)

    def _reap(self, job_id: str, block: bool = False) -> None:
        proc = self._procs.get(job_id)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5 if block else 0)

    @staticmethod
    def _group_alive(pgid: int) -> bool:
        # The loop reaps our own leader, so a zombie does not keep the group "alive" here.
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def forget(self, job_id: str) -> None:
        self._procs.pop(job_id, None)
        self._cancelled.discard(job_id)
