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

Jobs kept elsewhere: one key and its value checks in `mal.automl.space_params`, the conditions in
`mal.automl.space_conditions`, reading a key from a schema leaf in `mal.automl.space_schema`.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mal.automl.space_conditions import POWER_COND, allowed_grid, check_math_cond, numeric_comparison, parents_first
from mal.automl.space_params import (
    Param,
    ParamKind,
    canonical_value,
    cast_to_kind,
    fits,
    matching_choice,
    range_text,
    same_value,
)
from mal.automl.space_schema import param_from_leaf, schema_leaves
from mal.dotted import get_dotted, nest_dotted
from mal.errors import SpecError
from mal.safe_yaml import load_mapping

# Other modules import Param (and may import ParamKind) from here, where they lived before the split.
__all__ = ["Param", "ParamKind", "SearchSpace"]


@dataclass
class SearchSpace:
    """An ordered set of `Param`s (parents before the keys that depend on them)."""

    params: tuple[Param, ...]
    _index: dict[str, Param] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.params = parents_first(self.params)
        self._index = {param.name: param for param in self.params}
        for param in self.params:
            if param.depends_on and param.depends_on not in self._index:
                raise SpecError(
                    f"Search parameter {param.name} depends on {param.depends_on}, which is not searched; "
                    f"add {param.depends_on} to the AutoML parameters."
                )
            check_math_cond(param)

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
            template = load_mapping(
                template_path, str(template_path),
                "must hold a mapping of spec sections; rewrite it with `mal schema`.", {"syntax": "; rewrite it"},
            )  # fmt: skip
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
        leaves = dict(schema_leaves(schema.get("properties", {}), ""))
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
            params.append(param_from_leaf(name, leaf, default, custom.get(name), source))
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
            if value is None or not fits(param, value):
                value = canonical_value(param)
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
        grid = allowed_grid(param)
        if grid is not None:
            inside = grid[(grid >= low) & (grid <= high)]
            grid = inside if inside.size else grid
            return cast_to_kind(param, grid[int(rng.integers(grid.size))])
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
        comparison = numeric_comparison(param)
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
        grid = allowed_grid(param)
        if grid is not None:
            inside = grid[(grid >= low) & (grid <= high)]
            grid = inside if inside.size else grid
            geometric = (param.log or POWER_COND.match(param.math_cond or "")) and value > 0
            distance = np.abs(np.log(grid / value)) if geometric else np.abs(grid - value)
            value = float(grid[int(np.argmin(distance))])
        return cast_to_kind(param, value)

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
            if not fits(param, value):
                raise SpecError(
                    f"{source} sets {param.name} = {value!r}, outside its search space "
                    f"{range_text(param)}; choose a value inside it."
                )
            out[param.name] = cast_to_kind(param, value) if param.is_numeric else matching_choice(param, value)
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
                config[param.name] = cast_to_kind(param, value)
            else:
                config[param.name] = param.choices[min(int(u * len(param.choices)), len(param.choices) - 1)]
        return self.repair(config)

    def _choice_index(self, param: Param, value: Any) -> int:
        for i, choice in enumerate(param.choices):
            if same_value(choice, value):
                return i
        raise SpecError(f"{param.name} = {value!r} is not one of its choices {list(param.choices)}.")

    # -- spec dicts --------------------------------------------------------------------------------------------

    @staticmethod
    def nest(config: Mapping[str, Any]) -> dict[str, Any]:
        """`{"train.lr": 1e-6}` -> `{"train": {"lr": 1e-6}}`."""
        return nest_dotted(config)
