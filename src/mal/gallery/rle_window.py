"""The masks of one image inside small windows, read straight from their compressed COCO RLE strings.

pycocotools decodes a mask to its whole image: a 1024 x 1024 image with 500 nuclei would mean 500 MB of pixels to
cut 500 crops of about 40 x 40. Here all the strings of an image are decoded together in a few numpy passes into
column pieces (column, first row, row after the last), and a window is filled from its mask's pieces alone. The
strings were checked by `mal.data.geometry` first (`check_masks_fit`), so they are well formed and their runs sum
to height x width.

The string format (pycocotools' rleToString): runs alternate background/foreground, background first, in
column-major order; each run is written 5 bits per character (offset 48), least significant first; bit 0x20 says
another character follows and bit 0x10 of the last one is the sign; from the fourth run on, the value written is
the run minus the run two before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Extent = tuple[int, int, int, int]  # x0, y0, x1, y1: columns [x0, x1) and rows [y0, y1)


def _segmented_cumsum(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Running sums of `values` that restart wherever `groups` (sorted) changes."""
    if not len(values):
        return values
    total = np.cumsum(values)
    first = np.r_[True, groups[1:] != groups[:-1]]
    before = (total - values)[first]  # the running sum just before each group
    return total - before[np.cumsum(first) - 1]


def run_lengths(strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(run lengths of every string back to back, the string each run belongs to, its index in that string)."""
    count = len(strings)
    raw = np.frombuffer("".join(strings).encode("ascii"), dtype=np.uint8).astype(np.int64) - 48
    if not raw.size:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    last = np.flatnonzero((raw & 0x20) == 0)  # the last character of each run
    first = np.r_[0, last[:-1] + 1]
    chars = last - first + 1
    shift = 5 * (np.arange(raw.size) - np.repeat(first, chars))
    values = np.add.reduceat((raw & 0x1F) << shift, first)
    negative = (raw[last] & 0x10) != 0
    values[negative] -= np.left_shift(1, 5 * chars[negative])
    string_ends = np.cumsum([len(text) for text in strings])
    owner = np.searchsorted(string_ends, last, side="right")
    per_string = np.bincount(owner, minlength=count)
    index = np.arange(len(values)) - np.repeat(np.cumsum(per_string) - per_string, per_string)
    # Undo the delta coding: run j > 2 was written minus run j - 2, so odd runs are running sums from run 1 and
    # even runs from run 2, within each string.
    for parity, start in ((1, 1), (0, 2)):
        chosen = np.flatnonzero((index % 2 == parity) & (index >= start))
        values[chosen] = _segmented_cumsum(values[chosen], owner[chosen])
    return values, owner, index


@dataclass(frozen=True)
class MaskSet:
    """Masks of one image as column pieces; pieces of mask m are [offsets[m], offsets[m + 1])."""

    column: np.ndarray
    top: np.ndarray
    bottom: np.ndarray
    offsets: np.ndarray
    areas: np.ndarray

    def extent(self, mask: int) -> Extent | None:
        """The tight box of the mask, or None when it is empty."""
        low, high = self.offsets[mask], self.offsets[mask + 1]
        if low == high:
            return None
        columns = self.column[low:high]
        return (int(columns.min()), int(self.top[low:high].min()), int(columns.max()) + 1,
                int(self.bottom[low:high].max()))

    def window(self, mask: int, left: int, top: int, side: int) -> np.ndarray:
        """The mask over the side x side window at (left, top) as uint8 0/1; the window must hold the whole mask
        (it may reach outside the image)."""
        low, high = self.offsets[mask], self.offsets[mask + 1]
        columns = self.column[low:high] - left
        # +1 where a piece starts, -1 below where it ends; summing down each column fills the pieces.
        steps = np.zeros((side + 1, side), dtype=np.int8)
        np.add.at(steps, (self.top[low:high] - top, columns), 1)
        np.add.at(steps, (self.bottom[low:high] - top, columns), -1)
        return np.cumsum(steps[:side], axis=0, dtype=np.int8).view(np.uint8)


def decode_masks(strings: Sequence[str], height: int) -> MaskSet:
    """The masks of one image (an empty string is an empty mask)."""
    runs, owner, index = run_lengths(strings)
    ends = _segmented_cumsum(runs, owner)
    foreground = np.flatnonzero((index % 2 == 1) & (runs > 0))
    start, stop, mask_of = ends[foreground] - runs[foreground], ends[foreground], owner[foreground]
    # A run that reaches the bottom of a column goes on at the top of the next: one piece per column it touches.
    first_col, last_col = start // height, (stop - 1) // height
    pieces = last_col - first_col + 1
    run_of = np.repeat(np.arange(len(start)), pieces)
    step = np.arange(len(run_of)) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    column = first_col[run_of] + step
    top = np.where(step == 0, start[run_of] - first_col[run_of] * height, 0)
    bottom = np.where(column == last_col[run_of], stop[run_of] - last_col[run_of] * height, height)
    per_mask = np.bincount(mask_of[run_of], minlength=len(strings))
    areas = np.bincount(mask_of, weights=runs[foreground], minlength=len(strings)).astype(np.int64)
    return MaskSet(column, top, bottom, np.r_[0, np.cumsum(per_mask)], areas)
