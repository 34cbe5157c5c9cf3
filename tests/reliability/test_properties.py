"""Property-based tests: whatever the input, the spec loader and the COCO validator answer with a result or their
own user error (never another exception), RLE round-trips exactly, and pasted masks stay inside the image."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mal.data.coco import check_coco
from mal.data.synthetic import make_synthetic_coco
from mal.errors import DataError, SpecError
from mal.masks import decode_rle, encode_masks, paste_masks, rle_area
from mal.spec.load import all_keys, load_spec

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# ------------------------------------------------------------------------------------------------ spec loader

yaml_ish = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "",
            "~",
            "null",
            "[1, 2",
            "{a: 1}",
            "!!python/name:os.system",
            "&a [*a]",
            "1e-5",
            "-1",
            "1e999",
            "nan",
            ".inf",
            "true",
            "[]",
            "'",
            '"',
            "0x1F",
            "2**70",
            "vit-tiny/16",
            "\x00",
            "a: b: c",
        ]
    ),
    st.integers().map(str),
    st.floats(allow_nan=True).map(str),
)
keys = st.one_of(st.sampled_from(all_keys()), st.text(max_size=20), st.sampled_from(["train", "train.", ".", "a.b.c"]))
overrides = st.lists(st.one_of(st.builds(lambda k, v: f"{k}={v}", keys, yaml_ish), st.text(max_size=30)), max_size=4)


@FAST
@given(overrides)
@example(["0\n0=\x1b"])  # a key with a newline and a value YAML cannot read: the message once broke over two lines
def test_any_override_gives_a_spec_or_a_spec_error(texts):
    try:
        spec = load_spec(None, texts)
    except SpecError as exc:
        message = str(exc)
        assert message and "\n" not in message.strip() and len(message) < 2000
    else:
        assert spec.train.num_epochs >= 1


@FAST
@given(st.text(max_size=400))
def test_any_spec_file_text_gives_a_spec_or_a_spec_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("spec") / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_spec(path)
    except SpecError as exc:
        assert "\n" not in str(exc).strip()


# ------------------------------------------------------------------------------------------------ COCO validator


@pytest.fixture(scope="module")
def valid_coco(tmp_path_factory) -> tuple[dict, Path]:
    root = tmp_path_factory.mktemp("coco")
    make_synthetic_coco(root, num_images=3, seed=1)
    return json.loads((root / "annotations.json").read_text()), root / "images"


odd_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(),
    st.text(max_size=5),
    st.just([]),
    st.just({}),
    st.lists(st.floats(), max_size=5),
    st.lists(st.integers(-5, 5), max_size=7),
    st.just({"size": [1, 1], "counts": "0"}),
    st.just({"size": "ab", "counts": [1, "x"]}),
)


def _paths(node: object, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node[:3]):
            found += _paths(value, (*prefix, index))
    return found


@st.composite
def mutations(draw):
    return [
        (
            draw(st.integers(0, 10_000)),
            draw(st.sampled_from(["set", "delete", "add"])),
            draw(odd_values),
            draw(
                st.sampled_from(
                    [
                        "id",
                        "image_id",
                        "category_id",
                        "bbox",
                        "segmentation",
                        "width",
                        "height",
                        "file_name",
                        "iscrowd",
                        "size",
                        "counts",
                        "name",
                    ]
                )
            ),
        )
        for _ in range(draw(st.integers(1, 4)))
    ]


def _mutate(data: dict, plan: list) -> dict:
    data = copy.deepcopy(data)
    for pick, action, value, key in plan:
        paths = [path for path in _paths(data) if path]
        path = paths[pick % len(paths)]
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        if action == "set":
            parent[path[-1]] = copy.deepcopy(value)
        elif action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[key] = copy.deepcopy(value)
    return data


@FAST
@given(plan=mutations(), load_mask=st.booleans())
def test_any_mutation_of_a_valid_coco_file_loads_or_is_a_data_error(tmp_path_factory, valid_coco, plan, load_mask):
    raw, images = valid_coco
    path = tmp_path_factory.mktemp("mutant") / "ann.json"
    path.write_text(json.dumps(_mutate(raw, plan)))
    coco, report = check_coco(path, images, load_mask=load_mask)
    assert (coco is not None) == report.ok
    if coco is None:
        assert report.errors and str(path) in report.summary()
        assert isinstance(DataError(report.summary()), DataError)
    else:
        assert len(coco) == len(coco.boxes_xyxy) and np.isfinite(coco.boxes_xyxy).all()


# ------------------------------------------------------------------------------------------------ RLE and paste-back


@FAST
@given(
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    count=st.integers(1, 4),
    seed=st.integers(0, 2**31 - 1),
    density=st.floats(0, 1),
)
def test_rle_round_trip_is_exact_and_area_is_the_pixel_count(height, width, count, seed, density):
    masks = (np.random.default_rng(seed).random((height, width, count)) < density).astype(np.uint8)
    rles = encode_masks(masks)
    assert all(isinstance(rle["counts"], str) and rle["size"] == [height, width] for rle in rles)
    assert np.array_equal(decode_rle(rles), masks)
    assert rle_area(rles).tolist() == masks.sum(axis=(0, 1)).tolist()
    assert json.loads(json.dumps(rles)) == rles


coordinate = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)


@FAST
@given(
    height=st.integers(1, 48),
    width=st.integers(1, 48),
    boxes=st.lists(st.tuples(*[coordinate] * 4), min_size=1, max_size=5),
    exact=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
    threshold=st.floats(0, 0.99),
)
def test_paste_masks_never_crashes_and_masks_stay_inside_the_image(height, width, boxes, exact, seed, threshold):
    count = len(boxes)
    generator = torch.Generator().manual_seed(seed)
    probs = torch.rand(count, 8, 8, generator=generator)
    box_masks = torch.ones(count, 16, 16)
    regions = np.asarray(boxes, dtype=np.float64)
    results = paste_masks(probs, box_masks, regions, (height, width), threshold, boxes=regions if exact else None)
    assert len(results) == count
    for result, (x0, y0, x1, y1) in zip(results, regions.tolist(), strict=True):
        mask = decode_rle(result["segmentation"])
        assert mask.shape == (height, width)
        assert result["area"] == int(mask.sum())
        assert 0.0 <= result["score"] <= 1.0
        if result["area"]:
            rows, cols = np.nonzero(mask)
            # Foreground only where the crop region covers pixels (the midpoint pixel for sub-pixel regions).
            assert rows.min() >= min(np.floor(y0), np.floor((y0 + y1) / 2)) - 1
            assert cols.max() <= max(np.ceil(x1), np.ceil((x0 + x1) / 2)) + 1
