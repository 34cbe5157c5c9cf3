"""Reading a spec: YAML file + `dotted.key=value` overrides -> a validated `ExperimentSpec`.

Every mistake becomes a `SpecError` with one sentence naming the file, the key, the value and the fix.
"""

from __future__ import annotations

import difflib
import os
import reprlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from mal.dotted import deep_merge, set_dotted
from mal.errors import SpecError
from mal.presets import find_preset, preset_names
from mal.safe_yaml import YamlRefused, load_text
from mal.spec.schema import ExperimentSpec

MAX_SPEC_BYTES = 1_000_000

# Error messages quote the offending value; YAML aliases can make a 1 kB file expand to billions of items
# ("billion laughs"), so the quote is bounded instead of repr() of the whole value.
_value_repr = reprlib.Repr()
_value_repr.maxlevel = 2
_value_repr.maxlist = _value_repr.maxtuple = _value_repr.maxdict = _value_repr.maxset = 4
# A string up to 240 characters is quoted whole: real paths (temp and cluster folders) often pass 80, and a
# user must see the path that is wrong; only longer values are shortened.
_value_repr.maxstring = _value_repr.maxother = 240


def short_repr(value: Any) -> str:
    """repr(value), cut to a few items per level and a bounded length."""
    return _value_repr.repr(value)


