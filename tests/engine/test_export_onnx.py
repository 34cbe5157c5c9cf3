"""`mal export` and the ONNX Runtime backend: the exported graph computes what the PyTorch network computes."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import onnx
import pytest
import torch
import yaml
from torch import nn

from mal import __version__
from mal.cli import main as mal_main
from mal.engine.checkpoint_io import load_trained_model
from mal.engine.export import export_onnx, run
from mal.engine.module import MALModule, inference_net
from mal.engine.onnx_backend import OnnxMaskNet
from mal.errors import CheckpointError
from mal.jobfiles import read_status_events
from mal.spec import load_spec

CROP = 32
TINY = [
    "model.arch=vit-tiny/16",
    f"dataset.crop_size={CROP}",
    "model.mask_head_hidden_channel=32",
    "model.mask_head_out_channel=32",
]
ATOL = 1e-4


def write_checkpoint(path: Path, seed: int) -> Path:
    """A `mal train`-shaped checkpoint whose teacher differs from its student (so mixed/teacher tests bite)."""
    torch.manual_seed(seed)
    config = load_spec(None, TINY).model_dump(mode="json")
    module = MALModule(config)
    with torch.no_grad():
        for param in module.mean_teacher.student.parameters():
            param.add_(0.05 * torch.randn_like(param))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": {"config": config, "world_size": 1}}, path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "mal_model_epoch_001.pth", seed=0)


@functools.cache
def trained_model(checkpoint: Path, mtime_ns: int) -> nn.Module:
    return load_trained_model(checkpoint)[0]


def torch_logits(checkpoint: Path, options: dict[str, Any], crops: torch.Tensor) -> torch.Tensor:
    mean_teacher = trained_model(checkpoint, checkpoint.stat().st_mtime_ns)
    with torch.no_grad():
        return inference_net(mean_teacher, options).eval()(crops)


def crops_of(batch: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, CROP, CROP, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "options",
    [
        {"use_teacher_test": True, "use_mixed_model_test": False, "use_flip_test": False},
        {"use_teacher_test": False, "use_mixed_model_test": False, "use_flip_test": True},
        {"use_teacher_test": True, "use_mixed_model_test": True, "use_flip_test": True},
    ],
    ids=["teacher", "student-flip", "mixed-flip"],
)
def test_export_matches_pytorch_at_two_batch_sizes(
    tmp_path: Path, checkpoint: Path, options: dict[str, bool], capsys: pytest.CaptureFixture[str]
) -> None:
    overrides = [f"results_dir={tmp_path}", f"export.checkpoint={checkpoint}"]
    overrides += [f"inference.{key}={str(value).lower()}" for key, value in options.items()]
    assert run(load_spec(None, overrides)) == 0

    onnx_file = tmp_path / "export" / "mal_model.onnx"
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(onnx_file)
    net = OnnxMaskNet(onnx_file, crop_size=CROP)
    assert net.batch_size is None  # dynamic batch axis
    assert net.device == torch.device("cpu") and "CPUExecutionProvider" in net.providers
    for batch in (1, 5):
        crops = crops_of(batch)
        expected = torch_logits(checkpoint, options, crops)
        got = net(crops)
        assert got.shape == (batch, 1, CROP // 4, CROP // 4)
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)

    events = read_status_events(tmp_path, "export")
    assert [e["status"] for e in events] == ["STARTED", "SUCCESS"]
    assert events[-1]["onnx_file"] == str(onnx_file)


def test_options_change_the_exported_graph(tmp_path: Path, checkpoint: Path) -> None:
    """Guards the test above: teacher and student really differ, so matching PyTorch proves the options travel."""
    crops = crops_of(3)
    teacher = torch_logits(checkpoint, {"use_teacher_test": True}, crops)
    student = torch_logits(checkpoint, {"use_teacher_test": False}, crops)
    assert (teacher - student).abs().max() > 10 * ATOL


def test_metadata_describes_the_model(tmp_path: Path, checkpoint: Path) -> None:
    spec = load_spec(
        None,
        [
            f"results_dir={tmp_path}",
            f"export.checkpoint={checkpoint}",
            "train.mask_thres=[0.2,0.3,0.4]",
            f"export.onnx_file={tmp_path / 'out' / 'm.onnx'}",
        ],
    )
    run(spec)
    proto = onnx.load(str(tmp_path / "out" / "m.onnx"))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["crop_size"] == str(CROP)
    assert meta["arch"] == "vit-tiny/16"
    assert json.loads(meta["mask_thres"]) == [0.2, 0.3, 0.4]
    assert json.loads(meta["test_margin_rate"]) == [0.6, 0.6]
    assert meta["mal_version"] == __version__
    assert [i.name for i in proto.graph.input] == ["crops"]
    assert [o.name for o in proto.graph.output] == ["mask_logits"]

    net = OnnxMaskNet(tmp_path / "out" / "m.onnx")
    assert net.crop_size == CROP
    assert net.metadata["mask_thres"] == [0.2, 0.3, 0.4]
    assert net.metadata["use_teacher_test"] is True


def test_default_checkpoint_is_best_then_latest(tmp_path: Path) -> None:
    train_dir = tmp_path / "train"
    latest = write_checkpoint(train_dir / "mal_model_latest.pth", seed=1)
    spec = load_spec(None, [f"results_dir={tmp_path}"])
    run(spec)
    net = OnnxMaskNet(tmp_path / "export" / "mal_model.onnx")
    crops = crops_of(2)
    torch.testing.assert_close(net(crops), torch_logits(latest, {}, crops), atol=ATOL, rtol=0)

    best = write_checkpoint(train_dir / "mal_model_best.pth", seed=2)
    run(spec)
    events = read_status_events(tmp_path, "export")
    assert events[-1]["status"] == "SUCCESS" and events[-1]["checkpoint"] == str(best)
    net = OnnxMaskNet(tmp_path / "export" / "mal_model.onnx")
    torch.testing.assert_close(net(crops), torch_logits(best, {}, crops), atol=ATOL, rtol=0)


def test_fixed_batch_export_serves_any_batch(tmp_path: Path, checkpoint: Path) -> None:
    run(load_spec(None, [f"results_dir={tmp_path}", f"export.checkpoint={checkpoint}", "export.batch_size=3"]))
    onnx_file = tmp_path / "export" / "mal_model.onnx"
    dims = onnx.load(str(onnx_file)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [3, 3, CROP, CROP]
    net = OnnxMaskNet(onnx_file)
    assert net.batch_size == 3
    crops = crops_of(7)  # two full batches and a padded one
    torch.testing.assert_close(net(crops), torch_logits(checkpoint, {}, crops), atol=ATOL, rtol=0)
    assert net(crops[:0]).shape == (0, 1, CROP // 4, CROP // 4)


def test_external_weights_file_loads(tmp_path: Path, checkpoint: Path) -> None:
    mean_teacher, _ = load_trained_model(checkpoint)
    net = inference_net(mean_teacher, {})
    path = export_onnx(net, CROP, tmp_path / "big.onnx", external_data=True, metadata={"crop_size": CROP})
    assert (tmp_path / "big.onnx.data").stat().st_size > 1_000_000  # the weights live outside the graph
    assert (tmp_path / "big.onnx").stat().st_size < 200_000
    crops = crops_of(2)
    torch.testing.assert_close(OnnxMaskNet(path)(crops), torch_logits(checkpoint, {}, crops), atol=ATOL, rtol=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]


def test_missing_checkpoint_exits_2_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump({"results_dir": str(tmp_path / "results"), "model": {"arch": "vit-tiny/16"}}))
    assert mal_main(["export", "-e", str(spec_file)]) == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "no checkpoint found" in last_line and "export.checkpoint" in last_line
    export_dir = tmp_path / "results" / "export"
    assert sorted(p.name for p in export_dir.iterdir()) == ["status.json"]
    assert [e["status"] for e in read_status_events(export_dir.parent, "export")] == ["STARTED", "FAILURE"]

    missing = tmp_path / "nope.pth"
    assert mal_main(["export", "-e", str(spec_file), f"export.checkpoint={missing}"]) == 2
    assert str(missing) in capsys.readouterr().err


class _FailsWhenTraced(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 4, stride=4)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("tracing failed on purpose")


def test_failed_export_leaves_previous_file_and_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous export")
    with pytest.raises(RuntimeError, match="on purpose"):
        export_onnx(_FailsWhenTraced(), CROP, target)
    assert target.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_backend_refuses_unusable_files(tmp_path: Path, checkpoint: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        OnnxMaskNet(tmp_path / "absent.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf at all")
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        OnnxMaskNet(garbage)

    onnx_file = tmp_path / "export" / "mal_model.onnx"
    run(load_spec(None, [f"results_dir={tmp_path}", f"export.checkpoint={checkpoint}"]))
    with pytest.raises(CheckpointError, match=f"crop size {CROP}.*dataset.crop_size is 64"):
        OnnxMaskNet(onnx_file, crop_size=64)
    with pytest.raises(ValueError, match="crops must be"):
        OnnxMaskNet(onnx_file)(torch.rand(2, 3, 64, 64))
