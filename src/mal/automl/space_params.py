"""One tunable key of the search space (`Param`) and the checks on a value of it: whether it fits, its cast to
the key's kind, the key's canonical value and its range as text."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

ParamKind = Literal["float", "int", "categorical", "bool"]


@dataclass(frozen=True)
class Param:
    """One tunable key.

    `low`/`high` bound numeric kinds (inclusive); `choices`/`weights` describe categorical and bool kinds.
    `math_cond` and `depends_on` are TAO's annotations (see `mal.automl.space`'s docstring); `default` is the
    value the spec template uses.
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


def same_value(a: Any, b: Any) -> bool:
    """Equal as choices: lists and dicts by content, `True` never equal to `1`."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True) or (
        isinstance(a, int | float) and isinstance(b, int | float) and a == b
    )


def matching_choice(param: Param, value: Any) -> Any:
    """The param's own choice equal to `value` (`value` itself when none is)."""
    for choice in param.choices:
        if same_value(choice, value):
            return choice
    return value


def fits(param: Param, value: Any) -> bool:
    if not param.is_numeric:
        return any(same_value(choice, value) for choice in param.choices)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    if param.kind == "int" and float(value) != round(float(value)):
        return False
    return float(param.low) <= float(value) <= float(param.high)  # type: ignore[arg-type]


def cast_to_kind(param: Param, value: float) -> int | float:
    return round(value) if param.kind == "int" else float(value)


def canonical_value(param: Param) -> Any:
    if not param.is_numeric:
        return param.choices[0]
    low, high = float(param.low), float(param.high)  # type: ignore[arg-type]
    middle = math.sqrt(low * high) if param.log else (low + high) / 2
    return cast_to_kind(param, middle)


def range_text(param: Param) -> str:
    if param.is_numeric:
        return f"[{param.low}, {param.high}]"
    return str(list(param.choices))
