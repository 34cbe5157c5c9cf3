"""Write every card's picture: one job per image (decoded once), spread over a pool of processes.

Cards go in strips of up to SHEET_CARDS side by side, one JPEG file per strip, the cards of one image together.
Files, not cards, are what costs on disk: on this project's machines creating a file takes about 0.3 ms and
deleting one (the disk is mounted with `discard`) about 2 ms, against 0.3 ms to draw and encode a card, so 21,405
one-card files would take longer to create than to draw. A page of 100 cards still decodes only up to 100 strips
of 8 cards (about 20 megapixels). A file from an earlier run is overwritten in place and cut to its new length,
never deleted and created again.

The workers are spawned, not forked: the parent may hold torch and its threads (`mal inference`), and a spawned
worker imports only numpy, Pillow and OpenCV (about 0.3 s). Small galleries are drawn in this process.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from mal.gallery.crops import CropItem, encode_jpeg, render_card
from mal.gallery.rle_window import decode_masks
from mal.gallery.thumbnails import open_image

SHEET_CARDS = 8
# Below this many cards starting processes costs more than it saves.
POOL_MIN_CARDS = 600
MAX_WORKERS = 8


def sheet_name(sheet: int) -> str:
    """Where strip `sheet` lives under the cards folder (a thousand files per folder); page_script mirrors it."""
    return f"{sheet // 1000}/{sheet}.jpg"


@dataclass(frozen=True)
class ImageJob:
    """The cards of one image: where it is, what names it in errors, where its strips go, and which cards each
    strip holds (strip number, cards left to right)."""

    path: str
    image_id: int
    source: str | None
    out_dir: str
    size: int
    sheets: tuple[tuple[int, tuple[CropItem, ...]], ...]


@dataclass(frozen=True)
class CardFacts:
    """What drawing a card measured: the mask's area in pixels, its IoU with the ground truth (or None)."""

    area: int
    iou: float | None


def write_in_place(path: str, data: bytes) -> None:
    """Write `data` as the file's whole content, reusing its blocks when it exists (see the module doc)."""
    handle = os.open(path, os.O_WRONLY | os.O_CREAT, 0o666)
    try:
        written = os.write(handle, data)
        while written < len(data):
            written += os.write(handle, data[written:])
        os.ftruncate(handle, len(data))
    finally:
        os.close(handle)


def render_job(job: ImageJob) -> list[tuple[int, CardFacts]]:
    """Decode the image once and write its strips (the folders exist); (card index, facts) of each card."""
    image = open_image(Path(job.path), job.image_id, decode=True, source=job.source)
    assert isinstance(image, Image.Image)
    bgr = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR)
    every = [item for _, items in job.sheets for item in items]
    masks = decode_masks([item.counts or "" for item in every], image.height)
    truths = decode_masks([item.truth_counts or "" for item in every], image.height)
    facts = []
    number = 0
    for sheet, items in job.sheets:
        cards = []
        for item in items:
            card, iou = render_card(bgr, item, masks, truths, number, job.size)
            cards.append(card)
            facts.append((item.index, CardFacts(int(masks.areas[number]), iou)))
            number += 1
        # A card is 160 px wide, a multiple of JPEG's 16-px blocks: no block mixes two cards.
        write_in_place(os.path.join(job.out_dir, sheet_name(sheet)), encode_jpeg(np.hstack(cards)))
    return facts


def default_workers() -> int:
    return max(1, min(len(os.sched_getaffinity(0)), MAX_WORKERS))


def _one_thread() -> None:
    cv2.setNumThreads(1)  # the pool already uses every core


def render_all(jobs: list[ImageJob], workers: int | None = None) -> dict[int, CardFacts]:
    """Run every job; card index -> facts. The first job to fail stops the others and raises its error."""
    cards = sum(len(items) for job in jobs for _, items in job.sheets)
    count = min(default_workers() if workers is None else max(1, workers), len(jobs))
    pool = None
    if count > 1 and cards >= POOL_MIN_CARDS and len(jobs) > 1:
        try:
            context = multiprocessing.get_context("spawn")
            pool = concurrent.futures.ProcessPoolExecutor(count, mp_context=context, initializer=_one_thread)
        except (OSError, ImportError, NotImplementedError):  # no semaphores here (no /dev/shm): one process
            pool = None
    if pool is None:
        return {index: facts for job in jobs for index, facts in render_job(job)}
    # Largest images first, so no worker is left with a big one at the end.
    ordered = sorted(jobs, key=lambda job: len(job.sheets), reverse=True)
    results: dict[int, CardFacts] = {}
    with pool:
        futures = [pool.submit(render_job, job) for job in ordered]
        try:
            for future in concurrent.futures.as_completed(futures):
                results.update(future.result())
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return results
