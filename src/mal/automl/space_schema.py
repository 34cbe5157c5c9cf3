"""Reading one searched key from a JSON schema leaf: its type, range, choices, weights and log scale (TAO's
annotations), narrowed by the study's `custom_param_ranges`."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mal.automl.space_params import Param, ParamKind, same_value
from mal.errors import SpecError

_KIND_BY_TYPE: dict[str, ParamKind] = {
    "number": "float",
    "float": "float",
    "integer": "int",
    "int": "int",
    "boolean": "bool",
    "bool": "bool",
    "string": "categorical",
    "categorical": "categorical",
    "ordered": "categorical",
    "ordered_int": "categorical",
    "array": "categorical",
    "list": "categorical",
    "collection": "categorical",
}
_LOG_NAME = re.compile(r"(^|_)(lr|wd)($|_)|learning_rate|weight_decay")


def schema_leaves(properties: Mapping[str, Any], prefix: str) -> Iterable[tuple[str, dict[str, Any]]]:
    """Every leaf of a schema's nested `properties`, with its dotted name."""
    for key, node in properties.items():
        if not isinstance(node, Mapping):
            continue
        name = f"{prefix}{key}"
        if isinstance(node.get("properties"), Mapping):
            yield from schema_leaves(node["properties"], f"{name}.")
        else:
            yield name, dict(node)


def _leaf_type(leaf: Mapping[str, Any]) -> str | None:
    kind = leaf.get("type")
    if isinstance(kind, list):
        kind = next((item for item in kind if item != "null"), None)
    return kind


def param_from_leaf(name: str, leaf: Mapping[str, Any], default: Any, custom: Any, source: str) -> Param:
    """The `Param` a schema leaf describes, narrowed by its `custom_param_ranges` entry (`custom`)."""
    raw_type = _leaf_type(leaf)
    enum = [value for value in leaf.get("enum") or [] if value is not None]
    kind = _KIND_BY_TYPE.get(str(raw_type).lower()) if raw_type is not None else ("categorical" if enum else None)
    if kind is None:
        raise SpecError(f"AutoML parameter {name} in {source} has type {raw_type!r}, which AutoML cannot search.")
    if enum and kind in ("float", "int"):
        kind = "categorical"  # a numeric key restricted to listed values is searched over those values
    math_cond = leaf.get("math_cond") or None
    depends_on = leaf.get("depends_on") or None
    if kind == "bool":
        return _with_custom_choices(
            Param(name, "bool", choices=(False, True), weights=_weights(name, leaf, 2), default=default), custom
        )
    if kind == "categorical":
        if not enum:
            raise SpecError(
                f"AutoML parameter {name} in {source} has no enum of choices; give it an enum or a numeric type."
            )
        param = Param(
            name, "categorical", choices=tuple(enum), weights=_weights(name, leaf, len(enum)), default=default
        )
        return _with_custom_choices(param, custom)

    hard_low = _first_number(leaf, "valid_min", "minimum", "exclusiveMinimum")
    hard_high = _first_number(leaf, "valid_max", "maximum", "exclusiveMaximum")
    low = _first_number(leaf, "minimum", "exclusiveMinimum", "valid_min")
    high = _first_number(leaf, "maximum", "exclusiveMaximum", "valid_max")
    if custom is not None:
        custom_low, custom_high = _custom_bounds(name, custom)
        for value, limit, word in ((custom_low, hard_low, "below"), (custom_high, hard_high, "above")):
            if limit is not None and (value < limit if word == "below" else value > limit):
                raise SpecError(
                    f"custom_param_ranges sets {name} to [{custom_low}, {custom_high}], {word} the schema's "
                    f"limit {limit}; choose a range inside [{hard_low}, {hard_high}]."
                )
        low, high = custom_low, custom_high
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        raise SpecError(
            f"AutoML parameter {name} in {source} has no finite search range (minimum/maximum); "
            f"give one in custom_param_ranges."
        )
    if low > high:
        raise SpecError(f"AutoML parameter {name} has minimum {low} above maximum {high}; swap them.")
    if kind == "int":
        low, high = math.ceil(low), math.floor(high)
    log = leaf.get("log_scale")
    if log is None:
        leaf_name = name.rsplit(".", 1)[-1].lower()
        log = bool(_LOG_NAME.search(leaf_name)) and low > 0 and high / low >= 100
    if log and low <= 0:
        raise SpecError(f"AutoML parameter {name} is log scaled but its range starts at {low}; make it positive.")
    return Param(
        name, kind, low=low, high=high, log=bool(log), math_cond=math_cond, depends_on=depends_on, default=default
    )


def _first_number(leaf: Mapping[str, Any], *keys: str) -> float | None:
    for key in keys:
        value = leaf.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and value.strip().lower() in ("inf", "-inf"):
            return float(value)
    return None


def _weights(name: str, leaf: Mapping[str, Any], count: int) -> tuple[float, ...] | None:
    weights = leaf.get("option_weights")
    if weights is None:
        return None
    if len(weights) != count or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise SpecError(
            f"AutoML parameter {name} has option_weights {weights}; give {count} non-negative weights, one per "
            f"choice, with a positive sum."
        )
    return tuple(float(w) for w in weights)


def _custom_bounds(name: str, custom: Any) -> tuple[float, float]:
    if isinstance(custom, Mapping):
        low = next((custom[k] for k in ("min", "minimum", "valid_min", "low") if k in custom), None)
        high = next((custom[k] for k in ("max", "maximum", "valid_max", "high") if k in custom), None)
    elif isinstance(custom, Sequence) and not isinstance(custom, str) and len(custom) == 2:
        low, high = custom
    else:
        low = high = None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)):
        raise SpecError(
            f"custom_param_ranges for {name} is {custom!r}; give [low, high] or {{'min': low, 'max': high}}."
        )
    if low > high:  # type: ignore[operator]
        raise SpecError(f"custom_param_ranges for {name} has min {low} above max {high}; swap them.")
    return float(low), float(high)  # type: ignore[arg-type]


def _with_custom_choices(param: Param, custom: Any) -> Param:
    if custom is None:
        return param
    options = (
        custom.get("options", custom.get("enum", custom.get("valid_options")))
        if isinstance(custom, Mapping)
        else custom
    )
    if not isinstance(options, Sequence) or isinstance(options, str) or not options:
        raise SpecError(f"custom_param_ranges for {param.name} is {custom!r}; give a list of its choices.")
    for option in options:
        if not any(same_value(option, choice) for choice in param.choices):
            raise SpecError(
                f"custom_param_ranges offers {option!r} for {param.name}, which the schema does not allow; "
                f"choose among {list(param.choices)}."
            )
    weights = None
    if param.weights is not None:
        weights = tuple(param.weights[[same_value(o, c) for c in param.choices].index(True)] for o in options)
        weights = weights if sum(weights) > 0 else None
    return Param(param.name, param.kind, choices=tuple(options), weights=weights, default=param.default)
