"""Private PostgreSQL and Slurm (+ munge) instances for the scale tests, in temporary folders on free ports.

Each `start_*` returns a handle whose `stop()` ends the daemons by their pid files and removes the folder, or
raises `ServiceUnavailable` with the reason (packages missing, not root, a daemon that would not start), which
the fixtures turn into a skip. Nothing is written outside the temporary folder; the machine's own /etc and any
system-wide daemons are left alone. `.ci/services.sh` installs the packages on CI.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


class ServiceUnavailable(RuntimeError):
    """The service cannot run on this machine; the message says why."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_user(user: str | None, args: list[str]) -> list[str]:
    return args if user is None else ["runuser", "-u", user, "--", *args]


def _run(args: list[str], timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False, env=env)


def _stop_pid_file(path: Path, timeout: float = 10.0) -> None:
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # our own child when a daemon did not fork
        time.sleep(0.1)
    if not _alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] != "Z"


# -- PostgreSQL ---------------------------------------------------------------------------------------------------


@dataclass
class Postgres:
    root: Path
    port: int
    bin_dir: Path
    user: str | None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        _run(
            _as_user(
                self.user,
                [str(self.bin_dir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop"],
            ),
            timeout=60,
        )
        _stop_pid_file(self.root / "data" / "postmaster.pid")
        shutil.rmtree(self.root, ignore_errors=True)


def _postgres_bin() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    for folder in reversed(candidates):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    raise ServiceUnavailable("PostgreSQL is not installed (apt-get install -y postgresql, or run .ci/services.sh)")


def start_postgres() -> Postgres:
    """A throw-away cluster on 127.0.0.1:<free port>, trust auth, fsync off (test data only)."""
    bin_dir = _postgres_bin()
    user = None
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            raise ServiceUnavailable("running as root and there is no 'postgres' user to run the server") from None
        user = "postgres"
    root = Path(tempfile.mkdtemp(prefix="mal-pg-", dir="/tmp"))
    root.chmod(0o755)
    if user is not None:
        shutil.chown(root, user)
    port = free_port()
    init = _run(
        _as_user(
            user,
            [
                str(bin_dir / "initdb"),
                "-D",
                str(root / "data"),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )
    )
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise ServiceUnavailable(f"initdb failed: {init.stderr.strip()[-300:]}")
    options = f"-p {port} -k {root} -h 127.0.0.1 -c fsync=off -c max_connections=60"
    started = _run(
        _as_user(
            user,
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(root / "data"),
                "-l",
                str(root / "server.log"),
                "-w",
                "-t",
                "60",
                "-o",
                options,
                "start",
            ],
        )
    )
    service = Postgres(root, port, bin_dir, user)
    if started.returncode != 0:
        log = (root / "server.log").read_text(errors="replace")[-400:] if (root / "server.log").exists() else ""
        service.stop()
        raise ServiceUnavailable(f"PostgreSQL did not start: {started.stderr.strip()[-200:]} {log}")
    return service


# -- Slurm + munge ----------------------------------------------------------------------------------------------

SLURM_CONF = """\
ClusterName=maltest
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.socket
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmUser=root
SchedulerType=sched/backfill
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
NodeName={host} CPUs={cpus} RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class SlurmCluster:
    root: Path

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def stop(self) -> None:
        _run(["scancel", "--full", "--partition=debug"], timeout=30, env=self.env())
        for name in ("slurmd.pid", "slurmctld.pid", "munge/munged.pid"):
            _stop_pid_file(self.root / name)
        shutil.rmtree(self.root, ignore_errors=True)


def start_slurm() -> SlurmCluster:
    """slurmctld + slurmd for this host and a private munged, all configured through SLURM_CONF."""
    missing = [
        tool
        for tool in ("slurmctld", "slurmd", "munged", "sbatch", "squeue", "scancel", "srun", "sinfo")
        if shutil.which(tool) is None
    ]
    if missing:
        raise ServiceUnavailable(
            f"Slurm/munge tools missing ({', '.join(missing)}): apt-get install -y slurm-wlm "
            f"munge, or run .ci/services.sh"
        )
    if os.geteuid() != 0:
        raise ServiceUnavailable("a private slurmd must run as root (it starts jobs as their users)")
    root = Path(tempfile.mkdtemp(prefix="mal-slurm-", dir="/tmp"))
    root.chmod(0o755)
    cluster = SlurmCluster(root)
    for folder in ("state", "spool", "log", "munge"):
        (root / folder).mkdir()
    munge = root / "munge"
    munge.chmod(0o711)  # munged insists that others cannot write here; clients need to reach the socket
    (munge / "munge.key").write_bytes(os.urandom(1024))
    (munge / "munge.key").chmod(0o400)
    started = _run(
        [
            "munged",
            "--force",
            f"--socket={munge / 'munge.socket'}",
            f"--key-file={munge / 'munge.key'}",
            f"--log-file={munge / 'munged.log'}",
            f"--pid-file={munge / 'munged.pid'}",
            f"--seed-file={munge / 'munged.seed'}",
        ]
    )
    if started.returncode != 0:
        cluster.stop()
        raise ServiceUnavailable(f"munged did not start: {started.stderr.strip()[-300:]}")
    host = socket.gethostname().split(".")[0]
    cluster.conf.write_text(
        SLURM_CONF.format(
            host=host, root=root, ctld_port=free_port(), slurmd_port=free_port(), cpus=os.cpu_count() or 1
        )
    )
    (root / "cgroup.conf").write_text("CgroupPlugin=cgroup/v1\n")  # 22.05 rejects "disabled"
    env = cluster.env()
    for daemon in ("slurmctld", "slurmd"):
        done = _run([daemon], env=env)
        if done.returncode != 0:
            cluster.stop()
            raise ServiceUnavailable(f"{daemon} did not start: {done.stderr.strip()[-300:]}")
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        state = _run(["sinfo", "--noheader", "--format=%T"], timeout=20, env=env).stdout.strip()
        if state == "idle":
            return cluster
        time.sleep(0.5)
    log = (
        (root / "log" / "slurmd.log").read_text(errors="replace")[-300:]
        if (root / "log" / "slurmd.log").exists()
        else ""
    )
    cluster.stop()
    raise ServiceUnavailable(f"the Slurm node never became idle (sinfo: {state!r}); slurmd log: {log}")
