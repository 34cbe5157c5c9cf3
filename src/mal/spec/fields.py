"""Building blocks for declaring spec fields: the AutoML metadata helper and reusable constrained types."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator


def _must_be_odd(value: int) -> int:
    if value % 2 == 0:
        raise ValueError(f"must be odd, got {value}")
    return value


OddKernel = Annotated[int, AfterValidator(_must_be_odd)]
"""A CRF window size: odd, so the window has a centre pixel."""


def automl(
    low: float | None = None,
    high: float | None = None,
    *,
    log: bool | None = None,
    math_cond: str | None = None,
    option_weights: list[float] | None = None,
    depends_on: str | None = None,
) -> dict[str, Any]:
    """Metadata marking a field as tunable, with its default search range."""
    extra: dict[str, Any] = {"automl_enabled": True}
    if low is not None and high is not None:
        extra["automl_range"] = [low, high]
    if log is not None:
        extra["log_scale"] = log
    if math_cond:
        extra["math_cond"] = math_cond
    if option_weights:
        extra["option_weights"] = option_weights
    if depends_on:
        extra["depends_on"] = depends_on
    return extra
