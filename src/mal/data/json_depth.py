"""How deeply a JSON document nests lists/objects, found before parsing, and how deep a COCO file may go."""

from __future__ import annotations

import json

import numpy as np

# A COCO file nests about 5 levels (file > annotations > annotation > segmentation > polygon); far more is hostile.
MAX_JSON_DEPTH = 100


def json_nesting_depth(data: bytes) -> int:
    """How deeply a JSON document nests lists/objects, found from its bytes without parsing it.

    json.loads stops only at the interpreter's recursion limit (~1000 levels), while copy.deepcopy of the file (as
    inference does) fails at a few hundred; this scan is vectorized and costs a fraction of the parse. Brackets
    inside strings are skipped: a string is open after an odd number of unescaped quotes.
    """
    encoding = json.detect_encoding(data)
    if encoding != "utf-8":  # UTF-16/32 files: their bytes hold brackets only after re-encoding
        data = data.decode(encoding).encode("utf-8")
    raw = np.frombuffer(data, dtype=np.uint8)
    quotes = np.flatnonzero(raw == ord('"'))
    backslashes = np.flatnonzero(raw == ord("\\"))
    if backslashes.size and quotes.size:
        # A quote is escaped when an odd number of backslashes stands right before it.
        run_start = np.flatnonzero(np.diff(backslashes, prepend=-2) != 1)
        start_of = backslashes[run_start][np.searchsorted(run_start, np.arange(backslashes.size), side="right") - 1]
        before = np.searchsorted(backslashes, quotes) - 1
        touching = (before >= 0) & (backslashes[np.maximum(before, 0)] == quotes - 1)
        count = np.where(touching, quotes - start_of[np.maximum(before, 0)], 0)
        quotes = quotes[count % 2 == 0]
    opening = np.flatnonzero((raw == ord("[")) | (raw == ord("{")))
    closing = np.flatnonzero((raw == ord("]")) | (raw == ord("}")))
    opening = opening[np.searchsorted(quotes, opening) % 2 == 0]
    closing = closing[np.searchsorted(quotes, closing) % 2 == 0]
    if opening.size == 0:
        return 0
    positions = np.concatenate([opening, closing])
    steps = np.concatenate([np.ones(opening.size, np.int64), -np.ones(closing.size, np.int64)])
    return int(np.cumsum(steps[np.argsort(positions, kind="stable")]).max())
