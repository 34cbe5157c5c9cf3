"""`pretrain.method: dino`: self-distillation between augmented views, a student that learns and a teacher that
follows it, and a checkpoint `mal train` loads as it loads MAE's."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from mal.engine.pretrain import run
from mal.model.backbone import build_backbone
from mal.model.dino import SelfDistillation, teacher_momentum
from mal.spec.load import load_spec
from mal.weights import load_pretrained_backbone


def _tiny(prototypes: int = 32) -> SelfDistillation:
    torch.manual_seed(0)
    return SelfDistillation(build_backbone("vit-tiny/16", 32), prototypes=prototypes)


def test_the_teacher_momentum_rises_from_its_start_to_one():
    values = [teacher_momentum(step, 11) for step in range(11)]
    assert values[0] == pytest.approx(0.996) and values[-1] == pytest.approx(1.0)
    assert all(a < b for a, b in itertools.pairwise(values))


def test_only_the_student_learns_and_the_teacher_follows_it():
    model = _tiny().train()
    crops = torch.rand(4, 3, 32, 32)
    center_before = model.center.clone()
    (loss,) = model(crops)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert all(p.grad is not None for p in model.backbone.vit.blocks[0].parameters())
    assert model.head.prototypes.grad is not None
    assert all(p.grad is None for p in model.teacher.parameters())
    assert all(p.grad is None for p in model.teacher_head.parameters())
    assert not torch.equal(model.center, center_before)  # the running centre moved
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(1.0)
    teacher_before = [p.clone() for p in model.teacher.parameters()]
    model.update_teacher(1.0)  # momentum 1: the teacher stays
    assert all(torch.equal(a, b) for a, b in zip(teacher_before, model.teacher.parameters(), strict=True))
    model.update_teacher(0.0)  # momentum 0: the teacher becomes the student
    assert all(torch.equal(s, t) for s, t in zip(model.backbone.parameters(), model.teacher.parameters(), strict=True))
    model.eval()
    center = model.center.clone()
    model(crops)
    assert torch.equal(model.center, center)  # evaluation leaves the centre alone


def test_the_teacher_must_be_sharper_than_the_student():
    with pytest.raises(ValueError, match="must be positive and below the student's"):
        SelfDistillation(build_backbone("vit-tiny/16", 32), teacher_temperature=0.2)


def test_mal_pretrain_with_dino_writes_a_backbone_mal_train_loads(spec_file, tmp_path):
    spec = load_spec(spec_file, [f"results_dir={tmp_path}", "pretrain.method=dino", "pretrain.dino_prototypes=64",
                                 "pretrain.num_epochs=1"])  # fmt: skip
    assert run(spec) == 0
    events = [json.loads(line) for line in (tmp_path / "pretrain" / "status.json").read_text().splitlines()]
    assert [e["status"] for e in events] == ["STARTED", "RUNNING", "SUCCESS"]
    path = tmp_path / "pretrain" / "mae_backbone.pth"
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["method"] == "dino" and checkpoint["arch"] == "vit-tiny/16"
    fresh = build_backbone("vit-tiny/16", 32)
    assert not torch.equal(fresh.vit.blocks[0].attn.qkv.weight, checkpoint["model"]["blocks.0.attn.qkv.weight"])
    report = load_pretrained_backbone(fresh, path)
    assert not report.missing and not report.mismatched and not report.unexpected
    assert torch.equal(fresh.vit.blocks[0].attn.qkv.weight, checkpoint["model"]["blocks.0.attn.qkv.weight"])
