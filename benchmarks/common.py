"""Shared pieces of the benchmark scripts: machine description, timing, FLOP counting, result files.

Every benchmark writes `benchmarks/results/<name>.json` (all numbers, the machine, the command line) and
`<name>.md` (a markdown table of the same numbers) atomically, so a killed run never leaves half a file.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mal.fileio import atomic_write_json, atomic_write_text

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_ROOT = Path(__file__).resolve().parent.parent


def command_line() -> str:
    """The command that produced this run, as someone at the repository root would type it."""
    script = Path(sys.argv[0]).resolve()
    try:
        shown = str(script.relative_to(REPO_ROOT))
    except ValueError:
        shown = str(script)
    return shlex.join([".venv/bin/python", shown, *sys.argv[1:]])


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def physical_cores() -> int:
    """Distinct (socket, core) pairs in /proc/cpuinfo; SMT siblings share a core's FMA units."""
    try:
        cores, socket = set(), "0"
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("physical id"):
                socket = line.split(":", 1)[1].strip()
            elif line.startswith("core id"):
                cores.add((socket, line.split(":", 1)[1].strip()))
        if cores:
            return len(cores)
    except OSError:
        pass
    return os.cpu_count() or 1


def machine_info() -> dict[str, Any]:
    import torch

    from mal.engine.precision import cpu_has_native_bf16, cpu_has_native_int8

    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "physical_cores": physical_cores(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        # What decides which low-precision path is fast here (mal.engine.precision reads the same flags).
        "cpu_native_bf16": cpu_has_native_bf16(),
        "cpu_native_int8": cpu_has_native_int8(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        # Other work on the machine slows every figure; the load average says how much there was.
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return info


def time_calls(action: Callable[[], Any], warmup: int, repeats: int, settle_s: float = 0.0) -> list[float]:
    """Wall-clock seconds of `repeats` calls of `action` after `warmup` untimed ones, `settle_s` apart."""
    for _ in range(warmup):
        action()
    times = []
    for _ in range(repeats):
        time.sleep(settle_s)
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return times


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def matmul_benchmark(size: int = 2048) -> tuple[Callable[[], Any], float]:
    """A size^3 fp32 matmul and its FLOPs: the machine's practical dense-compute ceiling."""
    import torch

    a = torch.randn(size, size)
    b = torch.randn(size, size)
    out = torch.empty(size, size)
    return (lambda: torch.mm(a, b, out=out)), 2.0 * size**3


def interleaved_times(
    action: Callable[[], Any], reference: Callable[[], Any], warmup: int, repeats: int, settle_s: float = 0.2
) -> tuple[list[float], list[float]]:
    """Seconds of `action` and of `reference`, alternated call by call.

    On a machine shared with other work the load changes within seconds; alternating makes each action time
    meet a reference time taken under nearly the same load, so their ratio is steadier than either alone.
    `settle_s` of sleep between calls lets the previous thread pool stop spinning: ONNX Runtime's and OpenMP's
    workers busy-wait after a call and would otherwise slow the next call of the other pool.
    """
    for _ in range(warmup):
        action()
    reference()
    action_times, reference_times = [], []
    for _ in range(repeats):
        reference_times.append(time_calls(reference, warmup=0, repeats=1, settle_s=settle_s)[0])
        action_times.append(time_calls(action, warmup=0, repeats=1, settle_s=settle_s)[0])
    return action_times, reference_times


def count_flops(module: Callable[..., Any], *inputs: Any) -> int:
    """FLOPs of one call, counted by torch's FlopCounterMode (a multiply-add counts as 2).

    FlopCounterMode knows the GPU attention kernels but not the CPU flash-attention op that
    `scaled_dot_product_attention` dispatches to here, so that one is mapped onto the same formula.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_flash_attention(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_flash_attention}
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        module(*inputs)
    return int(counter.get_total_flops())


def peak_rss_mib() -> float:
    """High-water mark of this process's resident memory (Linux reports ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def markdown_table(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row.get(column, "")) for column in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_results(
    name: str,
    payload: Mapping[str, Any],
    tables: Sequence[tuple[str, Sequence[str], Sequence[Mapping[str, Any]]]],
    notes: Sequence[str] = (),
) -> tuple[Path, Path]:
    """Write `<name>.json` (payload + machine + command) and `<name>.md` (titled tables and notes)."""
    command = command_line()
    machine = machine_info()
    document = {"benchmark": name, "command": command, "machine": machine, **payload}
    json_path = RESULTS_DIR / f"{name}.json"
    md_path = RESULTS_DIR / f"{name}.md"
    atomic_write_json(json_path, document)

    parts = [
        f"# {name}",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine['cpu_model']}, {machine['physical_cores']} physical cores, "
        f"{machine['logical_cpus']} logical CPUs (native bf16: {machine['cpu_native_bf16']}, native int8: "
        f"{machine['cpu_native_int8']}), GPU: {machine['gpu'] or 'none'}, torch {machine['torch']} "
        f"({machine['torch_threads']} threads, {machine['torch_cpu_capability']}), "
        f"onnxruntime {machine.get('onnxruntime', '-')}, {machine['time']}, "
        f"load average {machine['load_average_1_5_15']}",
        "",
    ]
    for title, columns, rows in tables:
        parts += [f"## {title}", "", markdown_table(columns, rows), ""]
    parts += [f"- {note}" for note in notes]
    atomic_write_text(md_path, "\n".join(parts).rstrip() + "\n")
    return json_path, md_path
