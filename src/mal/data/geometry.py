"""Is a COCO segmentation safe to hand to pycocotools? Checked in Python/numpy, before pycocotools ever sees it.

pycocotools trusts its input: a NaN or 1e9 polygon coordinate becomes an undefined C int cast and a multi-GB
outline buffer; RLE counts that sum to more than height x width make its decoder write past the mask (a
segfault); a compressed RLE string with an over-long run or a dangling continuation character makes its reader
shift past 32 bits or read past the string's end (it spun forever). `segmentation_problem` finds all of these
without calling pycocotools, so every action can refuse them with one line instead.

The compressed form is read by `compressed_rle_counts`, which computes exactly the run lengths pycocotools' C
reader (`rleFrString`) would: 6-bit characters '0'..'o', 5 payload bits each, bit 0x20 "more follows", bit
0x10 of a run's last character the sign, and from the fourth run on each value a delta to the run two before,
all wrapped to uint32 as C does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

# A polygon point may lie this many image widths/heights outside the image (rounding and clipped outlines go
# slightly outside; nothing legitimate goes ten images away).
MAX_IMAGE_SPANS = 10
# pycocotools walks the outline in 1/5-pixel steps and stores every step: bound that work by this many image
# perimeters (a real outline, however ragged, stays far below it).
MAX_OUTLINE_PERIMETERS = 100
_POLY_SCALE = 5  # pycocotools' upsampling factor in rleFrPoly
# Beyond this a coordinate times the upsampling factor no longer fits pycocotools' C int.
_INT_SAFE_COORD = (2**31 - 1) // _POLY_SCALE - 1
# pycocotools' reader shifts each character into a C int: 6 characters per run stay inside 32 bits; a 7th still
# gives the right low 32 bits (all a count keeps) unless it carries the sign, whose shift by 35 is undefined.
MAX_RLE_RUN_CHARS = 7
_UINT32 = 2**32

Problem = tuple[str, str]  # (what is wrong, how to fix it)
_REENCODE = "re-encode the mask with pycocotools"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def segmentation_problem(segmentation: Any, height: int, width: int) -> Problem | None:
    """What makes `segmentation` unusable as a mask of a height x width image (and the fix), or None when
    pycocotools can decode it safely to exactly that size. An empty segmentation is the caller's business."""
    return segmentation_problems([(segmentation, height, width)])[0]


def segmentation_problems(items: Iterable[tuple[Any, int, int]]) -> list[Problem | None]:
    """`segmentation_problem` of each (segmentation, height, width); the compressed RLE strings of all items are
    decoded in one vectorized pass (per-string numpy calls would cost more than the decoding itself)."""
    results: list[Problem | None] = []
    pending: list[tuple[int, str, int, int]] = []  # (index, counts, height, width) of strings still to decode
    for index, (segmentation, height, width) in enumerate(items):
        if isinstance(segmentation, list):
            results.append(_polygons_problem(segmentation, height, width))
        elif isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
            problem = _rle_problem(segmentation["size"], segmentation["counts"], height, width)
            results.append(problem)
            if problem is None and isinstance(segmentation["counts"], str):
                pending.append((index, segmentation["counts"], height, width))
        else:
            results.append(("segmentation is neither polygons nor RLE {size, counts}", "write COCO polygons or RLE"))
    if pending:
        runs, run_string, errors = _decode_rle_strings([counts for _, counts, _, _ in pending])
        totals = np.bincount(run_string, weights=runs, minlength=len(pending))  # exact below 2**53
        for (index, _, height, width), total, error in zip(pending, totals.tolist(), errors, strict=True):
            if error is not None:
                results[index] = f"compressed RLE counts {error}", _REENCODE
            else:
                results[index] = _total_problem(int(total), height, width)
    return results


