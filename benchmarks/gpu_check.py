"""GPU check, part 2 (benchmarks/gpu_check.sh runs part 1, the training speed): labeling speed per precision and
memory layout, the bf16 and TF32 matmul rates measured in the same run, the training figures of part 1 against
those rates, and a short train + label + evaluate on real data with the GPU defaults.

Writes benchmarks/results/gpu_check.{json,md}. Usage (the script runs on CPU too, for the test suite):
    .venv/bin/python benchmarks/gpu_check.py [--device cuda] [--config vit-mae-base/16@512] [--data DIR]
        [--train-results benchmarks/results/gpu_train_speed.json] [--epochs 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from common import REPO_ROOT, count_flops, median, write_results

from mal.engine.module import build_student, inference_net
from mal.engine.precision import Bf16Predictor
from mal.model.mal import MeanTeacher
from mal.spec import load_spec
from quality import prepare_files, run_mal


def parse_config(text: str) -> tuple[str, int]:
    arch, _, size = text.partition("@")
    if not size:
        raise argparse.ArgumentTypeError(f"config {text!r} must look like ARCH@CROP, e.g. vit-mae-base/16@512")
    return arch, int(size)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def seconds_per_call(call: Any, device: torch.device, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        call()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        sync(device)
        times.append(time.perf_counter() - start)
    return median(times)


def matmul_rate(device: torch.device, dtype: torch.dtype, size: int, tf32: bool = False) -> float:
    """FLOP/s of a size^3 matmul in `dtype` (with TF32 tensor cores when asked)."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        seconds = seconds_per_call(lambda: a @ b, device, warmup=3, repeats=10)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    return 2.0 * size**3 / seconds


def inference_rows(arch: str, crop: int, batch: int, device: torch.device, repeats: int,
                   compile_too: bool) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    config = load_spec(None, [f"model.arch={arch}", f"dataset.crop_size={crop}"]).model_dump(mode="json")
    net = inference_net(MeanTeacher(build_student(config)), config["inference"]).eval().to(device)
    crops = torch.rand(batch, 3, crop, crop, device=device)
    flops = count_flops(net, crops[:1]) * batch
    variants: list[tuple[str, Any]] = [("fp32", net), ("bf16 autocast", Bf16Predictor(net, device))]
    if device.type == "cuda":
        variants.insert(1, ("fp32 + TF32", net))
    rows = []
    for name, predictor in variants:
        torch.backends.cuda.matmul.allow_tf32 = "TF32" in name
        with torch.inference_mode():
            seconds = seconds_per_call(lambda p=predictor: p(crops), device, warmup=2, repeats=repeats)
        rows.append({"model": f"{arch} @{crop}", "variant": name, "batch": batch, "crops/s": batch / seconds,
                     "model TFLOP/s": flops / seconds / 1e12})
    net_cl = net.to(memory_format=torch.channels_last)
    crops_cl = crops.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        seconds = seconds_per_call(lambda: Bf16Predictor(net_cl, device)(crops_cl), device, 2, repeats)
    rows.append({"model": f"{arch} @{crop}", "variant": "bf16 autocast + channels_last", "batch": batch,
                 "crops/s": batch / seconds, "model TFLOP/s": flops / seconds / 1e12})
    if compile_too:
        compiled = torch.compile(net)
        started = time.perf_counter()
        with torch.inference_mode():
            Bf16Predictor(compiled, device)(crops)
            compile_s = time.perf_counter() - started
            seconds = seconds_per_call(lambda: Bf16Predictor(compiled, device)(crops), device, 2, repeats)
        variant = f"bf16 autocast + torch.compile ({compile_s:.0f} s to compile)"
        rows.append({"model": f"{arch} @{crop}", "variant": variant, "batch": batch, "crops/s": batch / seconds,
                     "model TFLOP/s": flops / seconds / 1e12})
    torch.backends.cuda.matmul.allow_tf32 = False
    return rows


