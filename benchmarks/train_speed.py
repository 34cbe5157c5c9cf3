"""Benchmark: MAL training speed (crops/s) and peak memory on the CPU.

One real training step = student forward on the student view, teacher forward without gradients, `mal_losses`
(MIL projection + mean-field CRF with train.crf_num_iter iterations), backward, AdamW step, teacher EMA.
Inputs are random crops with a random box mask: speed does not depend on the pixels.

Each configuration runs in a fresh subprocess, so its peak RSS (ru_maxrss of that process) is its own and not
the high-water mark of an earlier, bigger model. Writes benchmarks/results/train_speed.{json,md}. Usage:
    .venv/bin/python benchmarks/train_speed.py [--configs vit-tiny/16@128 vit-mae-base/16@224]
        [--batch-size 4] [--warmup 2 1] [--steps 10 2] [--threads 0] [--crf-num-iter 100]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

from common import count_flops, median, peak_rss_mib, write_results
from precision_accuracy import parse_accuracy, train_precision_accuracy

DEFAULT_CONFIGS = ["vit-tiny/16@128", "vit-mae-base/16@224"]
# Per config: the base model takes ~20 s a step on two cores, so it gets one warm-up and two timed steps.
DEFAULT_WARMUP = [2, 1]
DEFAULT_STEPS = [10, 2]


def parse_config(text: str) -> tuple[str, int]:
    arch, _, size = text.partition("@")
    if not size:
        raise argparse.ArgumentTypeError(f"config {text!r} must look like ARCH@CROP, e.g. vit-tiny/16@128")
    return arch, int(size)


def random_batch(batch_size: int, crop_size: int, generator: Any) -> dict[str, Any]:
    """Crops in [0, 1], a colour-perturbed student view, and one random box mask per crop."""
    import torch

    image = torch.rand(batch_size, 3, crop_size, crop_size, generator=generator)
    student_view = (image * (0.8 + 0.4 * torch.rand(batch_size, 3, 1, 1, generator=generator))).clamp(0, 1)
    corners = torch.rand(batch_size, 2, 2, generator=generator).sort(dim=1).values * crop_size  # [lo, hi] x [x, y]
    coords = torch.arange(crop_size, dtype=torch.float32) + 0.5
    inside_x = (coords >= corners[:, 0, 0:1]) & (coords < corners[:, 1, 0:1])
    inside_y = (coords >= corners[:, 0, 1:2]) & (coords < corners[:, 1, 1:2])
    box_mask = (inside_y[:, :, None] & inside_x[:, None, :]).unsqueeze(1).float()
    return {"image": image, "image_aug": student_view, "box_mask": box_mask}


def worker(
    arch: str, crop_size: int, batch_size: int, warmup: int, steps: int, threads: int, crf_num_iter: int,
    precision: str = "fp32", device: str = "cpu", grad_checkpointing: bool = False, channels_last: bool = False,
    compile: bool = False,
) -> dict[str, Any]:
    """Train `steps` timed steps (after `warmup`) in this process; return the timings and memory.

    precision fp32 or bf16-mixed (bfloat16 autocast around the two networks, as Lightning's bf16-mixed does; the
    losses turn autocast off themselves). On cuda the phases are synchronised before each mark.
    """
    import torch

    from mal.engine.module import build_student, loss_config
    from mal.model.losses import mal_losses
    from mal.model.mal import MeanTeacher
    from mal.spec import load_spec

    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    spec = load_spec(
        None,
        [
            f"model.arch={arch}",
            f"dataset.crop_size={crop_size}",
            f"train.crf_num_iter={crf_num_iter}",
            f"train.batch_size={batch_size}",
            f"model.grad_checkpointing={str(grad_checkpointing).lower()}",
        ],
    )
    config = spec.model_dump(mode="json")
    target = torch.device(device)
    mean_teacher = MeanTeacher(build_student(config)).train().to(target)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        mean_teacher.to(memory_format=torch.channels_last)
    flops_per_crop = count_flops(mean_teacher.teacher, torch.rand(1, 3, crop_size, crop_size, device=target))
    if compile:
        mean_teacher.student.compile()
        mean_teacher.teacher.compile()
    autocast = torch.autocast(target.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")
    train = config["train"]
    optimizer = torch.optim.AdamW(
        [p for p in mean_teacher.student.parameters() if p.requires_grad],
        lr=train["lr"] * batch_size,
        betas=tuple(train["optim_betas"]),
        eps=train["optim_eps"],
        weight_decay=train["wd"],
    )
    losses_cfg = loss_config(train)
    full_weight_step = max(train["loss_mil_step"], train["loss_crf_step"])  # both losses at full weight
    batches = [
        {key: value.to(target).contiguous(memory_format=layout) for key, value in
         random_batch(batch_size, crop_size, generator).items()}
        for _ in range(2)
    ]
    rss_before = peak_rss_mib()
    if target.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def mark() -> float:
        if target.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def step(batch: dict[str, Any]) -> dict[str, float]:
        marks = [mark()]
        with autocast:
            student_logits = mean_teacher.student(batch["image_aug"])
            with torch.no_grad():
                teacher_logits = mean_teacher.teacher(batch["image"])
        marks.append(mark())
        out = mal_losses(
            student_logits, teacher_logits, batch["image"], batch["box_mask"], full_weight_step, losses_cfg
        )
        marks.append(mark())
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        marks.append(mark())
        optimizer.step()
        mean_teacher.update_teacher(config["model"]["teacher_momentum"])
        marks.append(mark())
        names = ("forward_s", "losses_s", "backward_s", "optimizer_ema_s")
        phases = {name: marks[i + 1] - marks[i] for i, name in enumerate(names)}
        return {**phases, "step_s": marks[-1] - marks[0], "loss": float(out["loss"].detach())}

    for index in range(warmup):
        step(batches[index % 2])
    timed = [step(batches[index % 2]) for index in range(steps)]
    step_s = median([t["step_s"] for t in timed])
    return {
        "arch": arch,
        "crop_size": crop_size,
        "batch_size": batch_size,
        "threads": torch.get_num_threads(),
        "crf_num_iter": crf_num_iter,
        "warmup_steps": warmup,
        "timed_steps": steps,
        "step_s_median": step_s,
        "step_s_all": [t["step_s"] for t in timed],
        "crops_per_s": batch_size / step_s,
        "crops_per_s_best": batch_size / min(t["step_s"] for t in timed),
        **{
            f"{name}_median": median([t[name] for t in timed])
            for name in ("forward_s", "losses_s", "backward_s", "optimizer_ema_s")
        },
        "student_params_m": sum(p.numel() for p in mean_teacher.student.parameters()) / 1e6,
        "precision": precision,
        "device": device,
        "grad_checkpointing": grad_checkpointing,
        "channels_last": channels_last,
        "compile": compile,
        # Model FLOPs of one step: the student's forward and backward (about 2x the forward) and the teacher's
        # forward; recomputation under activation checkpointing is not counted.
        "model_tflop_per_s": 4 * flops_per_crop * batch_size / step_s / 1e12,
        "rss_after_build_mib": rss_before,
        "peak_rss_mib": peak_rss_mib(),
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if target.type == "cuda" else None,
        "final_loss_finite": all(t["loss"] == t["loss"] for t in timed),
    }


def per_config(values: list[int], count: int) -> list[int]:
    return values if len(values) == count else [values[0]] * count


def run_worker(job: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.exit(f"{job['arch']}@{job['crop_size']} ({job['precision']}) failed:\n{done.stderr[-3000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["wall_s"] = time.perf_counter() - started
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", type=parse_config, default=[parse_config(c) for c in DEFAULT_CONFIGS])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument(
        "--warmup",
        type=int,
        nargs="+",
        default=DEFAULT_WARMUP,
        help="untimed steps, one value for all configs or one per config",
    )
    parser.add_argument(
        "--steps",
        type=int,
        nargs="+",
        default=DEFAULT_STEPS,
        help="timed steps, one value for all configs or one per config",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--crf-num-iter", type=int, default=100)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16-mixed"], choices=["fp32", "bf16-mixed"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--grad-checkpointing", nargs="+", default=["off"], choices=["off", "on"],
                        help="activation checkpointing variants to time")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile both networks (slow first steps)")
    parser.add_argument("--accuracy-max-images", type=int, default=None,
                        help="score the accuracy on this many images of each dataset, spread over the ids")
    parser.add_argument("--accuracy", nargs="*", type=parse_accuracy, default=[],
                        help="DATA_DIR=PRESET: train the preset at each precision and score it (quality.py protocol)")
    parser.add_argument("--name", default="train_speed", help="results name (benchmarks/results/NAME.json/.md)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(**json.loads(args.worker))))
        return

    steps = per_config(args.steps, len(args.configs))
    warmups = per_config(args.warmup, len(args.configs))
    rows = []
    for (arch, crop_size), warmup, timed_steps in zip(args.configs, warmups, steps):
        for checkpointing in args.grad_checkpointing:
            for precision in args.precisions:
                job = {
                    "arch": arch,
                    "crop_size": crop_size,
                    "batch_size": args.batch_size,
                    "warmup": warmup,
                    "steps": timed_steps,
                    "threads": args.threads,
                    "crf_num_iter": args.crf_num_iter,
                    "precision": precision,
                    "device": args.device,
                    "grad_checkpointing": checkpointing == "on",
                    "channels_last": args.channels_last,
                    "compile": args.compile,
                }
                row = run_worker(job)
                rows.append(row)
                memory = row["peak_gpu_mib"] if args.device == "cuda" else row["peak_rss_mib"]
                print(f"{arch}@{crop_size} {precision} checkpointing {checkpointing}: {row['crops_per_s']:.2f} "
                      f"crops/s, peak memory {memory:.0f} MiB ({row['wall_s']:.0f} s)", flush=True)

    fp32_speed = {(r["arch"], r["crop_size"], r["grad_checkpointing"]): r["crops_per_s"]
                  for r in rows if r["precision"] == "fp32"}
    table = [
        {
            "model": f"{r['arch']} @{r['crop_size']}",
            "precision": r["precision"],
            "checkpointing": "on" if r["grad_checkpointing"] else "off",
            "batch": r["batch_size"],
            "threads": r["threads"],
            "crops/s": r["crops_per_s"],
            "x fp32": (r["crops_per_s"] / fp32_speed[key]
                       if (key := (r["arch"], r["crop_size"], r["grad_checkpointing"])) in fp32_speed else None),
            "crops/s best": r["crops_per_s_best"],
            "model TFLOP/s": r["model_tflop_per_s"],
            "step s": r["step_s_median"],
            "fwd s": r["forward_s_median"],
            "losses s": r["losses_s_median"],
            "bwd s": r["backward_s_median"],
            "AdamW+EMA s": r["optimizer_ema_s_median"],
            "peak MiB": r["peak_gpu_mib"] if r["peak_gpu_mib"] is not None else r["peak_rss_mib"],
            "timed steps": r["timed_steps"],
        }
        for r in rows
    ]
    columns = list(table[0])
    where = "GPU memory (max_memory_allocated)" if args.device == "cuda" else "RSS (ru_maxrss of a fresh process)"
    notes = [
        "One step: student forward, teacher forward (no grad), MIL + CRF losses (crf_num_iter mean-field "
        "iterations), backward, AdamW, teacher EMA; random crops with a random box mask; medians over the "
        "timed steps (and the best step), warm-up steps excluded.",
        f"Peak memory: {where} per configuration (model, optimizer state, activations).",
        "bf16-mixed: bfloat16 autocast around both networks; weights, AdamW and the losses stay fp32 "
        "(train.precision=bf16-mixed). Model TFLOP/s counts 4 forwards per crop (student forward + backward, "
        "teacher forward), no recomputation.",
        f"Device {args.device}; channels_last {args.channels_last}; torch.compile {args.compile}.",
    ]
    tables = [("Training speed", columns, table)]
    accuracy_rows: list[dict[str, Any]] = []
    if args.accuracy:
        for data_dir, preset in args.accuracy:
            accuracy_rows.extend(train_precision_accuracy(data_dir, preset, args.precisions, args.accuracy_max_images))
        tables.append(("Accuracy of the preset trained at each precision (quality.py protocol, fp32 labeling)",
                       list(accuracy_rows[0]), accuracy_rows))
    json_path, md_path = write_results(
        args.name, {"results": rows, "accuracy": accuracy_rows}, tables, notes
    )
    print(json_path)
    print(md_path)


if __name__ == "__main__":
    main()
