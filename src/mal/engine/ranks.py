"""The processes of one labeling run (`mal inference` / `mal evaluate`): which one this is, how they meet, how they
agree that every step went well, and how `num_gpus` > 1 starts them on one machine.

Three ways to get several processes, one code path once they run:
  - a launcher started them: torchrun (RANK, WORLD_SIZE, LOCAL_RANK) or srun with more than one task
    (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID); the launcher's layout wins, a spec asking for another is an error;
  - `<section>.num_gpus` x `<section>.num_nodes` > 1 on a machine with that many GPUs: this process only supervises
    `num_gpus` children, each `python -m mal <action>` with the rank variables set, the way Lightning's DDP spawns;
  - otherwise one process (and `num_gpus` is ignored, with a note, on a machine without GPUs).

The processes meet in a gloo process group even on GPUs: they exchange a few small Python objects, never
tensors, and gloo notices at once when a peer dies (NCCL would wait out its timeout), needs no GPU memory and no
NCCL network setup. Every step that may fail on one process ends in `World.together()`: all processes learn
whether all succeeded; rank 0 alone reports a failure (its own, or another rank's message), the other ranks stop
quietly, so a run prints one error line and exits non-zero.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from mal.engine.sigterm import sigterm_raises
from mal.errors import SpecError, UserError
from mal.spec.schema import ExperimentSpec, TestTimeConfig

# How long the processes wait for each other to start (a launcher's nodes may come up minutes apart; torchrun's
# own join timeout is 900 s) and, once they run, for the slowest one to finish its share of the boxes.
RENDEZVOUS_TIMEOUT = timedelta(seconds=900)
FINISH_TIMEOUT = timedelta(hours=24)
# After one spawned process fails, the others get this long to report before they are stopped.
SPAWN_GRACE_SECONDS = 10.0
DEFAULT_PORT = 29500


class RankStopped(KeyboardInterrupt):
    """SIGTERM reached a process of a many-process run (a launcher stopping it after another rank died, or the
    scheduler's time limit): stop like Ctrl-C, so status.json gets its FAILURE and the CLI exits 143."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}; run the same command again to continue from "
                         "the finished shards")
        self.signum = signum


class RankFailed(UserError):
    """Another process of the run failed or vanished; said in one line by rank 0. Not the user's input, so the
    exit code is 1 (or that of the failing rank's own error)."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Ranked:
    """This process is rank `rank` of `size`; they meet at `master_addr:master_port`."""

    rank: int
    size: int
    local_rank: int
    master_addr: str
    master_port: int
    launcher: str  # "torchrun", "srun" or "WORLD_SIZE" (any other launch): named in messages


@dataclass(frozen=True)
class Spawn:
    """Start `per_node` processes on this machine (ranks node_rank * per_node + i) and supervise them."""

    per_node: int
    node_rank: int
    num_nodes: int
    master_addr: str
    master_port: int


Launch = Ranked | Spawn | None  # None: one process


def plan_launch(options: TestTimeConfig, section: str, env: dict[str, str] | None = None,
                gpus: int | None = None) -> Launch:
    """How this process takes part, from the launcher's variables, `<section>.num_gpus/num_nodes` and the GPUs."""
    env = dict(os.environ) if env is None else env
    wanted = options.num_gpus * options.num_nodes
    launched = _launched(env)
    if launched is not None:
        rank, size, local_rank, launcher = launched
        if wanted > 1 and wanted != size:
            raise SpecError(
                f"{section}.num_gpus x {section}.num_nodes = {options.num_gpus} x {options.num_nodes} = {wanted} "
                f"processes, but the launch has {size} ({launcher}); set them to match, or leave both at 1 to "
                "follow the launcher."
            )
        if size == 1:
            return None
        addr, port = _master(env, launcher)
        return Ranked(rank=rank, size=size, local_rank=local_rank, master_addr=addr, master_port=port,
                      launcher=launcher)
    if wanted == 1:
        return None
    if gpus is None:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus == 0:
        asked = " and ".join(f"{section}.{key} = {value}" for key, value in
                             (("num_gpus", options.num_gpus), ("num_nodes", options.num_nodes)) if value > 1)
        print(f"mal {section}: {asked} ignored: this machine has no GPU, so one process labels every box "
              "(torchrun --nproc_per_node N starts N CPU processes).", flush=True)
        return None
    if options.num_gpus > gpus:
        raise SpecError(f"{section}.num_gpus = {options.num_gpus}: this machine has {gpus} GPU(s); set it to "
                        f"{gpus} or fewer.")
    if options.num_nodes == 1:
        local = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": env.get("MASTER_PORT") or str(_free_port())}
        addr, port = _master(local, f"{section}.num_gpus = {options.num_gpus}")
        return Spawn(per_node=options.num_gpus, node_rank=0, num_nodes=1, master_addr=addr, master_port=port)
    node_rank = _int_variable(env, "NODE_RANK", f"{section}.num_nodes = {options.num_nodes}")
    if not 0 <= node_rank < options.num_nodes:
        raise SpecError(f"NODE_RANK = {node_rank} is not below {section}.num_nodes = {options.num_nodes}; number "
                        f"the nodes 0 to {options.num_nodes - 1}.")
    addr, port = _master(env, f"{section}.num_nodes = {options.num_nodes}")
    return Spawn(per_node=options.num_gpus, node_rank=node_rank, num_nodes=options.num_nodes, master_addr=addr,
                 master_port=port)


