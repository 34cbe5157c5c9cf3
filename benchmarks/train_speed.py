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

from common import median, peak_rss_mib, write_results

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
    arch: str, crop_size: int, batch_size: int, warmup: int, steps: int, threads: int, crf_num_iter: int
) -> dict[str, Any]:
    """Train `steps` timed steps (after `warmup`) in this process; return the timings and memory."""
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
        ],
    )
    config = spec.model_dump(mode="json")
    mean_teacher = MeanTeacher(build_student(config)).train()
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
    batches = [random_batch(batch_size, crop_size, generator) for _ in range(2)]
    rss_before = peak_rss_mib()

    def step(batch: dict[str, Any]) -> dict[str, float]:
        marks = [time.perf_counter()]
        student_logits = mean_teacher.student(batch["image_aug"])
        with torch.no_grad():
            teacher_logits = mean_teacher.teacher(batch["image"])
        marks.append(time.perf_counter())
        out = mal_losses(
            student_logits, teacher_logits, batch["image"], batch["box_mask"], full_weight_step, losses_cfg
        )
        marks.append(time.perf_counter())
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        marks.append(time.perf_counter())
        optimizer.step()
        mean_teacher.update_teacher(config["model"]["teacher_momentum"])
        marks.append(time.perf_counter())
        names = ("forward_s", "losses_s", "backward_s", "optimizer_ema_s")
        phases = {name: marks[i + 1] - marks[i] for i, name in enumerate(names)}
        return {**phases, "step_s": marks[-1] - marks[0], "loss": float(out["loss"])}

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
        "rss_after_build_mib": rss_before,
        "peak_rss_mib": peak_rss_mib(),
        "final_loss_finite": all(t["loss"] == t["loss"] for t in timed),
    }


def per_config(values: list[int], count: int) -> list[int]:
    return values if len(values) == count else [values[0]] * count


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
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(**json.loads(args.worker))))
        return

    steps = per_config(args.steps, len(args.configs))
    warmups = per_config(args.warmup, len(args.configs))
    rows = []
    for (arch, crop_size), warmup, timed_steps in zip(args.configs, warmups, steps):
        job = {
            "arch": arch,
            "crop_size": crop_size,
            "batch_size": args.batch_size,
            "warmup": warmup,
            "steps": timed_steps,
            "threads": args.threads,
            "crf_num_iter": args.crf_num_iter,
        }
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            sys.exit(f"{arch}@{crop_size} failed:\n{done.stderr[-3000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row["wall_s"] = time.perf_counter() - started
        rows.append(row)
        print(
            f"{arch}@{crop_size}: {row['crops_per_s']:.2f} crops/s, peak RSS {row['peak_rss_mib']:.0f} MiB "
            f"({row['wall_s']:.0f} s)",
            flush=True,
        )

    table = [
        {
            "model": f"{r['arch']} @{r['crop_size']}",
            "batch": r["batch_size"],
            "threads": r["threads"],
            "crops/s": r["crops_per_s"],
            "crops/s best": r["crops_per_s_best"],
            "step s": r["step_s_median"],
            "fwd s": r["forward_s_median"],
            "losses s": r["losses_s_median"],
            "bwd s": r["backward_s_median"],
            "AdamW+EMA s": r["optimizer_ema_s_median"],
            "peak RSS MiB": r["peak_rss_mib"],
            "timed steps": r["timed_steps"],
        }
        for r in rows
    ]
    columns = list(table[0])
    notes = [
        "One step: student forward, teacher forward (no grad), MIL + CRF losses (crf_num_iter mean-field "
        "iterations), backward, AdamW, teacher EMA; random crops with a random box mask; medians over the "
        "timed steps (and the best step), warm-up steps excluded.",
        "Peak RSS: ru_maxrss of a fresh process per configuration (model, optimizer state, activations).",
    ]
    json_path, md_path = write_results(
        "train_speed", {"results": rows}, [("Training speed (CPU)", columns, table)], notes
    )
    print(json_path)
    print(md_path)


if __name__ == "__main__":
    main()
