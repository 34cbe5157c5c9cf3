"""The one YAML reader of every YAML input (spec, overrides, study files, settings, skill templates).

`yaml.safe_load` refuses Python tags but not the other two ways a small hostile file hurts: aliases that expand
to billions of values ("billion laughs") once a caller copies, merges or validates the result, and nesting
thousands of levels deep, which ends in a RecursionError. `load_text` refuses both while composing (before any
Python value exists), so a refusal is one short line and takes milliseconds whatever the file holds.

Only `yaml` and `mal.errors` are imported: `mal.automl` uses this module and must stay free of the engine.
`YamlRefused` is not a `UserError`: the caller knows which file or key it read and raises its own error naming it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from mal.errors import SpecError, yaml_problem

MAX_DEPTH = 50
MAX_NODES = 100_000
MAX_FILE_BYTES = 1_000_000
# PyYAML's problem text can quote the input (an undefined alias, a tag); the message stays one short line.
_MAX_PROBLEM_CHARS = 200


class YamlRefused(Exception):
    """Text that is refused as YAML input. str() is a clause that follows the input's name and ends with the fix
    ("is not valid YAML (line 2, column 1: ...)"); `reason` is one of missing, folder, unreadable, encoding, syntax,
    tag, depth, size, aliases, recursive."""

    def __init__(self, reason: str, clause: str) -> None:
        super().__init__(clause)
        self.reason = reason


def _short(text: str) -> str:
    # Control characters would break the one-line error contract on a terminal (or split the line outright).
    text = "".join(char if char.isprintable() else ascii(char)[1:-1] for char in " ".join(text.split()))
    return text if len(text) <= _MAX_PROBLEM_CHARS else text[: _MAX_PROBLEM_CHARS - 3] + "..."


def _where(node_or_event: Any) -> str:
    mark = getattr(node_or_event, "start_mark", None)
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "unknown position"


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer counts nesting depth and the expanded size of every node as it builds them."""

    def __init__(self, stream: str, max_depth: int, max_nodes: int) -> None:
        super().__init__(stream)
        self._max_depth = max_depth
        self._max_nodes = max_nodes
        self._depth = 0
        self._saw_alias = False
        # Expanded size (values, counting every alias as a full copy of its anchor) of each finished node, by
        # identity: the nodes stay alive in the tree, so an id is never reused while loading.
        self._sizes: dict[int, int] = {}
        # Values composed so far, each alias counted as the full size of its anchor: a huge plain file is refused
        # once it passes the limit, not after the parser has read all of it.
        self._total = 0
        # Where the composer is (["train", "lr", "[3]"]), so that a refusal names the key as well as the line.
        self._path: list[str] = []

    def _place(self, node_or_event: Any) -> str:
        where = _where(node_or_event)
        if not self._path:
            return where
        shown = self._path[:6]
        key = "".join(part if part.startswith("[") or i == 0 else f".{part}" for i, part in enumerate(shown))
        more = "..." if len(self._path) > len(shown) else ""
        return f"{_short(key)[:120]}{more}, {where}"

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        if isinstance(parent, SequenceNode):
            self._path.append(f"[{index}]")
        elif isinstance(parent, MappingNode):
            self._path.append(str(index.value)[:40] if isinstance(index, ScalarNode) else "?")
        try:
            return self._compose_node(parent, index)
        finally:
            if parent is not None:
                self._path.pop()

    def _compose_node(self, parent: Node | None, index: Any) -> Node:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            self._saw_alias = True
            if target is not None and id(target) not in self._sizes:
                # The anchor's node is still being composed, so this alias sits inside it: an endless value.
                anchor = _short(str(event.anchor))[:40]
                raise YamlRefused(
                    "recursive",
                    f"has an alias inside its own anchor (*{anchor} at {self._place(event)}); an anchor cannot contain "
                    f"an alias to itself",
                )
        elif self._depth >= self._max_depth and self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent):
            raise YamlRefused(
                "depth", f"nests more than {self._max_depth} levels deep ({self._place(self.peek_event())}); flatten it"
            )
        node = super().compose_node(parent, index)
        known = self._sizes.get(id(node))
        if known is None:
            self._measure(node)
            self._total += 1
        else:
            self._total += known
        if self._total > self._max_nodes:
            self._refuse_size(node)
        return node

    def compose_sequence_node(self, anchor: str | None) -> Node:
        self._depth += 1
        try:
            return super().compose_sequence_node(anchor)
        finally:
            self._depth -= 1

    def compose_mapping_node(self, anchor: str | None) -> Node:
        self._depth += 1
        try:
            return super().compose_mapping_node(anchor)
        finally:
            self._depth -= 1

    def _measure(self, node: Node) -> None:
        if id(node) in self._sizes:  # an alias: its size is already known and counts again at each use
            return
        size = 1
        if isinstance(node, SequenceNode):
            size += sum(self._sizes[id(child)] for child in node.value)
        elif isinstance(node, MappingNode):
            size += sum(self._sizes[id(key)] + self._sizes[id(value)] for key, value in node.value)
        if size > self._max_nodes:
            self._refuse_size(node)
        self._sizes[id(node)] = size

    def _refuse_size(self, node: Node) -> None:
        how = "through its aliases" if self._saw_alias else "in all"
        fix = "write the values out without anchor/alias chains" if self._saw_alias else "split it up"
        raise YamlRefused(
            "aliases" if self._saw_alias else "size",
            f"expands to more than {self._max_nodes} YAML values {how} (at {self._place(node)}); {fix}",
        )


