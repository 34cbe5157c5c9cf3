"""Labeling in chunks that outlive the process that made them: the work split of a many-process run, and its resume.

The boxes are cut, in the single process's own batches (image-id order, `label_dataset`'s packing), into chunks of
about MAL_SHARD_BOXES boxes (default SHARD_BOXES). Chunk i of the chunks still to do goes to rank i mod world
size, so every rank gets the same number of boxes give or take a chunk, and every box is labeled in exactly the
batch it has in one process: the merged labels are the single process's, bit for bit.

Each finished chunk is written at once (atomically) as results_dir/<action>/shards/chunk_NNNNNN.<fingerprint>.json.
The fingerprint hashes what the labels depend on and nothing of the world size: the annotation file's content,
the image folder, the checkpoint's path, mtime and size, the test-time settings and the chunk size. A rerun of
the same command (with any number of processes) reuses the shards of its fingerprint and deletes any other, so a
killed rank loses at most the chunk it was labeling, and a changed input never mixes in stale labels. Rank 0 merges
the shards in file order; the caller writes its one output and then removes them.

Test hook: MAL_TEST_KILL_AFTER_SHARDS=R:N makes rank R SIGKILL itself right after writing its N-th shard (the
test of resuming after a killed rank; nothing else reads it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from mal.data.coco_boxes import CocoBoxes
from mal.data.datasets import LabelBoxDataset, PackedBatchSampler
from mal.engine.common import progress
from mal.engine.labeling import BoxLabel, label_batch
from mal.engine.predict import Labeler, label_dataset
from mal.engine.ranks import World
from mal.errors import DataError
from mal.fileio import atomic_write_json, remove_stale_temp_files
from mal.spec.schema import ExperimentSpec, TestTimeConfig

SHARD_BOXES = 512
SHARD_BOXES_ENV = "MAL_SHARD_BOXES"
KILL_HOOK_ENV = "MAL_TEST_KILL_AFTER_SHARDS"
SHARDS_DIR = "shards"
FORMAT = 1
# Keys of evaluate/inference that do not change a single label: where outputs go, how many processes, the inputs
# (hashed by content instead).
_NOT_LABELS = frozenset({"num_gpus", "num_nodes", "label_dump_path", "gallery", "label_file", "ann_path", "img_dir"})


@dataclass(frozen=True, eq=False)
class Chunk:
    """Consecutive batches of the label loader: `batches` are lists of its dataset items, `rows` the file rows
    of their boxes."""

    index: int
    batches: tuple[tuple[int, ...], ...]
    rows: np.ndarray


def shard_boxes() -> int:
    text = os.environ.get(SHARD_BOXES_ENV, "").strip()
    return max(int(text), 1) if text.isdigit() else SHARD_BOXES


def plan_chunks(dataset: LabelBoxDataset, batch_size: int, boxes_per_chunk: int) -> list[Chunk]:
    """The batches one process would run (`build_label_loader`'s packing), cut into chunks of at least
    `boxes_per_chunk` boxes (the last one may hold fewer)."""
    pieces = dataset.chunks
    batches = PackedBatchSampler([len(rows) for _, rows in pieces], batch_size).batches
    chunks: list[Chunk] = []
    current: list[tuple[int, ...]] = []
    boxes = 0

    def close() -> None:
        rows = np.concatenate([pieces[item][1] for batch in current for item in batch])
        chunks.append(Chunk(index=len(chunks), batches=tuple(current), rows=rows))

    for batch in batches:
        current.append(tuple(batch))
        boxes += sum(len(pieces[item][1]) for item in batch)
        if boxes >= boxes_per_chunk:
            close()
            current, boxes = [], 0
    if current:
        close()
    return chunks


def labeling_settings(spec: ExperimentSpec, options: TestTimeConfig) -> dict[str, Any]:
    """The settings the labels depend on: the section's test-time keys and train's thresholds and test margin."""
    settings = {key: value for key, value in options.model_dump(mode="json").items() if key not in _NOT_LABELS}
    settings["mask_thres"] = list(spec.train.mask_thres)
    settings["test_margin_rate"] = list(spec.train.test_margin_rate)
    return settings


def fingerprint(action: str, coco: CocoBoxes, checkpoint: Path, settings: dict[str, Any]) -> str:
    """16 hex digits naming the inputs of a labeling, the same for every world size."""
    stat = Path(checkpoint).stat()
    inputs = {
        "format": FORMAT,
        "action": action,
        "annotations": _file_sha256(coco.ann_path),
        "images": str(Path(coco.img_dir).resolve()),
        "checkpoint": [str(Path(checkpoint).resolve()), stat.st_mtime_ns, stat.st_size],
        "settings": settings,
        "shard_boxes": shard_boxes(),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ShardFolder:
    """The shard files of one fingerprint in one folder."""

    def __init__(self, folder: Path, fingerprint: str) -> None:
        self.folder = folder
        self.fingerprint = fingerprint

    def path(self, index: int) -> Path:
        return self.folder / f"chunk_{index:06d}.{self.fingerprint}.json"

    def prepare(self) -> list[int]:
        """Make the folder; drop what a killed writer or other inputs left there; the chunks already done."""
        self.folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(self.folder, "chunk_*")
        finished = []
        for path in sorted(self.folder.glob("chunk_*.json")):
            stem, _, tag = path.stem.partition(".")
            if tag == self.fingerprint and stem.removeprefix("chunk_").isdigit():
                finished.append(int(stem.removeprefix("chunk_")))
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # labels of other inputs: never to be merged
        return finished

    def write(self, chunk: Chunk, labels: Sequence[BoxLabel]) -> None:
        payload = {"format": FORMAT, "fingerprint": self.fingerprint, "chunk": chunk.index,
                   "labels": [label.record() for label in labels]}
        atomic_write_json(self.path(chunk.index), payload, indent=None)

    def read(self, chunk: Chunk, coco: CocoBoxes) -> list[BoxLabel]:
        path = self.path(chunk.index)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            labels = [BoxLabel(**entry) for entry in payload["labels"]]
            fits = payload["fingerprint"] == self.fingerprint and payload["chunk"] == chunk.index
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path} cannot be read ({type(exc).__name__}: {exc}); delete {self.folder} and run "
                            "again to label its chunks anew.") from None
        if not fits or sorted(label.ann_id for label in labels) != sorted(coco.ann_ids[chunk.rows].tolist()):
            raise DataError(f"{path} does not hold the labels of chunk {chunk.index}; delete {self.folder} and run "
                            "again to label its chunks anew.")
        return labels

    def remove(self) -> None:
        """Delete the shards (after the merged output is safely written) and the folder when nothing else is in it."""
        for path in self.folder.glob("chunk_*.json"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        with contextlib.suppress(OSError):
            self.folder.rmdir()


def label_boxes(world: World, labeler: Labeler, coco: CocoBoxes, spec: ExperimentSpec, options: TestTimeConfig,
                action: str, description: str) -> list[BoxLabel] | None:
    """Every box's label in file order on rank 0, None on the other ranks. One process with no shard to resume
    labels straight through; otherwise through shards, which the caller removes (`remove_shards`) once its output
    is written."""
    folder = Path(spec.results_dir) / action / SHARDS_DIR
    if world.size == 1 and not folder.exists():
        # One process and nothing left by a killed run: label straight through, as always.
        return label_dataset(labeler, coco, spec, options.batch_size, description)
    with world.together():
        settings = labeling_settings(spec, options)
        # `precision: auto` may resolve differently on another machine: the arithmetic actually used counts.
        settings["resolved_precision"] = getattr(labeler, "precision", None)
        shards = ShardFolder(folder, fingerprint(action, coco, labeler.checkpoint, settings))
        dataset = LabelBoxDataset(coco, crop_size=labeler.crop_size, margin_rate=spec.train.test_margin_rate,
                                  chunk_size=options.batch_size)
        chunks = plan_chunks(dataset, options.batch_size, shard_boxes())
        finished = shards.prepare() if world.is_first else []
    if world.size == 1 and not finished:
        shards.remove()
        return label_dataset(labeler, coco, spec, options.batch_size, description)
    tag, finished = world.broadcast((shards.fingerprint, finished))
    with world.together():
        _check_same_inputs(shards, tag, world)
    done = set(finished)
    todo = [chunk for chunk in chunks if chunk.index not in done]
    if world.is_first:
        _announce(action, coco, chunks, todo, world)
    with world.together(hint=f"; the finished shards are kept in {folder}: run the same command again to continue"):
        _label_chunks(world, labeler, spec, dataset, shards, todo[world.rank :: world.size], description)
    if not world.is_first:
        return None
    labels = [label for chunk in chunks for label in shards.read(chunk, coco)]
    order = coco.row_of_ann
    labels.sort(key=lambda label: order[label.ann_id])
    return labels


def _check_same_inputs(shards: ShardFolder, first_rank_tag: str, world: World) -> None:
    if first_rank_tag != shards.fingerprint:
        raise DataError(f"rank {world.rank} labels other inputs than rank 0 (annotation file, images, checkpoint, "
                        "or a precision the machine resolves differently); every node must see the same files at "
                        "the same paths.")
    if not shards.folder.is_dir():
        raise DataError(f"rank {world.rank} does not see {shards.folder}, made by rank 0; results_dir must be on "
                        "storage every node shares.")


def _announce(action: str, coco: CocoBoxes, chunks: list[Chunk], todo: list[Chunk], world: World) -> None:
    reused = len(chunks) - len(todo)
    if reused:
        boxes = len(coco) - sum(len(chunk.rows) for chunk in todo)
        print(f"mal {action}: reusing {reused} finished shards ({boxes} boxes) of an earlier run", flush=True)
    if world.size > 1:
        print(f"mal {action}: {sum(len(chunk.rows) for chunk in todo)} boxes in {len(todo)} chunks over "
              f"{world.size} processes ({world.launcher})", flush=True)


def _as_is(batch: Any) -> Any:
    return batch  # LabelBoxDataset.__getitems__ returns a whole batch


def _label_chunks(world: World, labeler: Labeler, spec: ExperimentSpec, dataset: LabelBoxDataset,
                  shards: ShardFolder, mine: list[Chunk], description: str) -> None:
    """Label this rank's chunks through one loader (workers start once), writing each chunk as it completes."""
    if not mine:
        return
    batches = [list(batch) for chunk in mine for batch in chunk.batches]
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=spec.dataset.num_workers_per_gpu,
                        collate_fn=_as_is)
    stream: Iterator[dict[str, Any]] = iter(loader)
    if world.is_first:  # one bar on a terminal; the other ranks label silently
        stream = progress(stream, total=sum(len(chunk.rows) for chunk in mine), description=description,
                          size=lambda batch: len(batch["ann_id"]))
    ends: dict[int, Chunk] = {}  # position of a chunk's last batch in the stream -> the chunk
    position = -1
    for chunk in mine:
        position += len(chunk.batches)
        ends[position] = chunk
    labels: list[BoxLabel] = []
    written = 0
    for position, batch in enumerate(stream):
        labels.extend(label_batch(labeler.predict, batch, spec.train.mask_thres, labeler.device, labeler.refine))
        finished = ends.get(position)
        if finished is not None:
            shards.write(finished, labels)
            written += 1
            _test_kill_hook(world.rank, written)
            labels = []


def _test_kill_hook(rank: int, written: int) -> None:
    """MAL_TEST_KILL_AFTER_SHARDS=R:N: rank R dies by SIGKILL right after its N-th shard (the resume test)."""
    if os.environ.get(KILL_HOOK_ENV) == f"{rank}:{written}":
        os.kill(os.getpid(), signal.SIGKILL)


def remove_shards(results_dir: str | Path, action: str) -> None:
    """Delete the shards of results_dir/<action> once the output they make up is written."""
    ShardFolder(Path(results_dir) / action / SHARDS_DIR, "").remove()
