"""Hostile geometry and broken images (issue #17, classes 2 and 6, and the COCO/gallery part of 10).

Masks that pycocotools mishandles (a NaN or 1e9 polygon coordinate, RLE counts that do not sum to height x width,
negative or over-long runs, a size that is not the image's) and images that are truncated must be refused by
every action that reads them - `mal dataset check`, train, evaluate, inference, `mal gallery` with and without
`--gt` - with exit 2, one line naming the file and the annotation, within seconds (a 60 s timeout turns a hang
into a failure), and nothing written. A property test checks that whatever the validator accepts, pycocotools
decodes to exactly the image's size (and, for compressed RLE, to the very runs the validator read).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image
from pycocotools import mask as mask_utils

from mal.data.geometry import compressed_rle_counts, segmentation_problem
from mal.masks import decode_rle, encode_masks
from support.reliability import Bench, assert_user_error, leftovers, mal_env, run_mal

TIMEOUT = 60  # every case answers in seconds; a hang (the over-long RLE spun forever) must fail, not block CI
SIZE = 160  # the synthetic images are 160 x 160; annotation 1 lies on image 1


@dataclass
class Run:
    """What one case runs: `mal` argv, the words its error line must hold, extra environment, and a folder that
    must not appear (the gallery's output)."""

    argv: list[str]
    words: list[str]
    env: dict[str, str] = field(default_factory=dict)
    no_output: Path | None = None


Case = Callable[[Bench], Run]


def with_segmentation(segmentation: object) -> Callable[[dict], None]:
    def mutate(data: dict) -> None:
        data["annotations"][0]["segmentation"] = segmentation

    return mutate


def _valid_rle(height: int, width: int) -> dict:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[height // 4 : height // 2, width // 4 : width // 2] = 1
    return encode_masks(mask)[0]


# Each bad segmentation replaces annotation 1's, with the words the error must say about it.
GEOMETRY: dict[str, tuple[object, list[str]]] = {
    "polygon_nan": ([[10, 10, 50, float("nan"), 30, 60]], ["nan", "not a finite number"]),
    "polygon_infinity": ([[10, 10, 50, 20, float("inf"), 60]], ["inf", "not a finite number"]),
    "polygon_minus_infinity": ([[float("-inf"), 10, 50, 20, 30, 60]], ["not a finite number"]),
    "polygon_1e9": ([[10, 10, 1e9, 20, 30, 60]], ["1000000000.0", "far outside"]),
    "polygon_int_beyond_float": ([[10, 10, 10**400, 20, 30, 60]], ["not a finite number"]),
    "polygon_zigzag_outline": ([[0, 0, 1500, 0] * 2000], ["outline", "perimeter"]),
    "rle_list_wrong_sum": ({"size": [SIZE, SIZE], "counts": [100, 200, 300]}, ["sum to 600", "25,600"]),
    "rle_list_beyond_uint32": ({"size": [SIZE, SIZE], "counts": [2**32, 0]}, ["above 2**32"]),
    "rle_string_wrong_sum": ({"size": [SIZE, SIZE], "counts": _valid_rle(80, 80)["counts"]}, ["sum to 6,400"]),
    "rle_string_negative_run": ({"size": [SIZE, SIZE], "counts": "@"}, ["sum to 4,294,967,280"]),
    "rle_string_run_too_long": ({"size": [SIZE, SIZE], "counts": "PPPPPPPP0"}, ["run of 9 characters"]),
    "rle_string_dangling_run": ({"size": [SIZE, SIZE], "counts": "0P"}, ["middle of a run"]),
    "rle_string_bad_character": ({"size": [SIZE, SIZE], "counts": "12!4"}, ["'!'", "not an RLE character"]),
    "rle_string_non_ascii": ({"size": [SIZE, SIZE], "counts": "12é"}, ["non-ASCII"]),
    "rle_string_over_long": ({"size": [SIZE, SIZE], "counts": "1" * 200_000}, ["200,000 characters"]),
}


def check_case(segmentation: object, words: list[str]) -> Case:
    def build(bench: Bench) -> Run:
        data = bench.coco()
        with_segmentation(segmentation)(data)
        ann = bench.write_json(data)
        return Run(["dataset", "check", "-e", str(bench.spec_for(ann))], ["ann.json", "annotation 1", *words])

    return build


def _raw_json_case(payload: bytes, *words: str) -> Case:
    def build(bench: Bench) -> Run:
        ann = bench.root / "ann.json"
        ann.write_bytes(payload)
        return Run(["dataset", "check", "-e", str(bench.spec_for(ann))], ["ann.json", *words])

    return build


def _deep_but_parsable(bench: Bench) -> Run:
    """500 levels parse (json stops near 1000) but copy.deepcopy of the file, as inference does, does not."""
    data = bench.coco()
    ann = bench.root / "ann.json"
    text = json.dumps(data)
    ann.write_text(text[:-1] + ', "info": ' + "[" * 500 + "]" * 500 + "}")
    return Run(["dataset", "check", "-e", str(bench.spec_for(ann))], ["ann.json", "nested too deeply"])


def _truncated_image(bench: Bench) -> Run:
    images = bench.copied_images()
    victim = images / "synthetic_0003.png"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    spec = bench.spec_for(bench.synthetic / "annotations.json", images)
    return Run(["dataset", "check", "-e", str(spec)], ["synthetic_0003.png", "image 3", "truncated"])


def _corrupt_pixel_data(bench: Bench) -> Run:
    """A valid header and a damaged compressed stream: only decoding the pixels finds it."""
    images = bench.copied_images()
    victim = images / "synthetic_0002.png"
    data = bytearray(victim.read_bytes())
    start = data.index(b"IDAT") + 4
    data[start + 10 : start + 60] = bytes(50)
    victim.write_bytes(bytes(data))
    spec = bench.spec_for(bench.synthetic / "annotations.json", images)
    return Run(["dataset", "check", "-e", str(spec)], ["synthetic_0002.png", "cannot be read"])


def _truncated_jpeg(bench: Bench) -> Run:
    images = bench.root / "images"
    images.mkdir()
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, format="JPEG", quality=90)
    (images / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) * 2 // 3])
    ann = bench.write_json(
        {
            "images": [{"id": 1, "file_name": "cut.jpg", "width": 128, "height": 96}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 60, 60]}],
            "categories": [{"id": 1, "name": "thing"}],
        }
    )
    spec = bench.spec_for(ann, images)
    return Run(["dataset", "check", "-e", str(spec), "dataset.load_mask=false"], ["cut.jpg", "truncated"])


