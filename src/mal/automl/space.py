"""The search space: which spec keys AutoML tunes, their ranges, and how to sample, encode and repair them.

A space is read from a TAO-style skill dir (`schemas/<action>.schema.json` + `references/spec_template_<action>
.yaml`, written by `mal schema --out DIR`) or built directly from a schema dict. Leaves may be written in JSON
schema types (`number`, `integer`, `boolean`, `string`, `array`) or in TAO's (`float`, `int`, `bool`,
`ordered`, `categorical`).

Leaf annotations honoured (TAO's names):
- `minimum`/`maximum`: the search range; `valid_min`/`valid_max` (when present) are the hard limits a custom
  range must stay inside.
- `enum` + `option_weights`: categorical choices and their sampling weights.
- `math_cond`: `"> 0.0"` (and `>=`, `<`, `<=` with a number), `"^ 2"` (a power of 2), `"/ 8"` (a multiple of
  8), `"> depends_on"` (greater than the value of the key named by `depends_on`).
- `depends_on` without `"> depends_on"`: the value may not exceed that key's value (an interval in epochs can
  not be longer than the run).
- `log_scale`: sample and encode on a log scale; when absent, names with `lr`, `learning_rate`, `wd` or
  `weight_decay` whose range is positive and spans at least a factor of 100 are log scaled.

Configs are flat dicts keyed by dotted names (`{"train.lr": 3e-6}`); `nest()` turns them into spec dicts.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mal.dotted import get_dotted, nest_dotted
from mal.errors import SpecError
from mal.safe_yaml import YamlRefused, load_file

ParamKind = Literal["float", "int", "categorical", "bool"]

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
_COMPARISON = re.compile(r"^(>=|>|<=|<)\s*(depends_on|[-+]?[0-9.]+(?:[eE][-+]?\d+)?)$")
_POWER = re.compile(r"^\^\s*(\d+)$")
_MULTIPLE = re.compile(r"^/\s*(\d+)$")


@dataclass(frozen=True)
class Param:
    """One tunable key.

    `low`/`high` bound numeric kinds (inclusive); `choices`/`weights` describe categorical and bool kinds.
    `math_cond` and `depends_on` are TAO's annotations (see the module docstring); `default` is the value the
    spec template uses.
    """

    name: str
    kind: ParamKind
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    weights: tuple[float, ...] | None = None
    math_cond: str | None = None
    depends_on: str | None = None
    default: Any = None

    @property
    def is_numeric(self) -> bool:
        return self.kind in ("float", "int")

    @property
    def greater_than_parent(self) -> bool:
        return bool(self.math_cond) and self.math_cond.replace(" ", "") == ">depends_on"

    def describe(self) -> dict[str, Any]:
        """JSON-friendly description (used in reports and LLM prompts)."""
        out: dict[str, Any] = {"name": self.name, "type": self.kind}
        if self.is_numeric:
            out.update(low=self.low, high=self.high, log_scale=self.log)
        else:
            out["choices"] = list(self.choices)
        for key in ("math_cond", "depends_on", "default"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


# ---------------------------------------------------------------------------------------------------------------
# math_cond helpers


def _comparison(param: Param) -> tuple[str, float] | None:
    if not param.math_cond:
        return None
    match = _COMPARISON.match(param.math_cond.strip())
    if match is None or match.group(2) == "depends_on":
        return None
    return match.group(1), float(match.group(2))


def _allowed_grid(param: Param) -> np.ndarray | None:
    """The finite set of values a `^ N` or `/ N` condition leaves inside [low, high], or None."""
    if not param.math_cond or not param.is_numeric:
        return None
    cond = param.math_cond.strip()
    low, high = float(param.low), float(param.high)  # type: ignore[arg-type]
    if match := _POWER.match(cond):
        base = int(match.group(1))
        start = max(low, 1.0)
        if high < start:
            return np.array([], dtype=float)
        exponents = np.arange(math.ceil(math.log(start, base) - 1e-9), math.floor(math.log(high, base) + 1e-9) + 1)
        return np.asarray(base, dtype=float) ** exponents
    if match := _MULTIPLE.match(cond):
        step = int(match.group(1))
        return np.arange(math.ceil(low / step) * step, math.floor(high / step) * step + 1, step, dtype=float)
    return None


def _check_math_cond(param: Param) -> None:
    cond = param.math_cond
    if cond is None:
        return
    text = cond.strip()
    if not (_COMPARISON.match(text) or _POWER.match(text) or _MULTIPLE.match(text)):
        raise SpecError(
            f"Search parameter {param.name} has math_cond {cond!r}, which is not one of '> N', '>= N', '< N', "
            f"'<= N', '^ N', '/ N' or '> depends_on'; fix the schema."
        )
    if _COMPARISON.match(text) and "depends_on" in text and not param.depends_on:
        raise SpecError(f"Search parameter {param.name} has math_cond {cond!r} but no depends_on key; add one.")
    grid = _allowed_grid(param)
    if grid is not None and grid.size == 0:
        raise SpecError(
            f"Search parameter {param.name} has no value in [{param.low}, {param.high}] satisfying math_cond "
            f"{cond!r}; widen the range."
        )


# ---------------------------------------------------------------------------------------------------------------
# the space


@dataclass
class SearchSpace:
    """An ordered set of `Param`s (parents before the keys that depend on them)."""

    params: tuple[Param, ...]
    _index: dict[str, Param] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.params = _topological(self.params)
        self._index = {param.name: param for param in self.params}
        for param in self.params:
            if param.depends_on and param.depends_on not in self._index:
                raise SpecError(
                    f"Search parameter {param.name} depends on {param.depends_on}, which is not searched; "
                    f"add {param.depends_on} to the AutoML parameters."
                )
            _check_math_cond(param)

    # -- construction ------------------------------------------------------------------------------------------

    @classmethod
    def from_skill_dir(
        cls,
        skill_dir: str | Path,
        parameters: Sequence[str] | None = None,
        custom_param_ranges: Mapping[str, Any] | None = None,
        action: str = "train",
    ) -> SearchSpace:
        """Read `schemas/<action>.schema.json` (+ the spec template's defaults) from a skill dir.

        `parameters` defaults to the schema's `automl_default_parameters`. `custom_param_ranges` maps a searched
        key to `[low, high]`, `{"min": .., "max": ..}` or a list of choices; it must stay inside the schema.
        """
        root = Path(skill_dir)
        schema_path = root / "schemas" / f"{action}.schema.json"
        if not schema_path.is_file():
            raise SpecError(
                f"Skill dir {root} has no {schema_path.relative_to(root)}; write one with `mal schema --out {root}`."
            )
        try:
            schema = json.loads(schema_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise SpecError(f"{schema_path} is not valid JSON ({exc.msg} at line {exc.lineno}); rewrite it.") from exc
        template: dict[str, Any] = {}
        template_path = root / "references" / f"spec_template_{action}.yaml"
        if template_path.is_file():
            try:
                template = load_file(template_path) or {}
            except YamlRefused as exc:
                fix = "; rewrite it." if exc.reason == "syntax" else "."
                raise SpecError(f"{template_path} {exc}{fix}") from None
            if not isinstance(template, Mapping):
                raise SpecError(f"{template_path} must hold a mapping of spec sections; rewrite it with `mal schema`.")
        return cls.from_schema(schema, template, parameters, custom_param_ranges, source=str(schema_path))

    @classmethod
    def from_schema(
        cls,
        schema: Mapping[str, Any],
        template: Mapping[str, Any] | None = None,
        parameters: Sequence[str] | None = None,
        custom_param_ranges: Mapping[str, Any] | None = None,
        source: str = "the schema",
    ) -> SearchSpace:
        leaves = dict(_walk_leaves(schema.get("properties", {}), ""))
        if parameters is None:
            parameters = list(schema.get("automl_default_parameters") or [])
        if not parameters:
            raise SpecError(f"No AutoML parameters were given and {source} lists no automl_default_parameters.")
        disabled = set(schema.get("automl_disabled_parameters") or [])
        custom = dict(custom_param_ranges or {})
        for name in custom:
            if name not in parameters:
                raise SpecError(
                    f"custom_param_ranges names {name}, which is not among the searched parameters "
                    f"{list(parameters)}; add it to the AutoML parameters or drop its range."
                )
        params = []
        for name in dict.fromkeys(parameters):  # keeps order, drops repeats
            if name not in leaves:
                hint = difflib.get_close_matches(name, list(leaves), n=1, cutoff=0.6)
                tip = f" Did you mean {hint[0]}?" if hint else ""
                raise SpecError(f"AutoML parameter {name} is not a key of {source}.{tip}")
            leaf = leaves[name]
            if name in disabled or leaf.get("automl_enabled") is False:
                enabled = [key for key, value in leaves.items() if value.get("automl_enabled") and key not in disabled]
                raise SpecError(f"AutoML parameter {name} is disabled for search in {source}; choose among {enabled}.")
            default = get_dotted(template or {}, name, leaf.get("default"))
            params.append(_param_from_leaf(name, leaf, default, custom.get(name), source))
        return cls(tuple(params))

    # -- basic views -------------------------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return [param.name for param in self.params]

    def __len__(self) -> int:
        return len(self.params)

    def __getitem__(self, name: str) -> Param:
        return self._index[name]

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def describe(self) -> list[dict[str, Any]]:
        return [param.describe() for param in self.params]

    # -- values ------------------------------------------------------------------------------------------------

    def defaults(self) -> dict[str, Any]:
        """The spec template's value of every key (a canonical one where the template has none), repaired."""
        config: dict[str, Any] = {}
        for param in self.params:
            value = param.default
            if value is None or not _fits(param, value):
                value = _canonical(param)
            config[param.name] = value
        return self.repair(config)

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """One random config: log-uniform where log scaled, `option_weights` for choices, conditions met."""
        config: dict[str, Any] = {}
        for param in self.params:
            config[param.name] = self._sample_one(param, rng, config)
        return self.repair(config)

    def sample_param(self, name: str, rng: np.random.Generator, config: Mapping[str, Any]) -> Any:
        """A fresh random value for one key, given the values of the keys it depends on in `config`."""
        return self._sample_one(self._index[name], rng, config)

    def _sample_one(self, param: Param, rng: np.random.Generator, config: Mapping[str, Any]) -> Any:
        if not param.is_numeric:
            weights = None if param.weights is None else np.asarray(param.weights) / sum(param.weights)
            return param.choices[int(rng.choice(len(param.choices), p=weights))]
        low, high = self._dynamic_bounds(param, config)
        grid = _allowed_grid(param)
        if grid is not None:
            inside = grid[(grid >= low) & (grid <= high)]
            grid = inside if inside.size else grid
            return _cast(param, grid[int(rng.integers(grid.size))])
        if param.kind == "int":
            if param.log and low > 0:
                value = math.exp(rng.uniform(math.log(low - 0.5 if low > 0.5 else low), math.log(high + 0.5)))
                return int(min(max(round(value), low), high))
            return int(rng.integers(int(low), int(high) + 1))
        if param.log and low > 0:
            return float(math.exp(rng.uniform(math.log(low), math.log(high))))
        return float(rng.uniform(low, high))

    def _dynamic_bounds(self, param: Param, config: Mapping[str, Any]) -> tuple[float, float]:
        """[low, high] after the parent's value and numeric comparisons are applied."""
        low, high = float(param.low), float(param.high)  # type: ignore[arg-type]
        step = 1.0 if param.kind == "int" else 0.0
        if param.depends_on and param.depends_on in config:
            parent = float(config[param.depends_on])
            if param.greater_than_parent:
                low = max(low, parent + step if step else float(np.nextafter(parent, math.inf)))
            else:
                high = min(high, parent)
        comparison = _comparison(param)
        if comparison is not None:
            op, bound = comparison
            if op == ">":
                low = max(low, bound + step if step else float(np.nextafter(bound, math.inf)))
            elif op == ">=":
                low = max(low, bound)
            elif op == "<":
                high = min(high, bound - step if step else float(np.nextafter(bound, -math.inf)))
            else:
                high = min(high, bound)
        if param.kind == "int":
            low, high = math.ceil(low), math.floor(high)
        if low > high:  # the conditions cannot all hold; the static range wins
            low, high = float(param.low), float(param.high)  # type: ignore[arg-type]
        return low, high

    def repair(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Clip, round and snap values so every bound, `math_cond` and `depends_on` rule holds."""
        out = dict(config)
        for param in self.params:
            if param.name not in out:
                continue
            if not param.is_numeric:
                continue
            if param.greater_than_parent and param.depends_on in out:
                # The parent must leave room above it; shrink it first if it sits at the child's ceiling.
                parent = self._index[param.depends_on]
                room = float(param.high) - (1 if param.kind == "int" else 1e-12 * max(1.0, abs(param.high)))
                if float(out[parent.name]) > room:
                    out[parent.name] = self._snap(parent, min(float(out[parent.name]), room), out)
            out[param.name] = self._snap(param, float(out[param.name]), out)
        return out

    def _snap(self, param: Param, value: float, config: Mapping[str, Any]) -> int | float:
        low, high = self._dynamic_bounds(param, config)
        value = min(max(value, low), high)
        grid = _allowed_grid(param)
        if grid is not None:
            inside = grid[(grid >= low) & (grid <= high)]
            grid = inside if inside.size else grid
            geometric = (param.log or _POWER.match(param.math_cond or "")) and value > 0
            distance = np.abs(np.log(grid / value)) if geometric else np.abs(grid - value)
            value = float(grid[int(np.argmin(distance))])
        return _cast(param, value)

    def validate(self, config: Mapping[str, Any], source: str = "the config") -> dict[str, Any]:
        """Check names, types, ranges and conditions; returns the config with numbers coerced to their kind."""
        unknown = [name for name in config if name not in self._index]
        if unknown:
            hint = difflib.get_close_matches(unknown[0], self.names, n=1, cutoff=0.6)
            tip = f" Did you mean {hint[0]}?" if hint else f" The searched keys are {self.names}."
            raise SpecError(f"{source} sets {unknown[0]}, which is not a searched parameter.{tip}")
        missing = [name for name in self.names if name not in config]
        if missing:
            raise SpecError(f"{source} lacks a value for {missing[0]}; give every searched parameter a value.")
        out: dict[str, Any] = {}
        for param in self.params:
            value = config[param.name]
            if not _fits(param, value):
                raise SpecError(
                    f"{source} sets {param.name} = {value!r}, outside its search space "
                    f"{_range_text(param)}; choose a value inside it."
                )
            out[param.name] = _cast(param, value) if param.is_numeric else _choice(param, value)
        repaired = self.repair(out)
        for param in self.params:
            if param.is_numeric and not math.isclose(
                float(repaired[param.name]), float(out[param.name]), rel_tol=1e-9, abs_tol=0.0
            ):
                rule = param.math_cond or f"<= {param.depends_on}"
                raise SpecError(
                    f"{source} sets {param.name} = {out[param.name]!r}, which breaks its condition {rule!r}; "
                    f"a valid nearby value is {repaired[param.name]!r}."
                )
        return out

    # -- unit cube encoding (for GP, KDE and DE) ---------------------------------------------------------------

    def to_unit(self, config: Mapping[str, Any]) -> np.ndarray:
        """Map a config to [0, 1]^d: log-aware for numbers, bin centres for choices."""
        vec = np.empty(len(self.params))
        for i, param in enumerate(self.params):
            value = config[param.name]
            if param.is_numeric:
                low, high = float(param.low), float(param.high)  # type: ignore[arg-type]
                if high == low:
                    vec[i] = 0.5
                elif param.log:
                    vec[i] = (math.log(float(value)) - math.log(low)) / (math.log(high) - math.log(low))
                elif param.kind == "int":
                    vec[i] = (float(value) - low + 0.5) / (high - low + 1)
                else:
                    vec[i] = (float(value) - low) / (high - low)
            else:
                vec[i] = (self._choice_index(param, value) + 0.5) / len(param.choices)
        return np.clip(vec, 0.0, 1.0)

    def from_unit(self, vec: Sequence[float] | np.ndarray) -> dict[str, Any]:
        """Inverse of `to_unit` for any point of [0, 1]^d, repaired so every condition holds."""
        vec = np.clip(np.asarray(vec, dtype=float), 0.0, 1.0)
        if vec.shape != (len(self.params),):
            raise ValueError(f"expected a vector of length {len(self.params)}, got shape {vec.shape}")
        config: dict[str, Any] = {}
        for u, param in zip(vec, self.params):
            if param.is_numeric:
                low, high = float(param.low), float(param.high)  # type: ignore[arg-type]
                if param.log:
                    value = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
                elif param.kind == "int":
                    value = low + min(math.floor(u * (high - low + 1)), high - low)
                else:
                    value = low + u * (high - low)
                config[param.name] = _cast(param, value)
            else:
                config[param.name] = param.choices[min(int(u * len(param.choices)), len(param.choices) - 1)]
        return self.repair(config)

    def _choice_index(self, param: Param, value: Any) -> int:
        for i, choice in enumerate(param.choices):
            if _same(choice, value):
                return i
        raise SpecError(f"{param.name} = {value!r} is not one of its choices {list(param.choices)}.")

    # -- spec dicts --------------------------------------------------------------------------------------------

    @staticmethod
    def nest(config: Mapping[str, Any]) -> dict[str, Any]:
        """`{"train.lr": 1e-6}` -> `{"train": {"lr": 1e-6}}`."""
        return nest_dotted(config)


# ---------------------------------------------------------------------------------------------------------------
# schema parsing


def _walk_leaves(properties: Mapping[str, Any], prefix: str) -> Iterable[tuple[str, dict[str, Any]]]:
    for key, node in properties.items():
        if not isinstance(node, Mapping):
            continue
        name = f"{prefix}{key}"
        if isinstance(node.get("properties"), Mapping):
            yield from _walk_leaves(node["properties"], f"{name}.")
        else:
            yield name, dict(node)


def _leaf_type(leaf: Mapping[str, Any]) -> str | None:
    kind = leaf.get("type")
    if isinstance(kind, list):
        kind = next((item for item in kind if item != "null"), None)
    return kind


def _param_from_leaf(name: str, leaf: Mapping[str, Any], default: Any, custom: Any, source: str) -> Param:
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
        if not any(_same(option, choice) for choice in param.choices):
            raise SpecError(
                f"custom_param_ranges offers {option!r} for {param.name}, which the schema does not allow; "
                f"choose among {list(param.choices)}."
            )
    weights = None
    if param.weights is not None:
        weights = tuple(param.weights[[_same(o, c) for c in param.choices].index(True)] for o in options)
        weights = weights if sum(weights) > 0 else None
    return Param(param.name, param.kind, choices=tuple(options), weights=weights, default=param.default)


def _topological(params: Sequence[Param]) -> tuple[Param, ...]:
    by_name = {param.name: param for param in params}
    ordered: list[Param] = []
    state: dict[str, int] = {}

    def visit(param: Param) -> None:
        if state.get(param.name) == 2:
            return
        if state.get(param.name) == 1:
            raise SpecError(f"Search parameter {param.name} is part of a depends_on cycle; break the cycle.")
        state[param.name] = 1
        if param.depends_on in by_name:
            visit(by_name[param.depends_on])
        state[param.name] = 2
        ordered.append(param)

    for param in params:
        visit(param)
    return tuple(ordered)


# ---------------------------------------------------------------------------------------------------------------
# small value helpers


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True) or (
        isinstance(a, int | float) and isinstance(b, int | float) and a == b
    )


def _choice(param: Param, value: Any) -> Any:
    for choice in param.choices:
        if _same(choice, value):
            return choice
    return value


def _fits(param: Param, value: Any) -> bool:
    if not param.is_numeric:
        return any(_same(choice, value) for choice in param.choices)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    if param.kind == "int" and float(value) != round(float(value)):
        return False
    return float(param.low) <= float(value) <= float(param.high)  # type: ignore[arg-type]


def _cast(param: Param, value: float) -> int | float:
    return round(value) if param.kind == "int" else float(value)


def _canonical(param: Param) -> Any:
    if not param.is_numeric:
        return param.choices[0]
    low, high = float(param.low), float(param.high)  # type: ignore[arg-type]
    middle = math.sqrt(low * high) if param.log else (low + high) / 2
    return _cast(param, middle)


def _range_text(param: Param) -> str:
    if param.is_numeric:
        return f"[{param.low}, {param.high}]"
    return str(list(param.choices))
