"""Checks before a study spends any compute, and the launch review the user confirms.

Preflight: the skill dir parses into a search space, the spec's local data paths exist, and the environment
variables the study will need are reported as SET or UNSET (never their values); URL passwords are shown as ***.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mal.automl.settings import AutoMLSettings
from mal.dotted import get_dotted
from mal.redaction import redact_text

# Spec keys naming inputs a training reads: they must be visible before the study starts.
DATA_KEYS = (
    "dataset.train_ann_path",
    "dataset.train_img_dir",
    "dataset.val_ann_path",
    "dataset.val_img_dir",
    "train.pretrained_model_path",
)
REQUIRED_DATA_KEYS = ("dataset.train_ann_path", "dataset.train_img_dir")
_REMOTE_ENV = {
    "s3": (("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), ("AWS_PROFILE",)),
    "gs": (("GOOGLE_APPLICATION_CREDENTIALS",), ()),
}


@dataclass
class PreflightReport:
    checks: list[dict[str, Any]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str, warn_only: bool = False) -> None:
        detail = redact_text(detail)  # details quote data URLs and llm_endpoint, which may hold a password
        level = "ok" if ok else ("warning" if warn_only else "error")
        self.checks.append({"check": name, "ok": ok, "level": level, "detail": detail})
        if not ok:
            (self.warnings if warn_only else self.errors).append(detail)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": not self.errors,
            "checks": self.checks,
            "env": self.env,
            "errors": self.errors,
            "warnings": self.warnings,
        }


def env_state(name: str) -> str:
    return "SET" if os.environ.get(name) else "UNSET"


def run_preflight(
    skill_dir: Path, base_spec: Mapping[str, Any], settings: AutoMLSettings, space_error: str | None, space_size: int
) -> PreflightReport:
    """Everything checkable without running a job; `space_error` is the skill dir's parse error, if any."""
    report = PreflightReport()
    report.check(
        "skill dir", space_error is None, space_error or f"{skill_dir} parses: {space_size} searched parameter(s)"
    )
    schemes: set[str] = set()
    for key in DATA_KEYS:
        value = get_dotted(base_spec, key)
        if not value:
            if key in REQUIRED_DATA_KEYS:
                report.check(
                    key,
                    False,
                    f"{key} is not set in the spec; trainings without data fail at once unless the job makes its own",
                    warn_only=True,
                )
            continue
        text = str(value)
        if "://" in text:
            scheme = text.split("://", 1)[0]
            schemes.add(scheme)
            report.check(key, True, f"{key} = {text} is remote (checked by the job when it starts)")
            continue
        path = Path(text).expanduser()
        report.check(
            key,
            path.exists(),
            f"{key} = {text} "
            + ("exists" if path.exists() else "does not exist; fix the path or mount the data before launching"),
        )
    for scheme in sorted(schemes):
        needed, alternatives = _REMOTE_ENV.get(scheme, ((), ()))
        for name in (*needed, *alternatives):
            report.env[name] = env_state(name)
        credentials = (
            not needed or all(os.environ.get(n) for n in needed) or any(os.environ.get(n) for n in alternatives)
        )
        report.check(
            f"{scheme} credentials",
            credentials,
            f"{scheme}:// credentials in the environment"
            if credentials
            else f"{scheme}:// data but {', '.join(needed)} not all SET; the job will rely on other "
            f"credentials (instance role, config files)",
            warn_only=True,
        )
    if get_dotted(base_spec, "wandb.enable") and get_dotted(base_spec, "wandb.mode") == "online":
        report.env["WANDB_API_KEY"] = env_state("WANDB_API_KEY")
        report.check(
            "wandb key",
            report.env["WANDB_API_KEY"] == "SET",
            f"wandb.mode is online and WANDB_API_KEY is {report.env['WANDB_API_KEY']}",
            warn_only=True,
        )
    from mal.automl.algorithms import ALGORITHMS

    algorithm = ALGORITHMS.get(settings.algorithm)
    if algorithm is not None and algorithm.needs_llm:
        key_names = ("MAL_LLM_API_KEY", "OPENAI_API_KEY")
        for name in key_names:
            report.env[name] = env_state(name)
        # Only these two count: report.env also holds the data and W&B credentials, which are no LLM key.
        has_key = settings.llm_api_key is not None or any(report.env[name] == "SET" for name in key_names)
        report.check(
            "llm api key",
            has_key,
            "an LLM API key is set"
            if has_key
            else f"algorithm {settings.algorithm} needs llm_api_key, MAL_LLM_API_KEY or OPENAI_API_KEY",
            warn_only=True,
        )
        report.check(
            "llm endpoint",
            bool(settings.llm_endpoint),
            f"llm_endpoint = {settings.llm_endpoint}"
            if settings.llm_endpoint
            else f"algorithm {settings.algorithm} needs automl_settings.llm_endpoint",
        )
    report.env["CUDA_VISIBLE_DEVICES"] = env_state("CUDA_VISIBLE_DEVICES")
    return report


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = max(0.0, float(seconds))
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def review_markdown(review: Mapping[str, Any]) -> str:
    """The launch review as markdown (saved as launch_review.md and printed before confirming)."""
    lines = [
        f"# AutoML launch review: {review['workspace']}",
        "",
        f"- algorithm: **{review['algorithm']}** (metric `{review['metric']}`, {review['direction']})",
        f"- budget: {review['budget_text']}",
        f"- concurrency: {review['concurrency']} trial(s) at once on {review['devices']}",
        f"- baseline: {review['baseline_text']}",
        f"- estimated wall time: {review['estimate_text']}",
        "",
        "## Search space",
        "",
        "| parameter | type | range / choices |",
        "|---|---|---|",
    ]
    for param in review["space"]:
        span = (
            f"[{param['low']}, {param['high']}]" + (" log" if param.get("log_scale") else "")
            if "low" in param
            else ", ".join(map(str, param.get("choices", [])))
        )
        lines.append(f"| `{param['name']}` | {param['type']} | {span} |")
    lines += ["", "## Preflight", ""]
    for check in review["preflight"]["checks"]:
        lines.append(f"- {check.get('level', 'ok' if check['ok'] else 'error')}: {check['detail']}")
    if review["preflight"]["env"]:
        lines.append("- environment: " + ", ".join(f"{k}={v}" for k, v in sorted(review["preflight"]["env"].items())))
    lines += ["", f"Trial command: `{' '.join(review['command'])}`", ""]
    return redact_text("\n".join(lines))
