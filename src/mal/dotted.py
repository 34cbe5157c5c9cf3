"""Dotted keys (`train.lr`) over nested mappings: the one implementation used by spec overrides, search spaces,
trial specs and the automl contract. Standard library only, so every layer may import it."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any


def get_dotted(tree: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    """The value at `dotted`, or `default` when any part of the path is missing or not a mapping."""
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `dotted` in place, creating the sections on the way (a section written as null counts as empty)."""
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        node = child
    node[leaf] = value


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """`update` laid over a copy of `base`; nested mappings merge, anything else (lists included) replaces.

    An empty section (`train:` with nothing under it) changes nothing: YAML reads it as null, not as "reset".
    """
    merged = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        elif value is None and isinstance(merged.get(key), Mapping):
            continue
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def nest_dotted(flat_or_nested: Mapping[str, Any]) -> dict[str, Any]:
    """`{"train.lr": 1e-6}` -> `{"train": {"lr": 1e-6}}`; nested sections and dotted keys may be mixed."""
    nested: dict[str, Any] = {}
    for key, value in flat_or_nested.items():
        if isinstance(value, Mapping):
            value = nest_dotted(value)
        *parents, leaf = str(key).split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        if isinstance(value, dict) and isinstance(node.get(leaf), dict):
            node[leaf] = deep_merge(node[leaf], value)
        else:
            node[leaf] = value
    return nested
