"""The AutoML study file (automl.yaml): its keys, what each may hold, reading and validating it before anything
is written, and the skill dir `mal schema` generates when the file names none."""

from __future__ import annotations

import difflib
import inspect
import math
import reprlib
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mal.errors import SpecError, UserError
from mal.safe_yaml import load_mapping

STUDY_KEYS = (
    "skill_dir",
    "workspace_dir",
    "algorithm",
    "automl_algorithm",
    "spec",
    "automl_settings",
    "spec_overrides",
    "hyperparameters",
    "automl_hyperparameters",
    "custom_param_ranges",
    "poll_interval",
    "command",
    "kill_grace",
    "platform",
    "slurm",
    "heartbeat_interval",
    "grace_period",
)


# Values quoted in an error stay short whatever the file holds (a long string, a big list).
_shown = reprlib.Repr()
_shown.maxlevel = 2
_shown.maxlist = _shown.maxtuple = _shown.maxdict = _shown.maxset = 4
_shown.maxstring = _shown.maxother = 60


def shown(value: Any) -> str:
    """`value` quoted short enough for an error message."""
    return _shown.repr(value)


def _number(low: float, *, strict: bool) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if ok and (value > low if strict else value >= low):
            return None
        return f"must be a number of seconds {'>' if strict else '>='} {low:g}"

    return check


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) and value.strip() else "must be a non-empty string"


def _mapping(value: Any) -> str | None:
    if not isinstance(value, Mapping):
        return f"must be a mapping of key: value, not a {type(value).__name__}"
    bad = next((key for key in value if not isinstance(key, str)), None)
    return None if bad is None else f"has key {shown(bad)}, which is not a string"


def _names(value: Any) -> str | None:
    if isinstance(value, list) and value and all(isinstance(item, str) and item for item in value):
        return None
    return "must be a non-empty list of dotted spec keys, e.g. [train.lr, train.weight_decay]"


def command_problem(value: Any) -> str | None:
    """What is wrong with a trial command (a string or a list of arguments), or None when nothing is."""
    if isinstance(value, str) and value.strip():
        return None
    if isinstance(value, list) and value and all(isinstance(p, str | int | float) for p in value):
        return None if not any(isinstance(p, bool) for p in value) else "must not hold true/false"
    return "must be a list of arguments, e.g. [python, -m, mal, '{action}', -e, '{spec}']"


def _platform_name(value: Any) -> str | None:
    return None if value in ("local", "slurm") else "must be local or slurm"


def _slurm(value: Any) -> str | None:
    problem = _mapping(value)
    if problem is not None:
        return problem
    from mal.automl.platforms.slurm import SlurmPlatform

    known = set(inspect.signature(SlurmPlatform).parameters)
    unknown = sorted(set(value) - known)
    if unknown:
        return f"has unknown key(s) {unknown}; use {sorted(known)}"
    kinds: dict[str, Callable[[Any], bool]] = {
        "max_concurrent": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
        "cpus_per_task": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
        "use_gpus": lambda v: isinstance(v, bool),
        "extra_sbatch_args": lambda v: isinstance(v, list) and all(isinstance(a, str) for a in v),
        "env": lambda v: isinstance(v, Mapping) and all(isinstance(x, str) for pair in v.items() for x in pair),
        "command": lambda v: command_problem(v) is None,
    }
    for key, item in value.items():
        ok = kinds.get(key, lambda v: isinstance(v, str) and bool(v.strip()))(item)
        if item is not None and not ok:
            return f"has {key} = {shown(item)}, which is not a valid value for it"
    return None


# What each study key may hold (None always means "the default"); a problem is a clause naming what it must be.
STUDY_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "skill_dir": _text,
    "workspace_dir": _text,
    "algorithm": _text,
    "automl_algorithm": _text,
    "spec": _text,
    "automl_settings": _mapping,
    "spec_overrides": _mapping,
    "hyperparameters": _names,
    "automl_hyperparameters": _names,
    "custom_param_ranges": _mapping,
    "poll_interval": _number(0, strict=True),
    "command": command_problem,
    "kill_grace": _number(0, strict=False),
    "platform": _platform_name,
    "slurm": _slurm,
    "heartbeat_interval": _number(0, strict=True),
    "grace_period": _number(0, strict=True),
}
assert set(STUDY_CHECKS) == set(STUDY_KEYS)


