"""`mal export`: the inference network (test-time options folded in) as an ONNX file.

The graph takes `crops` (B x 3 x S x S float32 in [0, 1], S = the checkpoint's dataset.crop_size) and returns
`mask_logits` (B x 1 x S/4 x S/4). What a consumer needs to use the masks (crop size, thresholds, box margin)
travels in the model's metadata_props, so the file is self-describing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mal import __version__
from mal.engine.common import resolve_checkpoint
from mal.engine.run_lock import hold_run_lock
from mal.engine.status import StatusFile
from mal.errors import SpecError
from mal.spec.schema import ExperimentSpec

INPUT_NAME = "crops"
OUTPUT_NAME = "mask_logits"
BATCH_AXIS = "batch"
# protobuf cannot hold a message over 2 GiB: bigger weights go to one external data file beside the .onnx.
_EXTERNAL_DATA_BYTES = int(1.8 * 2**30)


# ------------------------------------------------------------------------------------------------ paths


def export_dir(spec: ExperimentSpec) -> Path:
    return Path(spec.results_dir) / "export"


def onnx_file_for(spec: ExperimentSpec) -> Path:
    """The ONNX file `mal export` writes and `inference.backend=onnxruntime` reads."""
    return Path(spec.export.onnx_file) if spec.export.onnx_file else export_dir(spec) / "mal_model.onnx"


def checkpoint_for_export(spec: ExperimentSpec) -> Path:
    """export.checkpoint, else the best checkpoint of results_dir/train, else the latest one."""
    return resolve_checkpoint(spec, spec.export.checkpoint, "export.checkpoint")


# ----------------------------------------------------------------------------------------------- export


def _weight_bytes(model: nn.Module) -> int:
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


@contextlib.contextmanager
def _quiet_tracer() -> Iterator[None]:
    # The legacy exporter warns that it is legacy, and timm's shape asserts warn that they become constants:
    # both are expected here (the crop size is fixed by design), and would only alarm users.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx.*")
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export.*")
        yield


def export_onnx(
    model: nn.Module,
    crop_size: int,
    path: str | os.PathLike[str],
    opset: int = 17,
    batch_size: int = -1,
    metadata: Mapping[str, Any] | None = None,
    external_data: bool | None = None,
) -> Path:
    """Export `model` (crops B x 3 x S x S -> logits) to `path` and return the path.

    batch_size -1 gives a dynamic batch axis, a positive value a fixed one. `metadata` values are stored as
    strings in metadata_props (non-strings as JSON). `external_data` puts the weights in `<path>.data` (None:
    only when they would not fit in one protobuf). Nothing appears at `path` unless the whole export and the
    ONNX checker succeed: the files are built in a temp folder beside it and renamed into place.
    """
    import onnx

    if batch_size == 0 or batch_size < -1:
        raise ValueError(f"batch_size must be -1 (dynamic) or positive, got {batch_size}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if external_data is None:
        external_data = _weight_bytes(model) > _EXTERNAL_DATA_BYTES
    data_name = target.name + ".data"

    was_training = model.training
    model.eval()
    example = torch.rand(batch_size if batch_size > 0 else 2, 3, crop_size, crop_size)
    dynamic_axes = None if batch_size > 0 else {INPUT_NAME: {0: BATCH_AXIS}, OUTPUT_NAME: {0: BATCH_AXIS}}
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        traced_file = staging / "traced.onnx"
        with _quiet_tracer(), torch.no_grad():
            torch.onnx.export(
                model,
                (example,),
                str(traced_file),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        proto = onnx.load(str(traced_file))
        del proto.metadata_props[:]
        for key, value in (metadata or {}).items():
            entry = proto.metadata_props.add()
            entry.key = str(key)
            entry.value = value if isinstance(value, str) else json.dumps(value)
        final_file = staging / target.name
        onnx.save_model(
            proto,
            str(final_file),
            save_as_external_data=external_data,
            all_tensors_to_one_file=True,
            location=data_name,
            size_threshold=0,
        )
        del proto
        onnx.checker.check_model(str(final_file), full_check=False)
        # The weights file first, the graph last: the .onnx appearing is the commit point.
        if external_data:
            os.replace(staging / data_name, target.parent / data_name)
        elif (target.parent / data_name).exists():
            (target.parent / data_name).unlink()  # a stale weights file from an earlier, larger export
        os.replace(final_file, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        model.train(was_training)
    return target


def export_metadata(config: Mapping[str, Any], spec: ExperimentSpec) -> dict[str, Any]:
    """What a consumer of the ONNX file needs: the network's shape from the checkpoint, labeling from the spec."""
    return {
        "producer": "mal",
        "mal_version": __version__,
        "crop_size": int(config["dataset"]["crop_size"]),
        "arch": str(config["model"]["arch"]),
        "output_stride": 4,
        "mask_thres": list(spec.train.mask_thres),
        "test_margin_rate": list(spec.train.test_margin_rate),
        "use_teacher_test": spec.inference.use_teacher_test,
        "use_mixed_model_test": spec.inference.use_mixed_model_test,
        "use_flip_test": spec.inference.use_flip_test,
        "input": f"{INPUT_NAME}: B x 3 x S x S float32 RGB in [0, 1]",
        "output": f"{OUTPUT_NAME}: B x 1 x S/4 x S/4 logits; sigmoid gives the mask probability",
    }


def run(spec: ExperimentSpec) -> int:
    """`mal export -e spec.yaml`: write the ONNX file and results_dir/export/status.json; print the path."""
    if spec.export.batch_size == 0:
        raise SpecError("export.batch_size=0 is not a batch size; use -1 (dynamic) or a positive number.")
    # Two exports into one results_dir would interleave their status.json events and race on the ONNX file.
    with hold_run_lock(export_dir(spec), "export"):
        return _export(spec)


def _export(spec: ExperimentSpec) -> int:
    from mal.engine.checkpoint_io import load_trained_model
    from mal.engine.module import inference_net

    status = StatusFile(export_dir(spec) / "status.json")
    status.write("STARTED", message="exporting to ONNX")
    try:
        checkpoint = checkpoint_for_export(spec)
        mean_teacher, config = load_trained_model(checkpoint)
        options = spec.inference.model_dump()
        net = inference_net(mean_teacher, options)
        metadata = {**export_metadata(config, spec), "checkpoint": str(checkpoint)}
        path = export_onnx(
            net,
            int(config["dataset"]["crop_size"]),
            onnx_file_for(spec),
            opset=spec.export.opset_version,
            batch_size=spec.export.batch_size,
            metadata=metadata,
        )
    except BaseException as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        status.write("FAILURE", message=reason)
        raise
    status.write("SUCCESS", message=f"wrote {path}", onnx_file=str(path), checkpoint=str(checkpoint))
    print(path)
    return 0
