"""Checks before a study spends any compute, and the launch review the user confirms.

Preflight: the skill dir parses into a search space, the spec's local data paths exist, its remote data URLs
(s3://, gs://, any fsspec URL) exist and can be read, and the environment variables the study will need are reported
as SET or UNSET (never their values); URL passwords are shown as ***.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mal.automl.settings import AutoMLSettings
from mal.dotted import get_dotted
from mal.redaction import redact_text, redact_url, url_secrets
from mal.spec.schema import is_timm_name

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
# The remote data check as a whole gives up after this many seconds: a firewalled endpoint that drops packets
# would otherwise hold the launch for minutes of client retries before saying anything.
REMOTE_CHECK_TIMEOUT_S = 10.0
# Per request on s3: fail on the first refused or silent connection instead of botocore's retries with backoff.
# total_max_attempts counts the first request; `max_attempts: 1` still let aiobotocore try twice.
_S3_CHECK_CONFIG = {"connect_timeout": 3, "read_timeout": 5, "retries": {"total_max_attempts": 1, "mode": "standard"}}
# The package fsspec needs for a scheme, named in the error when it is missing (fsspec's own message varies).
_FS_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}


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
    values: dict[str, str] = {}
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
        values[key] = str(value)
    # All remote values are probed at once, so several keys on one dead endpoint cost one timeout, not five.
    problems = check_remote_data({key: text for key, text in values.items() if "://" in text})
    for key, text in values.items():
        if key in problems:
            schemes.add(text.split("://", 1)[0].lower())
            problem = problems[key]
            detail = f"{key} = {redact_url(text)} " + (problem or "exists and can be read")
            # The URL's password may also sit outside the URL in the text (a host parsed out of `p@ss@host`).
            report.check(key, problem is None, redact_text(detail, url_secrets(text)))
            continue
        path = Path(text).expanduser()
        if key == "train.pretrained_model_path" and not path.exists() and is_timm_name(text):
            report.check(key, True, f"{key} = {text} is a timm model name (each job reads it from its local cache)")
            continue
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


def check_remote_data(urls: Mapping[str, str], timeout: float | None = None) -> dict[str, str | None]:
    """{key: problem} for each remote data URL: None when it can be read, else what went wrong and what to do.

    Each distinct URL is probed in its own daemon thread and all of them share one deadline (`timeout`, default
    REMOTE_CHECK_TIMEOUT_S): a probe still waiting then counts as an unreachable endpoint, and its thread is left
    to end on its own rather than hold the launch.
    """
    limit = REMOTE_CHECK_TIMEOUT_S if timeout is None else timeout
    found: dict[str, str | None] = {}
    threads: dict[str, threading.Thread] = {}
    for url in dict.fromkeys(urls.values()):

        def probe(url: str = url) -> None:
            found[url] = remote_read_problem(url)

        threads[url] = threading.Thread(target=probe, name="mal-preflight-probe", daemon=True)
        threads[url].start()
    deadline = time.monotonic() + limit
    for thread in threads.values():
        thread.join(max(0.0, deadline - time.monotonic()))
    return {
        key: found[url]
        if url in found
        else f"cannot be read (no answer within {limit:g} s: the endpoint is unreachable or too slow); "
        f"{_unreachable_advice(_scheme_of(url))} before launching"
        for key, url in urls.items()
    }


def remote_read_problem(url: str) -> str | None:
    """None when the fsspec URL exists and its first byte (a file) or its listing (a folder or prefix) can be read;
    otherwise one clause saying what went wrong and what to do. It never quotes the client's error text, which
    may hold the URL's password.

    The filesystem is opened as mal.data opens its sources, `fsspec.core.url_to_fs(url)`, so the endpoint and
    credentials come from the same environment the training reads (AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID,
    AWS_PROFILE, FSSPEC_S3_* ...); only the timeouts are the preflight's own. (mal.automl may not import mal.data.)
    """
    scheme = _scheme_of(url)
    # A fresh instance, not fsspec's cached one: the cache keys on arguments, not on the endpoint/credential
    # variables, which may have changed since an earlier filesystem of this process was made.
    options: dict[str, Any] = {"skip_instance_cache": True}
    if scheme in ("s3", "s3a"):
        options["config_kwargs"] = _S3_CHECK_CONFIG
    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(url, **options)
        if scheme in ("s3", "s3a"):
            fs.retries = 1  # s3fs retries 5 times with backoff around botocore; a class attribute is its only knob
        if fs.info(path).get("type") != "directory":
            fs.cat_file(path, start=0, end=1)  # HEAD answers without the right to GET the object
    except Exception as exc:  # every failure is reported; the launch must not crash on a probe
        return _describe_failure(exc, scheme)
    return None


def _scheme_of(url: str) -> str:
    return url.split("://", 1)[0].lower()


def _unreachable_advice(scheme: str) -> str:
    if scheme in ("s3", "s3a"):  # botocore, which s3fs runs on, reads a non-AWS endpoint from these
        return (
            "check the endpoint (AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL when it is not AWS), the network and any proxy"
        )
    return "check the host, the network and any proxy"


def _describe_failure(exc: Exception, scheme: str) -> str:
    names = {cls.__name__ for cls in type(exc).__mro__}
    if isinstance(exc, ImportError):
        package = _FS_PACKAGES.get(scheme) or exc.name or "the fsspec filesystem package for it"
        return (
            f"cannot be read here: {scheme}:// needs the package {package}; install it where the study and its "
            "trainings run"
        )
    if isinstance(exc, FileNotFoundError):
        return (
            "does not exist (not found: no such bucket, object or prefix); fix the URL or upload the data before "
            "launching"
        )
    # s3fs turns AccessDenied into PermissionError; HTTP-based clients (aiohttp, gcsfs) carry the 403 as a status.
    if isinstance(exc, PermissionError) or 403 in (getattr(exc, "status", None), getattr(exc, "code", None)):
        return (
            "cannot be read (access denied); give the credentials in the environment read access to it, or set "
            "ones that have it, before launching"
        )
    if names & {"NoCredentialsError", "PartialCredentialsError", "ProfileNotFound", "CredentialRetrievalError"}:
        needed, alternatives = _REMOTE_ENV.get(scheme, ((), ()))
        hint = " and ".join(needed) + (f", or {' or '.join(alternatives)}" if alternatives else "")
        return (
            "cannot be read (no usable credentials were found); set "
            + (hint or "the store's credentials")
            + " before launching"
        )
    if isinstance(exc, ConnectionError | TimeoutError) or any("Connect" in n or "Timeout" in n for n in names):
        return f"cannot be read (endpoint unreachable); {_unreachable_advice(scheme)} before launching"
    return f"cannot be read ({type(exc).__name__}); check the URL, the endpoint and the credentials before launching"


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