def read_study_file(path: Path) -> dict[str, Any]:
    """The study file's keys, each checked for its type and the settings validated: every mistake is one
    SpecError naming the file and the key, raised before anything is written."""
    data = load_mapping(
        path, f"AutoML study file {path}", "must hold a mapping of keys, not a {kind}; see `mal automl --help`.",
        {"missing": "; pass the path of your automl.yaml"},
    )  # fmt: skip
    for key in data:
        if key not in STUDY_KEYS:
            hint = difflib.get_close_matches(str(key), STUDY_KEYS, n=1, cutoff=0.6)
            tip = f" Did you mean {hint[0]}?" if hint else f" Known keys: {', '.join(STUDY_KEYS)}."
            raise SpecError(f"AutoML study file {path} has unknown key {shown(key)}.{tip}")
    for ours, theirs in (("hyperparameters", "automl_hyperparameters"), ("algorithm", "automl_algorithm")):
        if ours in data and theirs in data:
            raise SpecError(f"AutoML study file {path} sets both {ours} and {theirs}; keep one.")
    for key, value in data.items():
        problem = None if value is None else STUDY_CHECKS[key](value)
        if problem is not None:
            raise SpecError(f"AutoML study file {path}: {key} = {shown(value)} {problem}.")
    if data.get("automl_algorithm") is not None:
        data["algorithm"] = data.pop("automl_algorithm")  # TAO's name for the same key
    if data.get("spec") is not None:
        data["spec_overrides"] = _with_base_spec(path, data["spec"], data.get("spec_overrides"))
    workspace = data.get("workspace_dir")
    if workspace is not None and Path(workspace).expanduser().exists() and not Path(workspace).expanduser().is_dir():
        raise SpecError(f"AutoML study file {path}: workspace_dir {workspace} is a file; name a folder.")
    if data.get("command") is not None:
        from mal.automl.platforms.base import command_template

        try:
            command_template(data["command"])
        except SpecError as exc:
            raise SpecError(f"AutoML study file {path}: {exc}") from None
    _study_settings(data, f"AutoML study file {path}: automl_settings")
    return dict(data)


def _with_base_spec(path: Path, spec: str, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """The study's overrides on top of the base spec it names (`spec:`, relative to the study file's folder): the
    spec file is the user's own, so everything in it counts as written by the user, as spec_overrides do."""
    from mal.dotted import deep_merge, nest_dotted

    base_path = (path.parent / Path(spec).expanduser()).resolve()
    base = load_mapping(
        base_path, f"AutoML study file {path}: spec {spec}", "must hold a mapping of spec keys, not a {kind}.",
        {"missing": f"; `spec:` is read relative to {path.parent}"},
    )  # fmt: skip
    return deep_merge(nest_dotted(base), nest_dotted(overrides or {}))


def study_value(study: Mapping[str, Any], key: str, default: Any) -> Any:
    """A study key's value; a key written without a value (`kill_grace:`) means its default."""
    value = study.get(key)
    return default if value is None else value


def _study_settings(study: Mapping[str, Any], source: str) -> Any:
    """The study's automl_settings, validated with its `algorithm` key as the runner will see them."""
    from mal.automl.settings import settings_for_algorithm

    return settings_for_algorithm(study.get("automl_settings"), study.get("algorithm"), source=source)


def generate_skill_dir(out: Path) -> Path:
    """Write our skill layout with `mal schema` (a subprocess: AutoML never imports the spec models' users)."""
    done = subprocess.run(
        [sys.executable, "-m", "mal", "schema", "--out", str(out)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise UserError(f"`mal schema --out {out}` failed: {done.stderr.strip().splitlines()[-1:]}")
    return out


def run_arguments(study: Mapping[str, Any], settings: Mapping[str, Any], yes: bool) -> dict[str, Any]:
    """The keyword arguments of `AutoMLRunner.run` a study file asks for."""
    return {
        "automl_algorithm": study.get("algorithm"),
        "automl_settings": settings,
        "spec_overrides": study.get("spec_overrides"),
        "automl_hyperparameters": study.get("hyperparameters") or study.get("automl_hyperparameters"),
        "custom_param_ranges": study.get("custom_param_ranges"),
        "yes": yes,
    }
