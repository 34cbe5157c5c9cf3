"""Benchmark: labeling speed on the CPU (boxes/s) with PyTorch and ONNX Runtime, and compute efficiency.

For each model: the inference network (teacher, as `mal inference` runs it) on batches of crops, under a few
cheap levers (inference_mode, channels_last, thread count, ONNX Runtime graph optimisation, larger batch). The
efficiency ratio of a run = achieved FLOP/s of the model (FLOPs of one forward from torch's FlopCounterMode,
divided by the time) / FLOP/s of a 2048^3 fp32 matmul measured just before that run with the same threads.
For vit-tiny/16 a second figure times the whole labeling path of one image: crop boxes (roi_align), network,
paste-back and RLE (`mal.masks.paste_masks`).

Writes benchmarks/results/inference_speed.{json,md}. Usage:
    .venv/bin/python benchmarks/inference_speed.py [--configs vit-tiny/16@128 vit-mae-base/16@224]
        [--batch-size 16] [--large-batch 64] [--repeats 8 2] [--threads 0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from common import (
    count_flops,
    interleaved_times,
    matmul_benchmark,
    median,
    physical_cores,
    time_calls,
    write_results,
)
from precision_accuracy import label_precision_accuracy, parse_accuracy

from mal.data.crops import box_masks, crop_and_resize, expand_boxes
from mal.engine.export import export_onnx
from mal.engine.module import build_student, inference_net
from mal.engine.onnx_backend import OnnxMaskNet
from mal.engine.precision import Bf16Predictor, quantized_onnx
from mal.masks import paste_masks, thresholds_for
from mal.model.mal import MeanTeacher
from mal.spec import load_spec

DEFAULT_CONFIGS = ["vit-tiny/16@128", "vit-mae-base/16@224"]
DEFAULT_REPEATS = [8, 2]  # timed batches per config: a vit-mae-base batch of 16 takes ~5-15 s on two cores
TARGET_RATIO = 0.5
ALL_LEVERS_MAX_GFLOP = 200.0  # per batch; vit-tiny/16 @128 is ~46, vit-mae-base/16 @224 ~670


def parse_config(text: str) -> tuple[str, int]:
    arch, _, size = text.partition("@")
    if not size:
        raise argparse.ArgumentTypeError(f"config {text!r} must look like ARCH@CROP, e.g. vit-tiny/16@128")
    return arch, int(size)


def build_net(arch: str, crop_size: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    torch.manual_seed(0)
    config = load_spec(None, [f"model.arch={arch}", f"dataset.crop_size={crop_size}"]).model_dump(mode="json")
    net = inference_net(MeanTeacher(build_student(config)), config["inference"]).eval()
    return net, config


class Runner:
    """Times variants of one model and attaches the efficiency ratio against an adjacent matmul."""

    def __init__(self, name: str, flops_per_crop: float, repeats: int, warmup: int) -> None:
        self.name = name
        self.flops_per_crop = flops_per_crop
        self.repeats = repeats
        self.warmup = warmup
        self.rows: list[dict[str, Any]] = []

    def measure(self, variant: str, runtime: str, batch: int, threads: int, call: Callable[[], Any]) -> dict[str, Any]:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            matmul, matmul_flops = matmul_benchmark()
            times, matmul_times = interleaved_times(call, matmul, warmup=self.warmup, repeats=self.repeats)
        finally:
            torch.set_num_threads(previous)
        # Best times: on a shared machine the fastest run is the one least disturbed by other work.
        achieved = self.flops_per_crop * batch / min(times)
        ceiling = matmul_flops / min(matmul_times)
        pair_ratios = [self.flops_per_crop * batch / t / (matmul_flops / m) for t, m in zip(times, matmul_times)]
        row = {
            "model": self.name,
            "variant": variant,
            "runtime": runtime,
            "batch": batch,
            "threads": threads,
            "s_per_batch_best": min(times),
            "s_per_batch_median": median(times),
            "s_per_batch_all": times,
            "boxes_per_s": batch / min(times),
            "boxes_per_s_median": batch / median(times),
            "model_gflop_per_s": achieved / 1e9,
            "matmul_gflop_per_s": ceiling / 1e9,
            "matmul_s_all": matmul_times,
            "efficiency_ratio": achieved / ceiling,
            "efficiency_ratio_median_of_pairs": median(pair_ratios),
        }
        self.rows.append(row)
        print(
            f"  {variant:<44} {row['boxes_per_s']:8.2f} boxes/s  ratio {row['efficiency_ratio']:.2f} "
            f"(pairs {row['efficiency_ratio_median_of_pairs']:.2f})",
            flush=True,
        )
        return row


def torch_call(net: torch.nn.Module, crops: torch.Tensor, inference_mode: bool) -> Callable[[], Any]:
    def call() -> Any:
        with torch.inference_mode() if inference_mode else torch.no_grad():
            return net(crops)

    return call


def bench_model(arch: str, crop_size: int, args: argparse.Namespace, repeats: int, workdir: Path) -> dict[str, Any]:
    name = f"{arch} @{crop_size}"
    print(name, flush=True)
    net, config = build_net(arch, crop_size)
    generator = torch.Generator().manual_seed(0)
    crops = torch.rand(args.batch_size, 3, crop_size, crop_size, generator=generator)
    flops_per_crop = count_flops(net, crops[:1])
    # A model whose batch takes many seconds here gets only the main levers, to keep the run a few minutes.
    all_levers = flops_per_crop * args.batch_size <= ALL_LEVERS_MAX_GFLOP * 1e9
    runner = Runner(name, flops_per_crop, repeats=repeats, warmup=2 if all_levers else 1)
    threads = args.threads or torch.get_num_threads()
    cores = physical_cores()

    runner.measure("torch no_grad (baseline)", "torch", args.batch_size, threads, torch_call(net, crops, False))
    if all_levers:
        runner.measure("torch inference_mode", "torch", args.batch_size, threads, torch_call(net, crops, True))
    net_cl = net.to(memory_format=torch.channels_last)
    crops_cl = crops.contiguous(memory_format=torch.channels_last)
    runner.measure(
        "torch inference_mode + channels_last", "torch", args.batch_size, threads, torch_call(net_cl, crops_cl, True)
    )
    net = net.to(memory_format=torch.contiguous_format)
    if all_levers and cores != threads:
        runner.measure(
            f"torch inference_mode, threads = {cores} physical cores",
            "torch",
            args.batch_size,
            cores,
            torch_call(net, crops, True),
        )
    if all_levers and args.large_batch > args.batch_size:
        big = torch.rand(args.large_batch, 3, crop_size, crop_size, generator=generator)
        runner.measure(
            f"torch inference_mode, batch {args.large_batch}",
            "torch",
            args.large_batch,
            threads,
            torch_call(net, big, True),
        )

    onnx_path = export_onnx(
        net, crop_size, workdir / f"{arch.replace('/', '_')}_{crop_size}.onnx", metadata={"crop_size": crop_size}
    )
    levels = ("basic", "all") if all_levers else ("all",)
    ort_net = None
    for level in levels:
        del ort_net  # one ONNX Runtime thread pool alive at a time
        ort_net = OnnxMaskNet(onnx_path, num_threads=threads, graph_optimization_level=level)
        runner.measure(
            f"onnxruntime graph opt {level}",
            "onnxruntime",
            args.batch_size,
            threads,
            lambda ort_net=ort_net: ort_net(crops),
        )
    if all_levers and args.large_batch > args.batch_size:
        runner.measure(
            f"onnxruntime graph opt all, batch {args.large_batch}",
            "onnxruntime",
            args.large_batch,
            threads,
            lambda ort_net=ort_net: ort_net(big),
        )

    # The precisions side by side, each as `mal inference` runs it (inference.precision=...).
    runner.measure("torch bf16 autocast (precision bf16)", "torch", args.batch_size, threads,
                   torch_call(Bf16Predictor(net, torch.device("cpu")), crops, True))
    int8_net = OnnxMaskNet(quantized_onnx(onnx_path), num_threads=threads)
    runner.measure("onnxruntime int8 (precision int8)", "onnxruntime", args.batch_size, threads,
                   lambda int8_net=int8_net: int8_net(crops))
    del int8_net  # one ONNX Runtime thread pool alive at a time

    result: dict[str, Any] = {"model": name, "gflop_per_crop": flops_per_crop / 1e9, "variants": runner.rows}
    if all_levers:
        result["end_to_end"] = bench_end_to_end(net, ort_net, config, args, threads)
    return result


def bench_end_to_end(
    net: torch.nn.Module, ort_net: OnnxMaskNet, config: dict[str, Any], args: argparse.Namespace, threads: int
) -> list[dict[str, Any]]:
    """One 480 x 640 image with `batch_size` boxes: crops, network, paste-back and RLE, as `mal inference` does."""
    crop_size = config["dataset"]["crop_size"]
    generator = torch.Generator().manual_seed(1)
    height, width = 480, 640
    image = torch.rand(3, height, width, generator=generator)
    sizes = 16 + 224 * torch.rand(args.batch_size, 2, generator=generator)
    corner = torch.rand(args.batch_size, 2, generator=generator) * torch.tensor([width, height])
    boxes = torch.cat([corner, (corner + sizes).minimum(torch.tensor([width, height]))], dim=1)
    areas = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).numpy()
    mask_thres = config["train"]["mask_thres"]  # the spec holds a list: one value, or one per size bucket
    thresholds = thresholds_for(areas, mask_thres[0] if len(mask_thres) == 1 else mask_thres)

    def crops_in() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        crop_boxes = expand_boxes(boxes, config["train"]["test_margin_rate"])
        return crop_and_resize(image, crop_boxes, crop_size), box_masks(boxes, crop_boxes, crop_size), crop_boxes

    crops, masks, crop_boxes = crops_in()
    with torch.inference_mode():
        probs = torch.sigmoid(net(crops)).squeeze(1)

    def paste() -> Any:
        return paste_masks(probs, masks.squeeze(1), crop_boxes, (height, width), thresholds)

    def whole(model: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], Any]:
        def call() -> Any:
            with torch.inference_mode():
                c, m, b = crops_in()
                p = torch.sigmoid(model(c)).squeeze(1)
                return paste_masks(p, m.squeeze(1), b, (height, width), thresholds)

        return call

    torch.set_num_threads(threads)
    rows = []
    quiet_ort = OnnxMaskNet(ort_net.path, num_threads=threads, allow_spinning=False)
    for stage, call in (
        ("crop (roi_align) + box masks", crops_in),
        ("paste-back + RLE", paste),
        ("end to end, torch", whole(net)),
        ("end to end, onnxruntime", whole(ort_net)),
        ("end to end, onnxruntime without thread spinning", whole(quiet_ort)),
    ):
        seconds = min(time_calls(call, warmup=1, repeats=8, settle_s=0.2))
        rows.append({"stage": stage, "boxes": args.batch_size, "s": seconds, "boxes_per_s": args.batch_size / seconds})
        print(f"  {stage:<44} {args.batch_size / seconds:8.2f} boxes/s", flush=True)
    return rows


PRECISION_PATHS = {
    "torch inference_mode": ("torch", "fp32"),
    "torch bf16 autocast (precision bf16)": ("torch", "bf16"),
    "onnxruntime graph opt all": ("onnxruntime", "fp32"),
    "onnxruntime int8 (precision int8)": ("onnxruntime", "int8"),
}
PRECISION_COLUMNS = ["model", "backend", "precision", "boxes/s", "x torch fp32", "x fastest fp32"]


def precision_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each labeling path's speed against PyTorch fp32 and against the faster fp32 runtime, per model."""
    table = []
    for model in dict.fromkeys(row["model"] for row in rows):
        picked = {PRECISION_PATHS[r["variant"]]: r for r in rows
                  if r["model"] == model and r["variant"] in PRECISION_PATHS and r["batch"] == rows[0]["batch"]}
        if ("torch", "fp32") not in picked:  # a large model skips inference_mode: its baseline is the fp32 row
            picked[("torch", "fp32")] = next(
                r for r in rows if r["model"] == model and r["variant"] == "torch no_grad (baseline)")
        torch_fp32 = picked[("torch", "fp32")]
        fastest_fp32 = max([torch_fp32["boxes_per_s"]] + [r["boxes_per_s"] for key, r in picked.items()
                                                         if key[1] == "fp32"])
        for (backend, precision), row in picked.items():
            table.append({"model": model, "backend": backend, "precision": precision,
                          "boxes/s": row["boxes_per_s"], "x torch fp32": row["boxes_per_s"] / torch_fp32["boxes_per_s"],
                          "x fastest fp32": row["boxes_per_s"] / fastest_fp32})
    return table


