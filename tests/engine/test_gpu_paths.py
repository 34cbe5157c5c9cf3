"""The GPU levers and the GPU check script run on the CPU too, so none of their code is untested in CI: activation
checkpointing, channels-last, bf16 autocast in the training-speed worker, the GPU check's measurements, and
torch.compile in a real `mal train`."""

from __future__ import annotations

import json

import common
import gpu_check
import pytest
import torch
import train_speed

from support.engine import run_mal


def test_training_speed_worker_with_every_lever_on_cpu():
    row = train_speed.worker("vit-tiny/16", 32, batch_size=2, warmup=1, steps=1, threads=1, crf_num_iter=2,
                             precision="bf16-mixed", device="cpu", grad_checkpointing=True, channels_last=True)
    assert row["final_loss_finite"] and row["crops_per_s"] > 0
    assert row["precision"] == "bf16-mixed" and row["grad_checkpointing"] and row["channels_last"]
    assert row["model_tflop_per_s"] > 0 and row["peak_gpu_mib"] is None


def test_gpu_check_measures_and_writes_its_tables_on_cpu(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    train_results = tmp_path / "train.json"
    train_results.write_text(json.dumps({"results": [train_speed.worker(
        "vit-tiny/16", 32, batch_size=2, warmup=0, steps=1, threads=1, crf_num_iter=1, grad_checkpointing=True)]}))
    code = gpu_check.main(["--device", "cpu", "--config", "vit-tiny/16@32", "--batch-size", "2", "--repeats", "1",
                           "--matmul-size", "128", "--train-results", str(train_results), "--name", "gpu_check"])
    assert code == 0
    written = json.loads((tmp_path / "gpu_check.json").read_text())
    assert written["matmul_flop_per_s"]["bf16"] > 0
    assert [row["variant"] for row in written["inference"]] == ["fp32", "bf16 autocast",
                                                                "bf16 autocast + channels_last"]
    assert written["training"][0]["checkpointing"] == "on"
    assert "## Labeling network speed on CPU" in (tmp_path / "gpu_check.md").read_text()


@pytest.mark.slow
def test_compiled_training_on_cpu_saves_plain_parameter_names(tiny_spec, tmp_path):
    results = tmp_path / "run"
    result = run_mal("train", "-e", str(tiny_spec), f"results_dir={results}", "train.num_epochs=1",
                     "train.compile=true", "dataset.crop_size=32", "train.validation_interval=1")
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(results / "train" / "mal_model_epoch_001.pth", map_location="cpu", weights_only=True)
    names = list(state["state_dict"])
    assert names and not any("_orig_mod" in name for name in names)


@pytest.mark.slow
def test_gpu_check_real_data_run_trains_labels_and_scores(synthetic, tmp_path):
    """Part 3 of the GPU check on the synthetic set, with the tiny model instead of the GPU defaults."""
    tiny = ["model.arch=vit-tiny/16", "dataset.crop_size=32", "dataset.min_obj_size=64",
            "model.mask_head_hidden_channel=16", "model.mask_head_out_channel=16", "train.batch_size=8",
            "train.num_threads=1", "evaluate.batch_size=64", "inference.batch_size=64"]
    row = gpu_check.real_data_run(synthetic, 1, 6, tmp_path, overrides=tiny)
    assert row["images"] == 6 and row["epochs"] == 1
    assert 0.0 <= row["mIoU"] <= 1.0 and row["train s"] > 0 and row["evaluate s"] > 0