def _polygons_problem(polygons: list[Any], height: int, width: int) -> Problem | None:
    fix = "fix or remove the polygon"
    for polygon in polygons:
        if not (isinstance(polygon, list) and len(polygon) >= 6 and len(polygon) % 2 == 0):
            return "segmentation polygons need an even number (>= 6) of coordinates", fix
        if not all(map(_is_number, polygon)):
            return "a segmentation polygon holds a value that is not a number", fix
        try:
            finite = all(map(math.isfinite, polygon))
        except OverflowError:  # an integer beyond float range
            finite = False
        if not finite:
            bad = next(value for value in polygon if not _finite(value))
            return f"polygon coordinate {_short(bad)} is not a finite number", fix
        xs, ys = polygon[0::2], polygon[1::2]
        low_x, high_x, low_y, high_y = min(xs), max(xs), min(ys), max(ys)
        limit_x = min(MAX_IMAGE_SPANS * width, _INT_SAFE_COORD)
        limit_y = min(MAX_IMAGE_SPANS * height, _INT_SAFE_COORD)
        if max(-low_x, high_x) > limit_x or max(-low_y, high_y) > limit_y:
            far = next(
                value
                for index, value in enumerate(polygon)
                if abs(value) > (limit_x if index % 2 == 0 else limit_y)
            )
            return (
                f"polygon coordinate {_short(far)} lies far outside the {width}x{height} image "
                f"(more than {MAX_IMAGE_SPANS} image sizes away)",
                "fix the polygon's coordinates (pixels of this image)",
            )
    limit = _POLY_SCALE * MAX_OUTLINE_PERIMETERS * 2 * (width + height)
    # Every edge is at most the polygon's larger bounding-box side: when even that bound fits, skip the exact sum.
    if sum(_outline_bound(polygon) for polygon in polygons) <= limit:
        return None
    steps = sum(_outline_steps(polygon) for polygon in polygons)
    if steps > limit:
        return (
            f"the polygon outline is {steps // _POLY_SCALE:,} pixels long, more than {MAX_OUTLINE_PERIMETERS} times "
            f"the {width}x{height} image's perimeter",
            fix,
        )
    return None


def _finite(value: float | int) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 24 else text[:20] + "..."


def _outline_bound(polygon: list[float | int]) -> float:
    xs, ys = polygon[0::2], polygon[1::2]
    return len(xs) * (_POLY_SCALE * max(max(xs) - min(xs), max(ys) - min(ys)) + 2)


def _outline_steps(polygon: list[float | int]) -> int:
    """How many outline points pycocotools' rleFrPoly allocates for this polygon (coordinates already bounded)."""
    k = len(polygon) // 2
    points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    scaled = (_POLY_SCALE * points + 0.5).astype(np.int64)  # C's (int) cast truncates toward zero, as astype
    edges = np.abs(scaled - np.roll(scaled, -1, axis=0))
    return int(edges.max(axis=1).sum() + k)


def _rle_problem(size: Any, counts: Any, height: int, width: int) -> Problem | None:
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) and v > 0 for v in size)):
        return (
            f"RLE size {_short(size)} is not [height, width] (two positive integers)",
            _REENCODE,
        )
    if list(size) != [height, width]:
        return f"RLE size {size} differs from the image's [{height}, {width}]", "re-encode the mask at the image size"
    pixels = height * width
    if isinstance(counts, list):
        if not all(map(_is_int, counts)):
            return "RLE counts hold a value that is not an integer", _REENCODE
        if counts and min(counts) < 0:
            return f"RLE counts hold a negative run length ({min(counts)})", _REENCODE
        if counts and max(counts) >= _UINT32:
            return f"RLE counts hold a run length of {max(counts):,}, above 2**32", _REENCODE
        total = sum(counts)
    elif isinstance(counts, str):
        # Even one character per run cannot need more characters than this; refuse before decoding anything.
        if len(counts) > MAX_RLE_RUN_CHARS * (pixels + 1):
            return (
                f"compressed RLE counts are {len(counts):,} characters long, more than any mask of a "
                f"{width}x{height} image needs",
                _REENCODE,
            )
        return None  # decoded with the other strings by segmentation_problems
    else:
        return "RLE counts are neither a string nor a list of run lengths", _REENCODE
    return _total_problem(total, height, width)


def _total_problem(total: int, height: int, width: int) -> Problem | None:
    if total != height * width:
        return (
            f"RLE counts sum to {total:,} pixels but the {width}x{height} image has {height * width:,}",
            "re-encode the mask at the image size",
        )
    return None


def compressed_rle_counts(counts: str) -> np.ndarray:
    """The run lengths (int64, each in [0, 2**32)) that pycocotools' C reader takes from a compressed RLE string.

    Raises ValueError (the text continues "compressed RLE counts ...") for strings that reader cannot take safely:
    a character outside '0'..'o', a run longer than 7 characters (or a negative one of 7), or a string that ends
    in the middle of a run.
    """
    runs, _, errors = _decode_rle_strings([counts])
    if errors[0] is not None:
        raise ValueError(errors[0])
    return runs


