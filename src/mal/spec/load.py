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

from mal.dotted import set_dotted
from mal.errors import SpecError
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
    """The valid key a user most likely meant: same leaf name in another section first, then spelling."""
    keys = all_keys()
    leaf = unknown.rsplit(".", 1)[-1]
    same_leaf = [key for key in keys if key.rsplit(".", 1)[-1] == leaf]
    if same_leaf:
        return same_leaf[0]
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
        where = f"{key} = {short_repr(value)}" if key and not isinstance(value, Mapping) else (key or "spec")
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise SpecError(f"{source}: {where}: {message}{more}.") from None


def load_spec(path: str | os.PathLike[str] | None, overrides: Sequence[str] = ()) -> ExperimentSpec:
    """Read a spec file (or start from the defaults when `path` is None) and apply overrides."""
    data = read_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "defaults"
    _check_known_keys(data, source)
    for text in overrides:
        key, value = parse_override(text)
        apply_override(data, key, value)
    return validate(data, source if not overrides else f"{source} (with overrides)")


def spec_to_dict(spec: ExperimentSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json")


def dump_spec_yaml(spec: ExperimentSpec) -> str:
    return yaml.safe_dump(spec_to_dict(spec), sort_keys=False)
