"""TAO's `math_cond` and `depends_on` conditions on a `Param`: parsing and checking them, the grid of values a
`^ N` or `/ N` condition allows, and the order that puts every key after the key it depends on."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from mal.automl.space_params import Param
from mal.errors import SpecError

_COMPARISON = re.compile(r"^(>=|>|<=|<)\s*(depends_on|[-+]?[0-9.]+(?:[eE][-+]?\d+)?)$")
POWER_COND = re.compile(r"^\^\s*(\d+)$")
_MULTIPLE = re.compile(r"^/\s*(\d+)$")


def numeric_comparison(param: Param) -> tuple[str, float] | None:
    """`(op, bound)` of a `> N`-style condition, or None (no condition, another kind, `> depends_on`)."""
    if not param.math_cond:
        return None
    match = _COMPARISON.match(param.math_cond.strip())
    if match is None or match.group(2) == "depends_on":
        return None
    return match.group(1), float(match.group(2))


def allowed_grid(param: Param) -> np.ndarray | None:
    """The finite set of values a `^ N` or `/ N` condition leaves inside [low, high], or None."""
    if not param.math_cond or not param.is_numeric:
        return None
    cond = param.math_cond.strip()
    low, high = float(param.low), float(param.high)  # type: ignore[arg-type]
    if match := POWER_COND.match(cond):
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


def check_math_cond(param: Param) -> None:
    cond = param.math_cond
    if cond is None:
        return
    text = cond.strip()
    if not (_COMPARISON.match(text) or POWER_COND.match(text) or _MULTIPLE.match(text)):
        raise SpecError(
            f"Search parameter {param.name} has math_cond {cond!r}, which is not one of '> N', '>= N', '< N', "
            f"'<= N', '^ N', '/ N' or '> depends_on'; fix the schema."
        )
    if _COMPARISON.match(text) and "depends_on" in text and not param.depends_on:
        raise SpecError(f"Search parameter {param.name} has math_cond {cond!r} but no depends_on key; add one.")
    grid = allowed_grid(param)
    if grid is not None and grid.size == 0:
        raise SpecError(
            f"Search parameter {param.name} has no value in [{param.low}, {param.high}] satisfying math_cond "
            f"{cond!r}; widen the range."
        )


def parents_first(params: Sequence[Param]) -> tuple[Param, ...]:
    """`params` reordered so each comes after the key it depends on; a depends_on cycle is a SpecError."""
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