def iter_keys(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield (dotted key, field info) for every leaf of a spec model."""
    for name, info in model.model_fields.items():
        annotation = info.annotation
        dotted = f"{prefix}{name}"
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from iter_keys(annotation, dotted + ".")
        else:
            yield dotted, info


def all_keys() -> list[str]:
    return [key for key, _ in iter_keys(ExperimentSpec)]


def _sections() -> set[str]:
    return {
        name
        for name, info in ExperimentSpec.model_fields.items()
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
    }


def suggest_key(unknown: str) -> str | None:
    """The valid key a user most likely meant: same leaf name in another section first, then the name other tools
    give it (`learning_rate`, `epochs`, ...), then spelling."""
    keys = all_keys()
    leaf = unknown.rsplit(".", 1)[-1]
    same_leaf = [key for key in keys if key.rsplit(".", 1)[-1] == leaf]
    if same_leaf:
        return same_leaf[0]
    # Names from PyTorch Lightning, Hugging Face, timm, mmdet and detectron2 configs: spelling alone maps some of
    # them to an unrelated key (learning_rate -> train.margin_rate, weight_decay -> nothing).
    synonyms = {
        "train.lr": ("learning_rate", "base_lr", "initial_lr", "lr0", "max_lr"),
        "train.num_epochs": ("epochs", "epoch", "max_epochs", "num_epoch", "n_epochs", "total_epochs",
                             "num_train_epochs"),
        "train.wd": ("weight_decay", "decay"),
        "train.batch_size": ("batch", "bs", "batchsize", "train_batch_size", "per_device_train_batch_size",
                             "ims_per_batch", "samples_per_gpu"),
        "train.warmup_epochs": ("warmup", "warmup_steps", "warmup_iters"),
        "train.num_gpus": ("gpus", "num_gpu", "n_gpus", "devices"),
        "train.resume_training_checkpoint_path": ("resume", "resume_from", "ckpt_path", "resume_checkpoint"),
        "train.pretrained_model_path": ("pretrained", "weights", "pretrained_weights", "load_from", "init_weights"),
        "train.optim_type": ("optimizer", "optim"),
        "train.clip_grad_norm": ("grad_clip", "clip_grad", "gradient_clip_val", "max_grad_norm"),
        "train.use_amp": ("amp", "fp16", "mixed_precision", "precision"),
        "train.keep_last_checkpoints": ("save_top_k", "keep_checkpoints", "max_checkpoints", "save_total_limit",
                                        "max_keep_ckpts", "keep_last"),
        "train.checkpoint_interval": ("save_interval", "ckpt_interval", "save_every", "checkpoint_period"),
        "train.validation_interval": ("val_interval", "eval_interval", "check_val_every_n_epoch", "eval_period"),
        "model.teacher_momentum": ("ema", "ema_decay", "ema_momentum", "momentum_teacher"),
        "model.vit_dpr": ("drop_path", "drop_path_rate"),
        "dataset.crop_size": ("image_size", "img_size", "input_size", "resolution"),
        "dataset.num_workers_per_gpu": ("workers", "num_workers", "workers_per_gpu"),
        "results_dir": ("output_dir", "out_dir", "outdir", "output", "work_dir", "save_dir", "log_dir"),
    }
    wanted = leaf.lower().replace("-", "_")
    for target, names in synonyms.items():
        if wanted in names and target in keys:
            # `pretrain.epochs` means pretrain.num_epochs: the same leaf in the section the user wrote, if it has it.
            section = unknown.split(".", 1)[0] if "." in unknown else ""
            own = f"{section}.{target.rsplit('.', 1)[-1]}"
            return own if section and own in keys else target
    close = difflib.get_close_matches(unknown, keys, n=1, cutoff=0.6)
    if close:
        return close[0]
    close_leaf = difflib.get_close_matches(leaf, [key.rsplit(".", 1)[-1] for key in keys], n=1, cutoff=0.7)
    if close_leaf:
        return next(key for key in keys if key.rsplit(".", 1)[-1] == close_leaf[0])
    return None


def _shown_key(key: str) -> str:
    """The key as typed, or its repr when it holds a newline or another unprintable character: an error stays
    one line whatever the user typed."""
    return key if key.isprintable() else short_repr(key)


def _unknown_key_error(source: str, key: str) -> SpecError:
    hint = suggest_key(key)
    did_you_mean = f"; did you mean {hint}?" if hint else "; run `mal schema --out DIR` to list the valid keys."
    return SpecError(f"{source}: unknown key {_shown_key(key)}{did_you_mean}")


def _check_known_keys(data: Mapping[str, Any], source: str) -> None:
    """Unknown keys anywhere in the tree, reported with the nearest valid key (before pydantic sees them)."""
    leaves = set(all_keys())
    sections = _sections()

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for raw_key, value in node.items():
            key = f"{prefix}{raw_key}"
            if not isinstance(raw_key, str):
                raise SpecError(
                    f"{source}: key {short_repr(raw_key)} under '{prefix or 'top level'}' must be a string."
                )
            if key in sections:
                if value is None:
                    continue
                if not isinstance(value, Mapping):
                    raise SpecError(f"{source}: {key} must be a mapping of keys, got {short_repr(value)}.")
                walk(value, key + ".")
            elif key not in leaves:
                if isinstance(value, Mapping) and value:
                    # A misspelt section: name its first key in full, so the hint can point at the right place.
                    key = f"{key}.{next(iter(value))}"
                raise _unknown_key_error(source, key)

    walk(data, "")


def parse_override(text: str) -> tuple[str, Any]:
    """`train.lr=1e-5` -> ("train.lr", 1e-05); the value is read as a YAML scalar or list."""
    if "=" not in text:
        raise SpecError(f"override {short_repr(text)} must look like key.path=value, e.g. train.lr=1e-5.")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise SpecError(f"override {short_repr(text)} has no key before '='.")
    try:
        value = load_text(raw) if raw.strip() else None
    except YamlRefused as exc:
        raise SpecError(f"override {_shown_key(key)}: value {short_repr(raw)} {exc}.") from None
    # YAML 1.1 reads 1e-5 (no dot) as a string; pydantic's lax mode turns it into the float users mean.
    return key, value


def apply_override(data: dict[str, Any], key: str, value: Any, source: str = "command line") -> None:
    leaves = set(all_keys())
    if key not in leaves:
        raise _unknown_key_error(source, key)
    set_dotted(data, key, value)


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    spec_path = Path(path)
    if not spec_path.is_file():
        raise SpecError(f"spec file {spec_path} does not exist; pass an existing YAML file with -e.")
    if spec_path.stat().st_size > MAX_SPEC_BYTES:
        raise SpecError(f"spec file {spec_path} is larger than {MAX_SPEC_BYTES} bytes; is it really a spec?")
    try:
        text = spec_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"spec file {spec_path} cannot be read as UTF-8 text ({exc.__class__.__name__}).") from None
    try:
        data = load_text(text)
    except YamlRefused as exc:
        raise SpecError(f"spec file {spec_path} {exc}.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(f"spec file {spec_path} must hold a mapping of sections, got {type(data).__name__}.")
    return data


def _describe(error: Mapping[str, Any]) -> tuple[str, str]:
    key = ".".join(str(part) for part in error["loc"] if not str(part).startswith("function-"))
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return key, message


def validate(data: Mapping[str, Any], source: str) -> ExperimentSpec:
    _check_known_keys(data, source)
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key, message = _describe(first)
        if first["type"] == "extra_forbidden":
            raise _unknown_key_error(source, key) from None
        value = first.get("input")
        where = f"{key} = {short_repr(value)}" if key and not isinstance(value, Mapping) else key
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        # A check across sections (dataset.crop_size against model.arch) has no single key: its message names them.
        raise SpecError(f"{source}: {where + ': ' if where else ''}{message}{more}.") from None


SpecSource = str | os.PathLike[str]


def resolve_spec_file(text: SpecSource) -> tuple[Path, str]:
    """The file `-e TEXT` names and how errors call it: an existing path as given, else a shipped preset by name
    (`cpu-natural` or `cpu_natural`); anything else is one error listing the presets."""
    path = Path(text)
    if path.exists() or path.is_symlink():
        return path, str(text)  # a file (read_yaml says what is wrong with a folder or an unreadable file)
    preset = find_preset(str(text))
    if preset is not None:
        return preset, f"preset {preset.stem.replace('_', '-')}"
    raise SpecError(
        f"spec file {text} does not exist and is not a shipped preset; pass an existing YAML file with -e, or one "
        f"of the presets {', '.join(preset_names())} (`mal presets` describes them)."
    )


def load_spec(path: SpecSource | Sequence[SpecSource] | None, overrides: Sequence[str] = ()) -> ExperimentSpec:
    """Read one spec file, or several merged in order (later files win; each may be a shipped preset's name), or
    start from the defaults when `path` is None or empty; then apply the overrides."""
    paths: list[SpecSource] = [] if path is None else [path] if isinstance(path, str | os.PathLike) else list(path)
    data: dict[str, Any] = {}
    sources = []
    for each in paths:
        file, source = resolve_spec_file(each)
        part = read_yaml(file)
        _check_known_keys(part, source)  # before merging, so an unknown key names the file that holds it
        data = deep_merge(data, part)
        sources.append(source)
    source = " + ".join(sources) or "defaults"
    for text in overrides:
        key, value = parse_override(text)
        apply_override(data, key, value)
    return validate(data, source if not overrides else f"{source} (with overrides)")


def spec_to_dict(spec: ExperimentSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json")


def dump_spec_yaml(spec: ExperimentSpec) -> str:
    return yaml.safe_dump(spec_to_dict(spec), sort_keys=False)