def launched_rank(env: dict[str, str] | None = None) -> int:
    """This process's rank under torchrun or srun; 0 without a launcher."""
    launched = _launched(dict(os.environ) if env is None else env)
    return 0 if launched is None else launched[0]


def _launched(env: dict[str, str]) -> tuple[int, int, int, str] | None:
    """(rank, world size, local rank, launcher) when torchrun, srun or a hand-made launch set the rank variables."""
    if env.get("WORLD_SIZE"):
        launcher = "torchrun" if env.get("TORCHELASTIC_RUN_ID") else "WORLD_SIZE"
        size = _int_variable(env, "WORLD_SIZE", launcher)
        if size < 1:
            raise SpecError(f"WORLD_SIZE = {size}: a launch needs at least 1 process.")
        if size == 1 and not env.get("RANK"):
            return 0, 1, 0, launcher
        rank = _int_variable(env, "RANK", f"WORLD_SIZE = {size}")
        local_rank = _int_variable(env, "LOCAL_RANK", launcher) if env.get("LOCAL_RANK") else rank
        if not 0 <= rank < size:
            raise SpecError(f"RANK = {rank} is not below WORLD_SIZE = {size}; a launch numbers its processes 0 to "
                            f"{size - 1}.")
        return rank, size, local_rank, launcher
    # One Slurm task (a plain sbatch script) is one process; srun with several tasks sets the step id.
    tasks = env.get("SLURM_NTASKS") or "1"
    if tasks.isdigit() and int(tasks) > 1 and env.get("SLURM_JOB_ID") and env.get("SLURM_STEP_ID"):
        size = int(tasks)
        rank = _int_variable(env, "SLURM_PROCID", "srun")
        local_rank = _int_variable(env, "SLURM_LOCALID", "srun") if env.get("SLURM_LOCALID") else 0
        return rank, size, local_rank, "srun"
    return None


def _int_variable(env: dict[str, str], name: str, why: str) -> int:
    text = (env.get(name) or "").strip()
    if not text:
        raise SpecError(f"{name} is not set but {why} needs it: set {name} for every process (torchrun and srun "
                        "set it themselves).")
    try:
        return int(text)
    except ValueError:
        raise SpecError(f"{name} = {text!r} is not a whole number; set it to this process's index.") from None