def real_data_run(data_dir: Path, epochs: int, max_images: int | None, work_dir: Path,
                  overrides: list[str] | None = None) -> dict[str, Any]:
    """`mal train` + `mal inference` + `mal evaluate` with the package's default (GPU) model settings, on
    `max_images` images spread over the ids (the whole check must fit in minutes)."""
    gt_path, boxes_path, image_dir = prepare_files(data_dir, work_dir, max_images)
    spec_path = work_dir / "spec.yaml"
    spec = {
        "results_dir": str(work_dir / "run"),
        "dataset": {"train_ann_path": str(boxes_path), "train_img_dir": str(image_dir), "val_ann_path": str(gt_path),
                    "val_img_dir": str(image_dir), "load_mask": False},
        "train": {"num_epochs": epochs, "validation_interval": epochs},
    }
    spec_path.write_text(yaml.safe_dump(spec))
    timings = {action: run_mal(action, spec_path, list(overrides or []), work_dir / f"{action}.log")
               for action in ("train", "inference", "evaluate")}
    metrics = json.loads((work_dir / "run" / "evaluate" / "metrics.json").read_text())
    images = len(json.loads(gt_path.read_text())["images"])
    return {"data": data_dir.name, "images": images, "epochs": epochs, **{f"{k} s": v for k, v in timings.items()},
            "mIoU": metrics.get("mIoU"), "AP": metrics.get("AP")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    parser.add_argument("--config", type=parse_config, default=parse_config("vit-mae-base/16@512"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--matmul-size", type=int, default=8192)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (minutes to compile)")
    parser.add_argument("--train-results", type=Path, default=REPO_ROOT / "benchmarks/results/gpu_train_speed.json")
    parser.add_argument("--data", type=Path, default=None, help="a dataset folder for the short real run")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--data-max-images", type=int, default=60, help="images of --data used (0: all)")
    parser.add_argument("--name", default="gpu_check")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: --device cuda but torch sees no GPU")
    started = time.perf_counter()

    size = args.matmul_size if device.type == "cuda" else min(args.matmul_size, 1024)
    rates = {"bf16": matmul_rate(device, torch.bfloat16, size), "fp32": matmul_rate(device, torch.float32, size)}
    if device.type == "cuda":
        rates["tf32"] = matmul_rate(device, torch.float32, args.matmul_size, tf32=True)
    rate_rows = [{"matmul": name, "TFLOP/s": value / 1e12} for name, value in rates.items()]
    print(json.dumps(rate_rows), flush=True)

    arch, crop = args.config
    rows = inference_rows(arch, crop, args.batch_size, device, args.repeats, args.compile)
    for row in rows:
        row["x bf16 matmul"] = row["model TFLOP/s"] * 1e12 / rates["bf16"]
        print(row, flush=True)

    train_rows: list[dict[str, Any]] = []
    if args.train_results.is_file():
        for r in json.loads(args.train_results.read_text()).get("results", []):
            train_rows.append({"model": f"{r['arch']} @{r['crop_size']}", "precision": r["precision"],
                               "checkpointing": "on" if r["grad_checkpointing"] else "off", "batch": r["batch_size"],
                               "crops/s": r["crops_per_s"], "peak MiB": r.get("peak_gpu_mib") or r["peak_rss_mib"],
                               "model TFLOP/s": r["model_tflop_per_s"],
                               "x bf16 matmul": r["model_tflop_per_s"] * 1e12 / rates["bf16"]})

    real: list[dict[str, Any]] = []
    if args.data:
        with tempfile.TemporaryDirectory(prefix="mal-gpu-check-") as scratch:
            real.append(real_data_run(args.data.resolve(), args.epochs, args.data_max_images or None, Path(scratch)))
        print(real[0], flush=True)

    device_name = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU"
    tables = [("Matmul rates measured in this run", ["matmul", "TFLOP/s"], rate_rows),
              (f"Labeling network speed on {device_name}", list(rows[0]), rows)]
    if train_rows:
        tables.append(("Training (benchmarks/train_speed.py, part 1) against this run's bf16 matmul rate",
                       list(train_rows[0]), train_rows))
    if real:
        tables.append(("Short run on real data with the GPU defaults", list(real[0]), real))
    notes = [f"Device: {device_name}. Total {time.perf_counter() - started:.0f} s.",
             "Goals (#22): training at crop 512, batch 4, with checkpointing in <= 12 GB peak; model FLOP/s >= 0.4 "
             "of the bf16 matmul rate."]
    write_results(args.name, {"device": device_name, "matmul_flop_per_s": rates, "inference": rows,
                              "training": train_rows, "real_data": real}, tables, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