def _decode_rle_strings(strings: list[str]) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """(run lengths of every readable string, back to back; the string index of each run; per string None or
    why it cannot be read). Unreadable strings contribute no runs."""
    errors: list[str | None] = [None] * len(strings)
    for index, text in enumerate(strings):
        if not text.isascii():
            position = next(i for i, char in enumerate(text) if not char.isascii())
            errors[index] = f"hold the non-ASCII character {text[position]!r} at position {position}"
    raw, string_of_char, offsets = _concatenate(strings, errors)
    outside = (raw < 48) | (raw > 111)
    for position in _first_per_group(np.flatnonzero(outside), string_of_char):
        index = int(string_of_char[position])
        errors[index] = (
            f"hold {chr(raw[position])!r} at position {position - offsets[index]}, which is not an RLE character"
        )
    ends = ((raw - 48) & 0x20) == 0
    string_ends = np.flatnonzero(np.diff(string_of_char, append=-1) != 0)  # the last character of each string
    for position in string_ends[~ends[string_ends]].tolist():
        index = int(string_of_char[position])
        if errors[index] is None:
            errors[index] = "end in the middle of a run length (the last character says more follows)"

    # Every string kept now ends on a run end, so no run crosses from one string into the next.
    raw, string_of_char, offsets = _concatenate(strings, errors)
    codes = raw - 48
    last = np.flatnonzero((codes & 0x20) == 0)
    first = np.concatenate([[0], last[:-1] + 1]).astype(np.int64) if len(last) else last
    run_length = last - first + 1
    run_string = string_of_char[last]
    negative = (codes[last] & 0x10) != 0
    unreadable = (run_length > MAX_RLE_RUN_CHARS) | ((run_length == MAX_RLE_RUN_CHARS) & negative)
    for run in _first_per_group(np.flatnonzero(unreadable), run_string):
        index = int(run_string[run])
        errors[index] = (
            f"hold a run of {run_length[run]} characters at position {first[run] - offsets[index]}, longer than "
            "pycocotools can read"
        )
    # Character j of a run carries bits 5j..5j+4; the bits of a run never overlap, so OR is a sum. Overlong runs
    # are left out of the shift (their string is refused anyway) so no shift leaves int64.
    position_in_run = np.arange(len(raw)) - np.repeat(first, run_length)
    position_in_run = np.minimum(position_in_run, MAX_RLE_RUN_CHARS - 1)
    payload = (codes & 0x1F).astype(np.int64) << (5 * position_in_run)
    values = np.add.reduceat(payload, first) if len(first) else np.zeros(0, np.int64)
    sign = np.left_shift(1, 5 * np.minimum(run_length, MAX_RLE_RUN_CHARS)).astype(np.int64)
    values[negative] -= sign[negative]
    # From the fourth run of a string on, each value is a delta to the run two before (C: cnts[m] = (uint)(x +
    # cnts[m-2]) for m > 2): per string, a running sum over its odd runs and over its even runs from the third.
    runs_per_string = np.bincount(run_string, minlength=len(strings))
    run_index = np.arange(len(values)) - np.repeat(np.cumsum(runs_per_string) - runs_per_string, runs_per_string)
    runs = values.copy()
    for chain in (run_index % 2 == 1, (run_index % 2 == 0) & (run_index >= 2)):
        runs[chain] = _grouped_cumsum(values[chain], run_string[chain])
    runs = np.mod(runs, _UINT32)
    refused = np.fromiter((error is not None for error in errors), bool, len(strings))
    keep = ~refused[run_string]
    return runs[keep], run_string[keep], errors


def _concatenate(strings: list[str], errors: list[str | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The bytes of the strings without an error, back to back; the string index of each byte; each string's
    first byte (strings left out get length 0)."""
    lengths = np.fromiter(
        (len(text) if error is None else 0 for text, error in zip(strings, errors, strict=True)), np.int64,
        len(strings),
    )
    joined = "".join(text for text, error in zip(strings, errors, strict=True) if error is None)
    raw = np.frombuffer(joined.encode("ascii"), dtype=np.uint8)
    return raw, np.repeat(np.arange(len(strings)), lengths), np.cumsum(lengths) - lengths


def _first_per_group(positions: np.ndarray, group_of: np.ndarray) -> list[int]:
    """Of sorted positions, the first one in each group (group_of maps a position to its group)."""
    if positions.size == 0:
        return []
    groups = group_of[positions]
    first = np.concatenate([[True], groups[1:] != groups[:-1]])
    return positions[first].tolist()


def _grouped_cumsum(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Running sum of `values` restarted at each new group (groups come sorted, as runs of strings do)."""
    if values.size == 0:
        return values
    total = np.cumsum(values)
    starts = np.flatnonzero(np.concatenate([[True], groups[1:] != groups[:-1]]))
    before = np.concatenate([[0], total[starts[1:] - 1]]) if len(starts) > 1 else np.zeros(1, np.int64)
    sizes = np.diff(np.append(starts, values.size))
    return total - np.repeat(before, sizes)
