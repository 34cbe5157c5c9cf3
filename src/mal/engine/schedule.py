"""Per-iteration learning-rate schedule: linear warm-up, then cosine waves down to a floor."""

from __future__ import annotations

import math


def lr_factor(step: int, *, total_steps: int, warmup_steps: int, min_factor: float, num_wave: float) -> float:
    """Multiplier of the base lr at optimizer step `step`.

    Warm-up rises linearly from 1/warmup_steps to 1. Afterwards the factor follows
    min + (1 - min) * (1 + cos(pi * num_wave * progress)) / 2, so one wave is the usual cosine decay and more
    waves restart it.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / decay_steps, 1.0)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * num_wave * progress))
