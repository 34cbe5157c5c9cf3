"""Run an exported MAL network with ONNX Runtime, as a drop-in for the PyTorch `InferenceNet`.

`inference.backend=onnxruntime` swaps this in: same call (crops B x 3 x S x S in [0, 1] -> logits
B x 1 x S/4 x S/4, torch tensors in and out), so the labeling loop does not care which runtime computes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mal.engine.export import INPUT_NAME, OUTPUT_NAME
from mal.errors import CheckpointError

GRAPH_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


def _parse_metadata(raw: dict[str, str]) -> dict[str, Any]:
    """metadata_props hold strings; the exporter wrote non-strings as JSON, so read those back."""
    parsed: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            parsed[key] = json.loads(value)
        except (json.JSONDecodeError, TypeError):
            parsed[key] = value
    return parsed


def _providers(requested: list[str] | None) -> list[str]:
    import onnxruntime as ort

    if requested:
        return requested
    available = ort.get_available_providers()
    return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []) + ["CPUExecutionProvider"]


class OnnxMaskNet:
    """An ONNX file written by `mal export`, run by ONNX Runtime on the CPU (or CUDA when available).

    num_threads: intra-op threads (0: ONNX Runtime's default, one per physical core).
    crop_size: the crop size the caller will feed; a mismatch with the file is a CheckpointError at load time.
    graph_optimization_level: one of GRAPH_OPTIMIZATION_LEVELS (ONNX Runtime's graph rewrites; "all" fuses most).
    allow_spinning: let ONNX Runtime's workers busy-wait between calls (lowest latency when it runs alone; turn
    off when other CPU work, such as paste-back, runs between calls and the spinning threads would slow it).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        num_threads: int = 0,
        crop_size: int | None = None,
        providers: list[str] | None = None,
        graph_optimization_level: str = "all",
        allow_spinning: bool = True,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(
                f"ONNX file {self.path} does not exist; run mal export first or set export.onnx_file to its path."
            )
        if graph_optimization_level not in GRAPH_OPTIMIZATION_LEVELS:
            raise ValueError(f"graph_optimization_level must be one of {GRAPH_OPTIMIZATION_LEVELS}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(int(num_threads), 0)
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[graph_optimization_level]
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=_providers(providers))
        except Exception as exc:
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise CheckpointError(
                f"ONNX file {self.path} cannot be loaded by ONNX Runtime ({reason}); export it again with mal export."
            ) from None

        inputs = self.session.get_inputs()
        outputs = self.session.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME] or OUTPUT_NAME not in [o.name for o in outputs]:
            raise CheckpointError(
                f"ONNX file {self.path} is not a mal export (expected input '{INPUT_NAME}' and output "
                f"'{OUTPUT_NAME}'); export it with mal export."
            )
        shape = inputs[0].shape  # [batch, 3, S, S]; batch is a name when dynamic
        self.metadata = _parse_metadata(dict(self.session.get_modelmeta().custom_metadata_map))
        self.crop_size = int(self.metadata.get("crop_size", shape[-1]))
        self.batch_size: int | None = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        if crop_size is not None and int(crop_size) != self.crop_size:
            raise CheckpointError(
                f"ONNX file {self.path} was exported for crop size {self.crop_size}, but dataset.crop_size is "
                f"{crop_size}; set dataset.crop_size={self.crop_size} or export again from a matching checkpoint."
            )

    @property
    def device(self) -> torch.device:
        """Where callers should keep the crops: ONNX Runtime is fed from host memory whatever its provider."""
        return torch.device("cpu")

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def _run(self, crops: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: crops})[0]

    def __call__(self, crops: torch.Tensor) -> torch.Tensor:
        """Crops B x 3 x S x S in [0, 1] -> mask logits B x 1 x S/4 x S/4, on the crops' device."""
        size = self.crop_size
        if crops.dim() != 4 or tuple(crops.shape[1:]) != (3, size, size):
            raise ValueError(f"crops must be B x 3 x {size} x {size}, got {tuple(crops.shape)}")
        array = np.ascontiguousarray(crops.detach().to("cpu", torch.float32).numpy())
        count = array.shape[0]
        if count == 0:
            return torch.zeros((0, 1, size // 4, size // 4), device=crops.device)
        if self.batch_size is None or count == self.batch_size:
            logits = self._run(array)
        else:
            # A fixed-batch export: feed full batches, padding the last one, and drop the padded rows.
            chunks = []
            for start in range(0, count, self.batch_size):
                chunk = array[start : start + self.batch_size]
                rows = chunk.shape[0]
                if rows < self.batch_size:
                    pad = np.zeros((self.batch_size - rows, *chunk.shape[1:]), dtype=chunk.dtype)
                    chunk = np.concatenate([chunk, pad])
                chunks.append(self._run(chunk)[:rows])
            logits = np.concatenate(chunks)
        return torch.from_numpy(logits).to(crops.device)