CHECK_CASES: dict[str, Case] = {name: check_case(seg, words) for name, (seg, words) in GEOMETRY.items()}
CHECK_CASES.update(
    json_nested_100000_deep=_raw_json_case(b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    json_nested_in_an_object=_raw_json_case(b'{"images": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deeply"),
    json_nested_500_deep=_deep_but_parsable,
    json_integer_of_5000_digits=_raw_json_case(b'{"images": [' + b"7" * 5000 + b"]}", "cannot read"),
    image_truncated_png=_truncated_image,
    image_corrupt_pixel_data=_corrupt_pixel_data,
    image_truncated_jpeg=_truncated_jpeg,
)

# The nastiest geometry, also through every other action that reads masks.
NASTIEST = ("polygon_nan", "rle_string_over_long", "rle_list_wrong_sum", "rle_string_wrong_sum")


def _labels_with(bench: Bench, name: str, segmentation: object) -> Path:
    data = bench.coco()
    with_segmentation(segmentation)(data)
    return bench.write_json(data, name)


def gallery_gt_case(segmentation: object, words: list[str]) -> Case:
    """`mal gallery --gt`: valid labels, bad ground truth."""

    def build(bench: Bench) -> Run:
        gt = _labels_with(bench, "gt.json", segmentation)
        out = bench.root / "gallery"
        argv = ["gallery", str(bench.synthetic / "annotations.json"), str(bench.images), "--out", str(out)]
        return Run([*argv, "--gt", str(gt)], ["gt.json", "annotation 1", *words], no_output=out)

    return build


def gallery_case(segmentation: object, words: list[str]) -> Case:
    """`mal gallery` on a label file with a bad mask."""

    def build(bench: Bench) -> Run:
        labels = _labels_with(bench, "labels.json", segmentation)
        out = bench.root / "gallery"
        return Run(["gallery", str(labels), str(bench.images), "--out", str(out)],
                   ["labels.json", "annotation 1", *words], no_output=out)

    return build


def gallery_edit_case(edit: Callable[[dict], object], *words: str, env: dict[str, str] | None = None) -> Case:
    """`mal gallery` on the synthetic labels after `edit` (which may return a replacement document)."""

    def build(bench: Bench) -> Run:
        data = bench.coco()
        replaced = edit(data)
        labels = bench.write_json(data if replaced is None else replaced, "labels.json")
        out = bench.root / "gallery"
        return Run(["gallery", str(labels), str(bench.images), "--out", str(out)], ["labels.json", *words],
                   env=env or {}, no_output=out)

    return build


def _gallery_mask_of_another_size(bench: Bench) -> Run:
    """No width/height in the label file: the mask is checked against the image as it is on disk."""
    data = bench.coco()
    for image in data["images"]:
        del image["width"], image["height"]
    with_segmentation(_valid_rle(80, 80))(data)
    labels = bench.write_json(data, "labels.json")
    out = bench.root / "gallery"
    return Run(["gallery", str(labels), str(bench.images), "--out", str(out)],
               ["labels.json", "annotation 1", "synthetic_0001.png", "[80, 80]"], no_output=out)


def _gallery_deep_nesting(bench: Bench) -> Run:
    labels = bench.root / "labels.json"
    labels.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    out = bench.root / "gallery"
    return Run(["gallery", str(labels), str(bench.images), "--out", str(out)], ["labels.json", "nested too deeply"],
               no_output=out)


def _drop_image_key(key: str) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        del data["images"][0][key]

    return edit


def _drop_ann_key(key: str) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        del data["annotations"][0][key]

    return edit


GALLERY_CASES: dict[str, Case] = {
    **{f"gt_{name}": gallery_gt_case(*GEOMETRY[name]) for name in NASTIEST},
    **{f"labels_{name}": gallery_case(*GEOMETRY[name]) for name in NASTIEST},
    "image_without_file_name": gallery_edit_case(_drop_image_key("file_name"), "images[0]", "file_name"),
    "image_without_id": gallery_edit_case(_drop_image_key("id"), "images[0]", "id"),
    "annotation_without_image_id": gallery_edit_case(_drop_ann_key("image_id"), "annotation 1", "image_id"),
    "bbox_nan": gallery_edit_case(lambda d: d["annotations"][0].update(bbox=[1, 2, float("nan"), 4]), "bbox"),
    "image_above_pixel_limit": gallery_edit_case(
        lambda d: None, "synthetic_0001.png", "MAL_MAX_IMAGE_PIXELS", env={"MAL_MAX_IMAGE_PIXELS": "10000"}
    ),
    "mask_of_another_size": _gallery_mask_of_another_size,
    "nested_100000_deep": _gallery_deep_nesting,
}

FAST_CASES = {
    **{f"check-{name}": case for name, case in CHECK_CASES.items()},
    **{f"gallery-{name}": case for name, case in GALLERY_CASES.items()},
}


def _run_case(run: Run, bench: Bench, tmp_path: Path) -> None:
    env = mal_env(MAL_CACHE_DIR=str(tmp_path / "cache"), **run.env)
    result = run_mal(*run.argv, env=env, cwd=tmp_path, timeout=TIMEOUT)
    last = assert_user_error(result, *run.words)
    assert "Original Traceback" not in result.stderr and len(last) < 600, last
    assert leftovers(bench.results) == []
    if run.no_output is not None:
        assert not (run.no_output / "index.html").exists()
        assert not list(run.no_output.glob("thumbs/*")), "thumbnails were written before the error"


@pytest.mark.slow
@pytest.mark.parametrize("case", list(FAST_CASES), ids=list(FAST_CASES))
def test_hostile_geometry_and_images_give_one_line(case, tmp_path, synthetic):
    bench = Bench(tmp_path, synthetic)
    _run_case(FAST_CASES[case](bench), bench, tmp_path)


def _model_cases(trained: Path) -> dict[str, Case]:
    """evaluate and inference read ground-truth masks: the bad ones must stop them before any pycocotools call."""

    def evaluate(segmentation: object, words: list[str]) -> Case:
        def build(bench: Bench) -> Run:
            ann = _labels_with(bench, "ann.json", segmentation)
            return Run(["evaluate", "-e", str(bench.spec_for(ann)), f"evaluate.checkpoint={trained}"],
                       ["ann.json", "annotation 1", *words])

        return build

    def inference(segmentation: object, words: list[str]) -> Case:
        def build(bench: Bench) -> Run:
            ann = _labels_with(bench, "ann.json", segmentation)
            argv = ["inference", "-e", str(bench.spec_for(ann)), f"inference.checkpoint={trained}",
                    "inference.load_mask=true", "inference.gallery=true",
                    f"inference.label_dump_path={bench.results / 'labels.json'}"]
            return Run(argv, ["ann.json", "annotation 1", *words])

        return build

    cases = {f"evaluate-{name}": evaluate(*GEOMETRY[name]) for name in NASTIEST}
    cases.update({f"inference-{name}": inference(*GEOMETRY[name]) for name in ("polygon_nan", "rle_string_over_long")})
    return cases


MODEL_CASE_NAMES = [f"evaluate-{name}" for name in NASTIEST] + [
    f"inference-{name}" for name in ("polygon_nan", "rle_string_over_long")
]


@pytest.mark.slow
@pytest.mark.parametrize("case", MODEL_CASE_NAMES, ids=MODEL_CASE_NAMES)
def test_evaluate_and_inference_refuse_bad_ground_truth_masks(case, tmp_path, synthetic, trained):
    bench = Bench(tmp_path, synthetic)
    _run_case(_model_cases(trained)[case](bench), bench, tmp_path)
    assert not (bench.results / "labels.json").exists()


@pytest.mark.slow
def test_train_refuses_a_bad_validation_mask_before_training(tmp_path, synthetic):
    bench = Bench(tmp_path, synthetic)
    ann = _labels_with(bench, "ann.json", GEOMETRY["polygon_nan"][0])
    result = run_mal("train", "-e", bench.spec_for(ann), timeout=TIMEOUT)
    assert_user_error(result, "ann.json", "annotation 1", "not a finite number")
    assert not (bench.results / "train").exists()


@pytest.mark.slow
def test_truncated_image_in_a_dataloader_worker_ends_as_one_line(tmp_path, synthetic):
    """The header is fine, so loading passes; the worker that decodes the pixels raises. torch re-raises that in
    the main process wrapped in a 30-line 'Caught ... Original Traceback' message: it must still be one line."""
    bench = Bench(tmp_path, synthetic)
    images = bench.copied_images()
    victim = images / "synthetic_0001.png"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    spec = bench.spec_for(synthetic / "annotations.json", images)
    result = run_mal("train", "-e", spec, "dataset.num_workers_per_gpu=1", "dataset.load_mask=false",
                     "train.num_epochs=1", timeout=120)
    last = assert_user_error(result, "synthetic_0001.png", "cannot be decoded")
    assert "Original Traceback" not in result.stderr and "DataLoader worker" not in result.stderr, last
    assert leftovers(bench.results) == []  # status.json ends with FAILURE, no checkpoint


# ------------------------------------------------------------------------ property: accepted means decodable

HW = st.tuples(st.integers(1, 7), st.integers(1, 7))
RLE_CHARS = "".join(chr(c) for c in range(48, 112))


@st.composite
def rle_strings(draw: st.DrawFn, height: int, width: int) -> str:
    """Valid encodings of random masks, the same with a few characters changed, and arbitrary strings."""
    kind = draw(st.sampled_from(["valid", "mutated", "random"]))
    if kind == "random":
        return draw(st.text(alphabet=RLE_CHARS + "!~\x00é", max_size=14))
    bits = draw(st.lists(st.booleans(), min_size=height * width, max_size=height * width))
    mask = np.asarray(bits, dtype=np.uint8).reshape(height, width)
    counts = list(encode_masks(mask)[0]["counts"])
    for _ in range(draw(st.integers(0, 3)) if kind == "mutated" else 0):
        position = draw(st.integers(0, len(counts)))
        operation = draw(st.sampled_from(["insert", "replace", "delete"]))
        char = draw(st.sampled_from(RLE_CHARS))
        if operation == "insert":
            counts.insert(position, char)
        elif counts:
            index = min(position, len(counts) - 1)
            if operation == "replace":
                counts[index] = char
            else:
                del counts[index]
    return "".join(counts)


@st.composite
def segmentations(draw: st.DrawFn) -> tuple[object, int, int]:
    height, width = draw(HW)
    size = draw(st.sampled_from([[height, width], [height, width], [width, height], [height + 1, width]]))
    form = draw(st.sampled_from(["string", "list", "polygons"]))
    if form == "string":
        return {"size": size, "counts": draw(rle_strings(height, width))}, height, width
    if form == "list":
        runs = st.lists(st.integers(-2, height * width), max_size=8)
        return {"size": size, "counts": draw(runs)}, height, width
    coordinate = st.one_of(
        st.floats(-3 * max(height, width), 3 * max(height, width)),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(-(10**12), 10**12),
    )
    polygon = st.lists(coordinate, min_size=5, max_size=14)
    return draw(st.lists(polygon, min_size=1, max_size=3)), height, width


def _mask_of_runs(runs: np.ndarray, height: int, width: int) -> np.ndarray:
    values = np.arange(len(runs)) % 2
    return np.repeat(values, runs).astype(np.uint8).reshape((height, width), order="F")


@settings(max_examples=400, deadline=None)
@given(segmentations())
@example(({"size": [2, 2], "counts": "4"}, 2, 2))
@example(({"size": [2, 2], "counts": "1" * 20}, 2, 2))
@example(({"size": [2, 2], "counts": "PPPPPPPP0"}, 2, 2))
@example(([[0, 0, 1e9, 0, 1, 1]], 3, 3))
@example(({"size": [30000, 30000], "counts": "5P`aVla0kgXSn8"}, 30000, 30000))  # a 7-character run
def test_whatever_the_validator_accepts_pycocotools_decodes_to_the_image_size(drawn):
    segmentation, height, width = drawn
    if segmentation_problem(segmentation, height, width) is not None:
        return  # refused: pycocotools never sees it
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        assert mask_utils.decode(rle).shape == (height, width)
        return
    counts = segmentation["counts"]
    if isinstance(counts, list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
        assert int(mask_utils.area(rle)) == sum(counts[1::2])
    else:
        rle = {"size": segmentation["size"], "counts": counts.encode("ascii")}
        assert int(mask_utils.area(rle)) == int(compressed_rle_counts(counts)[1::2].sum())
    if height * width <= 10**6:
        mask = decode_rle({"size": rle["size"], "counts": rle["counts"]})
        assert mask.shape == (height, width)
        if isinstance(counts, str):
            np.testing.assert_array_equal(mask, _mask_of_runs(compressed_rle_counts(counts), height, width))