def _master(env: dict[str, str], why: str) -> tuple[str, int]:
    """Where rank 0 listens: MASTER_ADDR / MASTER_PORT, or under srun the allocation's first node."""
    addr = (env.get("MASTER_ADDR") or "").strip()
    port_text = (env.get("MASTER_PORT") or "").strip()
    if why == "srun":
        addr = addr or first_host(env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "")
        job = env.get("SLURM_JOB_ID") or ""
        port_text = port_text or (str(15000 + int(job) % 10000) if job.isdigit() else "")  # Lightning's choice
    if not addr:
        raise SpecError(f"MASTER_ADDR is not set but {why} needs it: export MASTER_ADDR=<host of rank 0> (and "
                        f"MASTER_PORT, default {DEFAULT_PORT}) on every node.")
    try:
        port = int(port_text or DEFAULT_PORT)
    except ValueError:
        raise SpecError(f"MASTER_PORT = {port_text!r} is not a port number; set a free TCP port of "
                        f"{addr}.") from None
    return addr, port


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list: `gpu[007-009,012],cpu1` -> `gpu007`."""
    text = nodelist.strip()
    if not text:
        return ""
    head = text.split(",")[0] if "[" not in text.split(",")[0] else text[: text.index("]") + 1]
    if "[" not in head:
        return head
    prefix, ranges = head.split("[", 1)
    return prefix + ranges.rstrip("]").split(",")[0].split("-")[0]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class World:
    """The processes of this run; a world of one needs no process group and agrees with itself."""

    def __init__(self, rank: int = 0, size: int = 1, launcher: str = "") -> None:
        self.rank, self.size, self.launcher = rank, size, launcher

    @property
    def is_first(self) -> bool:
        return self.rank == 0

    def gather(self, obj: Any) -> list[Any]:
        """`obj` of every rank, in rank order, on every rank."""
        if self.size == 1:
            return [obj]
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.size
        with self._peers():
            dist.all_gather_object(gathered, obj)
        return gathered

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if self.size == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        with self._peers():
            dist.broadcast_object_list(box, src=0)
        return box[0]

    @contextlib.contextmanager
    def _peers(self) -> Iterator[None]:
        try:
            yield
        except RuntimeError as exc:  # torch.distributed's errors: a peer closed its connection, or timed out
            raise RankFailed(f"a process of this {self.size}-process run stopped before it finished ({_reason(exc)}); "
                             "run the same command again to continue from the finished shards.") from None

    @contextlib.contextmanager
    def together(self, hint: str = "") -> Iterator[None]:
        """Run the block on every rank, then agree: if it failed anywhere, rank 0 raises (its own error, or
        another rank's message plus `hint`) and the other ranks leave quietly (SystemExit 0: the run's exit code
        and its one error line are rank 0's)."""
        if self.size == 1:
            yield
            return
        failure: Exception | None = None
        try:
            yield
        except Exception as exc:
            failure = exc
        outcomes = self.gather(None if failure is None else _describe(failure))
        failed = [(rank, outcome) for rank, outcome in enumerate(outcomes) if outcome is not None]
        if not failed:
            return
        if not self.is_first:
            raise SystemExit(0)
        if failure is not None:
            raise failure
        rank, (exit_code, message) = failed[0]
        others = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise RankFailed(f"rank {rank} of {self.size}{others} failed: {message}{hint}", exit_code)


def _reason(exc: BaseException) -> str:
    """The first sentence of a torch.distributed error, without gloo's source location:
    `[.../pair.cc:561] Connection closed by peer [127.0.0.1]:15253. This is ...` -> `Connection closed by peer
    [127.0.0.1]:15253`."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if text.startswith("[") and "] " in text:
        text = text.split("] ", 1)[1]
    return text.split(". ", 1)[0].rstrip(".")


def _describe(exc: Exception) -> tuple[int, str]:
    """(exit code, one line) of an error, the way the CLI would print it."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, UserError):
        return exc.exit_code, text or type(exc).__name__
    return 1, f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextlib.contextmanager
def joined(launch: Ranked | None) -> Iterator[World]:
    """The world of this process: a process group for a Ranked launch (left again at the end), else one rank."""
    if launch is None:
        yield World()
        return
    import torch
    import torch.distributed as dist

    if torch.cuda.is_available():
        # Each process labels on its own GPU; modulo, since srun may show every task only its own one.
        torch.cuda.set_device(launch.local_rank % torch.cuda.device_count())
    store = _store(launch)
    dist.init_process_group("gloo", store=dist.PrefixStore("mal", store), rank=launch.rank,
                            world_size=launch.size, timeout=FINISH_TIMEOUT)
    try:
        with sigterm_raises(RankStopped):
            yield World(launch.rank, launch.size, launch.launcher)
    finally:
        dist.destroy_process_group()


def _store(launch: Ranked) -> Any:
    """The rendezvous store; torchrun's agent already serves one at MASTER_ADDR:MASTER_PORT."""
    import torch.distributed as dist

    agent = (os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
             and os.environ.get("MASTER_ADDR") == launch.master_addr
             and os.environ.get("MASTER_PORT") == str(launch.master_port))
    where = f"{launch.master_addr}:{launch.master_port}"
    try:
        return dist.TCPStore(launch.master_addr, launch.master_port, launch.size,
                             is_master=launch.rank == 0 and not agent, timeout=RENDEZVOUS_TIMEOUT,
                             wait_for_workers=True)
    except RuntimeError as exc:
        raise RankFailed(
            f"the {launch.size} processes of {launch.launcher} did not all meet at {where} within "
            f"{int(RENDEZVOUS_TIMEOUT.total_seconds())} s ({_reason(exc)}); check that WORLD_SIZE is the number of "
            "processes started and that MASTER_ADDR/MASTER_PORT name a free port of rank 0's host."
        ) from None


def spawn_local(spec: ExperimentSpec, action: str, launch: Spawn) -> int:
    """Run `mal <action>` as `launch.per_node` processes of this machine and wait for them; the first one's exit
    code is the run's. When one fails, the others get SPAWN_GRACE_SECONDS to report before they are stopped."""
    from mal.spec import dump_spec_yaml

    size = launch.per_node * launch.num_nodes
    with tempfile.TemporaryDirectory(prefix="mal-spawn-") as folder:
        spec_file = Path(folder) / "spec.yaml"
        spec_file.write_text(dump_spec_yaml(spec), encoding="utf-8")
        procs = []
        for local_rank in range(launch.per_node):
            env = dict(os.environ)
            env.update(MASTER_ADDR=launch.master_addr, MASTER_PORT=str(launch.master_port), WORLD_SIZE=str(size),
                       RANK=str(launch.node_rank * launch.per_node + local_rank), LOCAL_RANK=str(local_rank),
                       LOCAL_WORLD_SIZE=str(launch.per_node), NODE_RANK=str(launch.node_rank))
            for name in ("TORCHELASTIC_RUN_ID", "TORCHELASTIC_USE_AGENT_STORE", "SLURM_STEP_ID"):
                env.pop(name, None)  # these children are launched by mal, not by torchrun or srun
            procs.append(subprocess.Popen([sys.executable, "-m", "mal", action, "-e", str(spec_file)], env=env))
        try:
            codes = _wait_all(procs)
        except BaseException:
            _stop(procs)
            raise
    first = launch.node_rank * launch.per_node
    if codes[0] > 0:  # the first process reported its failure itself
        return codes[0]
    failed = [(index, code) for index, code in enumerate(codes) if code != 0]
    if not failed:
        return 0
    index, code = failed[0]
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
    raise RankFailed(f"rank {first + index} of {size} {how}; run the same command again to continue from the "
                     "finished shards.")


def _wait_all(procs: list[subprocess.Popen[bytes]]) -> list[int]:
    deadline: float | None = None
    while True:
        codes = [proc.poll() for proc in procs]
        if all(code is not None for code in codes):
            return [int(code) for code in codes if code is not None]
        if deadline is None and any(code not in (None, 0) for code in codes):
            deadline = time.monotonic() + SPAWN_GRACE_SECONDS
        if deadline is not None and time.monotonic() > deadline:
            _stop(procs)
        time.sleep(0.1)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