def load_text(text: str, *, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES) -> Any:
    """The Python value of one YAML document, as `yaml.safe_load` gives it; `YamlRefused` for invalid YAML,
    unsupported tags, nesting deeper than `max_depth`, more than `max_nodes` values once aliases are expanded,
    and aliases inside their own anchor."""
    loader = None
    try:
        loader = _BoundedLoader(text, max_depth, max_nodes)  # the reader refuses control characters right here
        node = loader.get_single_node()
        return None if node is None else loader.construct_document(node)
    except yaml.reader.ReaderError as exc:
        where = f"character {exc.position + 1}: unacceptable character #x{exc.character:04x}"
        raise YamlRefused("syntax", f"is not valid YAML ({where}); remove control characters") from None
    except yaml.constructor.ConstructorError as exc:
        if "tag" not in str(exc.problem):  # e.g. "found unhashable key": a mapping or list used as a key
            raise YamlRefused("syntax", f"is not valid YAML ({_short(yaml_problem(exc))})") from None
        raise YamlRefused(
            "tag", f"uses an unsupported YAML tag ({_short(yaml_problem(exc))}); only plain values are allowed"
        ) from None
    except yaml.YAMLError as exc:
        raise YamlRefused("syntax", f"is not valid YAML ({_short(yaml_problem(exc))})") from None
    except RecursionError:
        # Not expected below max_depth; kept so that no input can end in a traceback.
        raise YamlRefused("depth", "nests too deeply to be read; flatten it") from None
    finally:
        if loader is not None:
            loader.dispose()


def load_file(path: str | os.PathLike[str], *, max_bytes: int = MAX_FILE_BYTES) -> Any:
    """`load_text` of a UTF-8 file; `YamlRefused` also when the path is missing, a folder, too big or not UTF-8."""
    file = Path(path)
    if not file.exists():
        raise YamlRefused("missing", "does not exist")
    if not file.is_file():
        raise YamlRefused("folder", "is a folder, not a YAML file; pass the file itself")
    size = file.stat().st_size
    if size > max_bytes:
        raise YamlRefused("size", f"is larger than {max_bytes} bytes ({size}); is it really this YAML file?")
    try:
        text = file.read_bytes().decode("utf-8")
    except OSError as exc:
        raise YamlRefused("unreadable", f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    except UnicodeDecodeError as exc:
        raise YamlRefused(
            "encoding", f"is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); save it as UTF-8"
        ) from None
    return load_text(text)


__all__ = ["MAX_DEPTH", "MAX_NODES", "YamlRefused", "load_file", "load_text"]


def load_mapping(path: str | Path, label: str, not_a_mapping: str, fixes: Mapping[str, str] | None = None) -> dict:
    """The mapping a YAML file holds ({} for an empty file), or one SpecError line that starts with `label`: the
    refusal with `fixes[reason]` after it, or `not_a_mapping` (where `{kind}` names what the file held)."""

    try:
        data = load_file(path) or {}
    except YamlRefused as exc:
        raise SpecError(f"{label} {exc}{(fixes or {}).get(exc.reason, '')}.") from None
    if not isinstance(data, Mapping):
        raise SpecError(f"{label} {not_a_mapping.format(kind=type(data).__name__)}")
    return dict(data)
