"""Lower precision: bf16 autocast with PyTorch, int8 with ONNX Runtime, `auto`, and bf16-mixed training on the CPU.

The speed of each path is a benchmark (benchmarks/inference_speed.py --precisions); these tests check that each
path runs where it should, is refused in one sentence where it cannot, and labels like fp32 does.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from mal.cli import main as mal_main
from mal.engine.checkpoint_io import load_trained_model
from mal.engine.precision import (
    INT8_SOURCE_KEY,
    Bf16Predictor,
    cpu_has_native_bf16,
    cpu_has_native_int8,
    int8_onnx_path,
    quantized_onnx,
    resolve_test_precision,
)
from mal.engine.trainer import training_precision
from mal.errors import SpecError
from mal.masks import decode_rle
from support.engine import run_mal

CPU = torch.device("cpu")


def test_auto_picks_what_this_cpu_runs_natively():
    chosen, note = resolve_test_precision("auto", "torch", CPU, "inference.precision")
    assert chosen == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert note is not None and note.startswith("inference.precision auto: ")
    chosen, _ = resolve_test_precision("auto", "onnxruntime", CPU, "evaluate.precision")
    assert chosen == ("int8" if cpu_has_native_int8() else "fp32")


@pytest.mark.parametrize(
    ("requested", "backend", "fragment"),
    [("bf16", "onnxruntime", "runs with PyTorch"), ("int8", "torch", "inference.backend=onnxruntime")],
)
def test_a_precision_the_backend_cannot_run_is_refused(requested, backend, fragment):
    with pytest.raises(SpecError, match=fragment) as caught:
        resolve_test_precision(requested, backend, CPU, "inference.precision")
    assert f"inference.precision = {requested}" in str(caught.value)


def test_training_precision_names():
    assert training_precision("auto", True, on_gpu=False) == "32-true"
    assert training_precision("bf16-mixed", True, on_gpu=False) == "bf16-mixed"
    assert training_precision("fp32", True, on_gpu=False) == "32-true"
    with pytest.raises(SpecError, match="fp16-mixed needs a GPU"):
        training_precision("fp16-mixed", True, on_gpu=False)


def test_bf16_labels_like_fp32_on_a_trained_model(trained):
    model, _ = load_trained_model(trained / "train" / "mal_model_best.pth")
    net = model.teacher.eval()
    crops = torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        full = torch.sigmoid(net(crops))
        half = torch.sigmoid(Bf16Predictor(net, CPU)(crops))
    assert half.dtype == torch.float32  # the paste-back gets fp32 whatever ran inside
    assert float((half - full).abs().max()) < 0.05
    agree = ((half > 0.5) == (full > 0.5)).float().mean()
    assert float(agree) > 0.98


def _masks(labels_path: Path) -> dict[int, np.ndarray]:
    labels = json.loads(labels_path.read_text())
    sizes = {image["id"]: (image["height"], image["width"]) for image in labels["images"]}
    return {ann["id"]: decode_rle(ann["segmentation"]).astype(bool) for ann in labels["annotations"]
            if sizes[ann["image_id"]]}


def _mean_iou(a: dict[int, np.ndarray], b: dict[int, np.ndarray]) -> float:
    values = []
    for key, mask in a.items():
        union = np.logical_or(mask, b[key]).sum()
        values.append(1.0 if union == 0 else np.logical_and(mask, b[key]).sum() / union)
    return float(np.mean(values))


@pytest.fixture(scope="module")
def exported(trained, tiny_spec, tmp_path_factory) -> Path:
    onnx_file = tmp_path_factory.mktemp("export") / "model.onnx"
    result = run_mal("export", "-e", str(tiny_spec), f"results_dir={trained}", f"export.onnx_file={onnx_file}")
    assert result.returncode == 0, result.stderr[-2000:]
    return onnx_file


@pytest.mark.slow
def test_int8_onnx_labels_like_fp32(trained, tiny_spec, exported, tmp_path):
    runs = {}
    for precision in ("fp32", "int8"):
        out = tmp_path / f"labels_{precision}.json"
        result = run_mal("inference", "-e", str(tiny_spec), f"results_dir={trained}", f"export.onnx_file={exported}",
                         "inference.backend=onnxruntime", f"inference.precision={precision}",
                         f"inference.label_dump_path={out}")
        assert result.returncode == 0, result.stderr[-2000:]
        runs[precision] = _masks(out)
    assert set(runs["int8"]) == set(runs["fp32"])
    assert _mean_iou(runs["int8"], runs["fp32"]) > 0.95

    model = onnx.load(str(int8_onnx_path(exported)))
    props = {p.key: p.value for p in model.metadata_props}
    assert props["precision"] == "int8" and props["crop_size"] == "64"  # mal's metadata carried over
    assert any(node.op_type in ("MatMulInteger", "DynamicQuantizeLinear") for node in model.graph.node)
    assert int8_onnx_path(exported).stat().st_size < 0.5 * exported.stat().st_size


def test_the_int8_copy_is_made_once_per_export(exported, tmp_path):
    source = tmp_path / "model.onnx"
    shutil.copy(exported, source)
    quantised = quantized_onnx(source)
    first = quantised.stat().st_mtime_ns
    assert quantized_onnx(source) == quantised and quantised.stat().st_mtime_ns == first  # unchanged: reused
    model = onnx.load(str(source))
    onnx.helper.set_model_props(model, {"crop_size": "64", "exported": "again"})  # a new export of the same path
    onnx.save(model, str(source))
    quantized_onnx(source)
    fresh = {p.key: p.value for p in onnx.load(str(quantised), load_external_data=False).metadata_props}
    assert fresh[INT8_SOURCE_KEY] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert quantised.stat().st_mtime_ns != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.int8.onnx", "model.onnx"]  # no scratch left


@pytest.mark.slow
def test_evaluate_scores_each_precision_and_names_it(trained, tiny_spec, exported, tmp_path):
    """evaluate takes the same backend and precision keys: bf16 (PyTorch) and int8 (ONNX Runtime) score within
    a few points of fp32, and metrics.json says which precision ran."""
    scores = {}
    for backend, precision in (("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "int8")):
        results = tmp_path / f"{backend}_{precision}"
        result = run_mal("evaluate", "-e", str(tiny_spec), f"results_dir={results}",
                         f"evaluate.checkpoint={trained / 'train' / 'mal_model_best.pth'}",
                         f"export.onnx_file={exported}", f"evaluate.backend={backend}",
                         f"evaluate.precision={precision}")
        assert result.returncode == 0, result.stderr[-2000:]
        metrics = json.loads((results / "evaluate" / "metrics.json").read_text())
        assert metrics["precision"] == precision
        scores[precision] = metrics["mIoU"]
    assert abs(scores["bf16"] - scores["fp32"]) < 0.03
    assert abs(scores["int8"] - scores["fp32"]) < 0.03


def test_int8_with_pytorch_exits_2_naming_the_key(trained, tiny_spec, tmp_path, capsys):
    out = tmp_path / "labels.json"
    code = mal_main(["inference", "-e", str(tiny_spec), f"results_dir={trained}", "inference.precision=int8",
                     f"inference.label_dump_path={out}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "inference.precision = int8" in err and "onnxruntime" in err
    assert not out.exists()


@pytest.mark.slow
def test_bf16_mixed_training_with_checkpointing_and_channels_last_on_cpu(tiny_spec, tmp_path):
    """The GPU levers (activation checkpointing, channels-last, bf16 autocast) run on the CPU too, and the saved
    weights stay fp32."""
    results = tmp_path / "run"
    result = run_mal("train", "-e", str(tiny_spec), f"results_dir={results}", "train.num_epochs=1",
                     "train.precision=bf16-mixed", "model.grad_checkpointing=true", "train.channels_last=true")
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(results / "train" / "mal_model_epoch_001.pth", map_location="cpu", weights_only=True)
    weights = [v for k, v in state["state_dict"].items() if v.is_floating_point()]
    assert weights and all(v.dtype == torch.float32 for v in weights)
    status = [json.loads(line) for line in (results / "train" / "status.json").read_text().splitlines()]
    assert status[-1]["status"] == "SUCCESS"


def test_bf16_mixed_training_on_a_cpu_without_native_bf16_says_it_is_emulated(monkeypatch, capsys):
    import mal.engine.trainer as trainer
    from mal.spec import load_spec

    spec = load_spec(None, ["train.precision=bf16-mixed"])
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: False)
    assert trainer.resolve_devices(spec)["precision"] == "bf16-mixed"
    assert "no native bf16" in capsys.readouterr().out
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: True)
    trainer.resolve_devices(spec)
    assert capsys.readouterr().out == ""
