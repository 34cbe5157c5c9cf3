"""The arithmetic a network labels with: fp32, bf16 (PyTorch autocast) or int8 (ONNX Runtime), and `auto`.

Which one is fast depends on the silicon, so the choice reads it: bf16 is native on GPUs that support it and on
CPUs with AVX512-BF16 or AMX-BF16 (elsewhere PyTorch emulates it, slower than fp32); int8 matrix products are
native on CPUs with VNNI (AVX512-VNNI, AVX-VNNI or AMX-INT8). The measured speed and mIoU of each path are in
docs/BENCHMARKS.md (benchmarks/inference_speed.py --precisions).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from mal.errors import CheckpointError, SpecError

TEST_PRECISIONS = ("fp32", "bf16", "int8", "auto")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
INT8_CPU_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
INT8_SOURCE_KEY = "mal_int8_source_sha256"


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of this machine's CPU (empty where /proc/cpuinfo does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_has_native_bf16() -> bool:
    return any(flag in cpu_flags() for flag in BF16_CPU_FLAGS)


def cpu_has_native_int8() -> bool:
    return any(flag in cpu_flags() for flag in INT8_CPU_FLAGS)


def native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return device.type == "cpu" and cpu_has_native_bf16()


def resolve_test_precision(requested: str, backend: str, device: torch.device, key: str) -> tuple[str, str | None]:
    """(the precision to run, a line to print or None) for `requested` on this backend and device.

    key names the spec key in errors, e.g. `inference.precision`. Only combinations that run are returned: bf16
    is a PyTorch path, int8 an ONNX Runtime path on the CPU; a request that cannot run is a SpecError.
    """
    if requested not in TEST_PRECISIONS:
        raise SpecError(f"{key} = {requested!r}: choose one of {', '.join(TEST_PRECISIONS)}.")
    if requested == "auto":
        if backend == "onnxruntime":
            chosen = "int8" if device.type == "cpu" and cpu_has_native_int8() else "fp32"
            why = "this CPU has int8 dot-product instructions (VNNI)" if chosen == "int8" else "no native int8"
        else:
            chosen = "bf16" if native_bf16(device) else "fp32"
            where = "this GPU" if device.type == "cuda" else "this CPU"
            why = f"{where} has native bf16" if chosen == "bf16" else f"{where} has no native bf16"
        return chosen, f"{key} auto: {chosen} ({why})"
    if requested == "bf16" and backend == "onnxruntime":
        raise SpecError(f"{key} = bf16 runs with PyTorch; set the backend to torch, or use int8 or fp32 with "
                        "onnxruntime.")
    if requested == "int8" and backend != "onnxruntime":
        raise SpecError(f"{key} = int8 runs in ONNX Runtime on an exported model: run mal export, then set "
                        "inference.backend=onnxruntime (or use bf16 with PyTorch).")
    if requested == "bf16" and not native_bf16(device):
        return "bf16", (f"{key} = bf16: this {'GPU' if device.type == 'cuda' else 'CPU'} has no native bf16, so "
                        "it is emulated and likely slower than fp32")
    return requested, None


class Bf16Predictor:
    """A network called under bfloat16 autocast; its logits come back as float32 for the paste-back."""

    def __init__(self, net: Callable[[torch.Tensor], torch.Tensor], device: torch.device) -> None:
        self.net = net
        self.device_type = device.type

    def __call__(self, crops: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.net(crops).float()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    data = path.with_name(path.name + ".data")
    if data.is_file():  # weights stored beside a large export are part of the model
        with data.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def int8_onnx_path(source: Path) -> Path:
    return source.with_name(f"{source.stem}.int8.onnx")


def _matching_int8(target: Path, source_sha: str) -> bool:
    import onnx

    if not target.is_file():
        return False
    try:
        model = onnx.load(str(target), load_external_data=False)
    except Exception:
        return False
    return any(p.key == INT8_SOURCE_KEY and p.value == source_sha for p in model.metadata_props)


def quantized_onnx(source: Path) -> Path:
    """The int8 version of an exported model, `<name>.int8.onnx` beside it: made once per source model (its
    SHA-256 is stored in the quantised file, so a re-export is quantised again, never a stale copy used).

    Only the MatMul weights are quantised (per output channel, int8, activation scales computed per call):
    measured on vit-tiny/16, quantising every op made ONNX Runtime 4x slower, MatMul only 1.8x faster.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source_sha = _sha256(source)
    target = int8_onnx_path(source)
    if _matching_int8(target, source_sha):
        return target
    try:
        with tempfile.TemporaryDirectory(prefix=".int8-", dir=source.parent) as scratch:
            staged = Path(scratch) / target.name
            previous = logging.root.manager.disable
            logging.disable(logging.WARNING)  # its advice to pre-process is for static quantisation, not this
            try:
                quantize_dynamic(str(source), str(staged), weight_type=QuantType.QInt8, per_channel=True,
                                 op_types_to_quantize=["MatMul"])
            finally:
                logging.disable(previous)
            model = onnx.load(str(staged))
            kept = {p.key: p.value for p in onnx.load(str(source), load_external_data=False).metadata_props}
            kept[INT8_SOURCE_KEY] = source_sha
            kept["precision"] = "int8"
            onnx.helper.set_model_props(model, kept)
            onnx.save(model, str(staged))
            os.replace(staged, target)
    except OSError as exc:
        raise CheckpointError(f"cannot write the int8 model {target} beside {source} ({exc.strerror or exc}); "
                              "make that folder writable or copy the export somewhere writable.") from None
    return target