def _with_batch(variant: str, batch: int) -> str:
    """The variant's name, with its batch size unless the name already gives it."""
    return variant if f"batch {batch}" in variant else f"{variant}, batch {batch}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", type=parse_config, default=[parse_config(c) for c in DEFAULT_CONFIGS])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--large-batch", type=int, default=64, help="the larger-batch lever (small models only)")
    parser.add_argument(
        "--repeats",
        type=int,
        nargs="+",
        default=DEFAULT_REPEATS,
        help="timed batches, one value for all configs or one per config",
    )
    parser.add_argument("--threads", type=int, default=0, help="threads for torch and onnxruntime (0: default)")
    parser.add_argument("--accuracy-max-images", type=int, default=None,
                        help="score the accuracy on this many images of each dataset, spread over the ids")
    parser.add_argument("--accuracy", nargs="*", type=parse_accuracy, default=[],
                        help="DATA_DIR=PRESET: train the preset once and score every precision with mal evaluate")
    args = parser.parse_args()
    repeats = args.repeats if len(args.repeats) == len(args.configs) else [args.repeats[0]] * len(args.configs)

    started = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="mal-bench-") as workdir:
        for (arch, crop_size), count in zip(args.configs, repeats):
            results.append(bench_model(arch, crop_size, args, count, Path(workdir)))

    rows = [row for result in results for row in result["variants"]]
    table = [
        {
            "model": r["model"],
            "variant": r["variant"],
            "batch": r["batch"],
            "threads": r["threads"],
            "boxes/s": r["boxes_per_s"],
            "boxes/s median": r["boxes_per_s_median"],
            "model GFLOP/s": r["model_gflop_per_s"],
            "matmul GFLOP/s": r["matmul_gflop_per_s"],
            "ratio": r["efficiency_ratio"],
            "ratio (median of pairs)": r["efficiency_ratio_median_of_pairs"],
        }
        for r in rows
    ]
    tables = [("Network only (crops in, logits out)", list(table[0]), table)]
    flops = [{"model": r["model"], "GFLOP per crop": r["gflop_per_crop"]} for r in results]
    tables.append(("FLOPs per crop (FlopCounterMode, one forward)", ["model", "GFLOP per crop"], flops))
    for result in results:
        if "end_to_end" in result:
            tables.append(
                (
                    f"Labeling one 480x640 image, {result['model']}",
                    ["stage", "boxes", "s", "boxes_per_s"],
                    result["end_to_end"],
                )
            )
    tables.append((f"Precisions side by side (batch {args.batch_size})", PRECISION_COLUMNS, precision_rows(rows)))
    accuracy: list[dict[str, Any]] = []
    for data_dir, preset in args.accuracy:
        accuracy.extend(label_precision_accuracy(data_dir, preset, args.accuracy_max_images))
    if accuracy:
        tables.append(("mIoU of each precision (preset trained in fp32, scored by mal evaluate)",
                       list(accuracy[0]), accuracy))
    best = {}
    for row in rows:
        if row["efficiency_ratio"] > best.get(row["model"], {"efficiency_ratio": -1})["efficiency_ratio"]:
            best[row["model"]] = row
    notes = [
        f"Best ratio, {model}: {row['efficiency_ratio']:.2f} ({_with_batch(row['variant'], row['batch'])}); "
        f"target >= {TARGET_RATIO}."
        for model, row in best.items()
    ]
    notes.append(f"Total run time {time.perf_counter() - started:.0f} s.")
    payload = {"target_ratio": TARGET_RATIO, "results": results, "accuracy": accuracy}
    json_path, md_path = write_results("inference_speed", payload, tables, notes)
    print(json_path)
    print(md_path)


if __name__ == "__main__":
    main()
