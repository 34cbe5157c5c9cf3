"""The bad-input corpus: every hand-made broken spec, COCO file, image, archive and checkpoint goes through the real
CLI (a subprocess) and must give exit 2, no traceback, one last stderr line naming the culprit, and leave nothing
half-written in results_dir. Inputs that are unusual but legitimate (16-bit, CMYK, EXIF, unicode names) must work.
"""

from __future__ import annotations

import copy
import io
import json
import shutil
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from support.archives import Member, build_tar, build_zip
from support.reliability import Bench, assert_user_error, leftovers, mal_env, run_mal, status_events, write_spec

pytestmark = pytest.mark.slow


# A case builds its inputs and returns (argv for `mal`, words the last stderr line must contain).
Case = Callable[[Bench], tuple[list[str], list[str]]]


def spec_case(text: str, *words: str, names_file: bool = True) -> Case:
    def build(bench: Bench) -> tuple[list[str], list[str]]:
        spec = bench.spec_text(text.replace("{ann}", str(bench.synthetic / "annotations.json")))
        return ["train", "-e", str(spec), f"results_dir={bench.results}"], ["spec.yaml"] * names_file + list(words)

    return build


def override_case(override: str, *words: str) -> Case:
    def build(bench: Bench) -> tuple[list[str], list[str]]:
        spec = bench.spec_for(bench.synthetic / "annotations.json")
        return ["train", "-e", str(spec), override], list(words)

    return build


SPEC_CASES: dict[str, Case] = {
    "empty_file": spec_case("", "dataset.train_ann_path", names_file=False),
    "wrong_type": spec_case("train:\n  lr: fast\n", "train.lr", "'fast'"),
    "unknown_key": spec_case("train:\n  learning_rate: 1e-4\n", "train.learning_rate"),
    "unknown_section": spec_case("trainer:\n  lr: 1e-4\n", "trainer.lr", "did you mean train.lr"),
    "out_of_range": spec_case("train:\n  num_epochs: -3\n", "train.num_epochs", "-3"),
    "bad_enum": spec_case("model:\n  arch: vit-giant/16\n", "model.arch", "vit-giant/16"),
    "section_is_scalar": spec_case("train: 5\n", "train", "mapping"),
    "top_level_list": spec_case("- train\n- lr\n", "mapping"),
    "non_string_key": spec_case("train:\n  1: 2\n", "must be a string"),
    "invalid_yaml": spec_case("train:\n  lr: [1e-4\n", "not valid YAML"),
    "python_object_tag": spec_case("train: !!python/object/apply:os.system ['touch PWNED']\n", "unsupported YAML tag"),
    "python_name_tag": spec_case("train:\n  lr: !!python/name:os.system\n", "unsupported YAML tag"),
    # Aliases expand to ~43 million strings: the error must still be one short line, at once.
    "billion_laughs": spec_case(
        "train:\n  lr: [&a [lol,lol,lol,lol,lol,lol,lol,lol,lol], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], "
        "&c [*b,*b,*b,*b,*b,*b,*b,*b,*b], &d [*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d,*d], "
        "&f [*e,*e,*e,*e,*e,*e,*e,*e,*e], &g [*f,*f,*f,*f,*f,*f,*f,*f,*f], &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]]\n",
        "train.lr",
    ),
    "crop_not_multiple_of_patch": spec_case(
        "dataset:\n  train_ann_path: {ann}\n  train_img_dir: x\n  crop_size: 50\n",
        "dataset.crop_size",
        "50",
        names_file=False,
    ),
    "override_without_equals": override_case("train.lr", "train.lr", "key.path=value"),
    "override_unknown_key": override_case("train.lrr=1e-4", "train.lrr", "did you mean train.lr"),
    "override_bad_value": override_case("train.batch_size=many", "train.batch_size", "'many'"),
}


def _binary_spec(bench: Bench) -> tuple[list[str], list[str]]:
    spec = bench.root / "spec.yaml"
    spec.write_bytes(b"\xff\xfe\x00garbage\x80\x81")
    return ["train", "-e", str(spec)], ["spec.yaml", "UTF-8"]


def _folder_spec(bench: Bench) -> tuple[list[str], list[str]]:
    folder = bench.root / "spec.yaml"
    folder.mkdir()
    return ["train", "-e", str(folder)], ["spec.yaml", "does not exist"]


def _huge_spec(bench: Bench) -> tuple[list[str], list[str]]:
    spec = bench.root / "spec.yaml"
    spec.write_text("# " + "x" * 2_000_000 + "\n")
    return ["train", "-e", str(spec)], ["spec.yaml", "larger than"]


SPEC_CASES.update(binary_file=_binary_spec, spec_is_a_folder=_folder_spec, two_megabyte_spec=_huge_spec)


def coco_case(mutate: Callable[[dict], object], *words: str) -> Case:
    """`mal dataset check` on the synthetic COCO file after `mutate` (which may return a replacement)."""

    def build(bench: Bench) -> tuple[list[str], list[str]]:
        data = bench.coco()
        replaced = mutate(data)
        ann = bench.write_json(data if replaced is None else replaced)
        return ["dataset", "check", "-e", str(bench.spec_for(ann))], ["ann.json", *words]

    return build


def _set(path: str, value: object) -> Callable[[dict], None]:
    def mutate(data: dict) -> None:
        node = data
        parts = path.split(".")
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[parts[-1] if not isinstance(node, list) else int(parts[-1])] = value

    return mutate


def _drop(path: str) -> Callable[[dict], None]:
    def mutate(data: dict) -> None:
        section, index, key = path.split(".")
        del data[section][int(index)][key]

    return mutate


def _duplicate_first(section: str) -> Callable[[dict], None]:
    def mutate(data: dict) -> None:
        data[section].append(copy.deepcopy(data[section][0]))

    return mutate


COCO_CASES: dict[str, Case] = {
    "top_level_list": coco_case(lambda d: [d], "not a JSON object"),
    "missing_annotations": coco_case(lambda d: d.pop("annotations") and None, "'annotations'"),
    "images_not_a_list": coco_case(_set("images", {"1": "a.png"}), "'images'"),
    "no_categories": coco_case(_set("categories", []), "no categories"),
    "no_annotations": coco_case(_set("annotations", []), "no annotations"),
    "annotation_not_object": coco_case(_set("annotations.0", "box"), "annotations[0]"),
    "bbox_missing": coco_case(_drop("annotations.0.bbox"), "annotation 1", "bbox"),
    "bbox_three_values": coco_case(_set("annotations.0.bbox", [1, 2, 3]), "annotation 1", "3 values"),
    "bbox_string": coco_case(_set("annotations.0.bbox", [1, 2, "3", 4]), "annotation 1", "non-number"),
    "bbox_nan": coco_case(_set("annotations.0.bbox", [1, 2, float("nan"), 4]), "annotation 1", "NaN"),
    "bbox_negative_size": coco_case(_set("annotations.0.bbox", [10, 10, -5, 4]), "annotation 1", "negative"),
    "bbox_outside_image": coco_case(_set("annotations.0.bbox", [900, 900, 5, 5]), "annotation 1", "outside"),
    "bbox_huge_values": coco_case(_set("annotations.0.bbox", [1e308, 1e308, 1e308, 1e308]), "annotation 1"),
    "unknown_image_id": coco_case(_set("annotations.0.image_id", 999), "annotation 1", "image_id 999"),
    "unknown_category": coco_case(_set("annotations.0.category_id", 77), "annotation 1", "category_id 77"),
    "bool_category": coco_case(_set("annotations.0.category_id", True), "annotation 1", "category_id"),
    "id_beyond_int64": coco_case(_set("annotations.0.id", 2**70), "id"),
    "duplicate_annotation_id": coco_case(_duplicate_first("annotations"), "annotation id 1"),
    "duplicate_image_id": coco_case(_duplicate_first("images"), "image id 1"),
    "image_width_zero": coco_case(_set("images.0.width", 0), "image 1", "width/height"),
    "image_width_infinite": coco_case(_set("images.0.width", float("inf")), "image 1", "width/height"),
    "image_file_missing": coco_case(_set("images.0.file_name", "nope.png"), "nope.png", "does not exist"),
    "image_size_disagrees": coco_case(_set("images.0.width", 20000), "image 1", "20000"),
    "rle_size_not_a_list": coco_case(_set("annotations.0.segmentation", {"size": True, "counts": "x"}), "RLE"),
    "rle_wrong_size": coco_case(_set("annotations.0.segmentation.size", [3, 3]), "annotation 1", "[3, 3]"),
    "polygon_too_short": coco_case(_set("annotations.0.segmentation", [[1, 2, 3]]), "annotation 1", "polygons"),
    "segmentation_number": coco_case(_set("annotations.0.segmentation", 5), "annotation 1", "neither polygons"),
    "file_name_absolute": coco_case(_set("images.0.file_name", "/etc/passwd"), "image 1", "leaves the image folder"),
    "file_name_climbs_out": coco_case(_set("images.0.file_name", "../../x.png"), "image 1", "leaves the image folder"),
    "file_name_windows_drive": coco_case(_set("images.0.file_name", "C:\\x.png"), "image 1", "leaves the image"),
}


def _raw_ann_case(payload: bytes, *words: str) -> Case:
    def build(bench: Bench) -> tuple[list[str], list[str]]:
        ann = bench.root / "ann.json"
        ann.write_bytes(payload)
        return ["dataset", "check", "-e", str(bench.spec_for(ann))], ["ann.json", *words]

    return build


def _ann_is_folder(bench: Bench) -> tuple[list[str], list[str]]:
    folder = bench.root / "ann.json"
    folder.mkdir()
    return ["dataset", "check", "-e", str(bench.spec_for(folder))], ["ann.json", "folder"]


def _ann_missing(bench: Bench) -> tuple[list[str], list[str]]:
    return ["dataset", "check", "-e", str(bench.spec_for(bench.root / "ann.json"))], ["ann.json", "does not exist"]


def _img_dir_missing(bench: Bench) -> tuple[list[str], list[str]]:
    spec = bench.spec_for(bench.synthetic / "annotations.json", bench.root / "no_images")
    return ["dataset", "check", "-e", str(spec)], ["no_images", "does not exist"]


def _hundred_thousand_boxes_one_bad(bench: Bench) -> tuple[list[str], list[str]]:
    data = bench.coco()
    template = data["annotations"][0]
    data["annotations"] = [
        {**template, "id": i, "bbox": [float(i % 100), 5.0, 20.0, 20.0], "segmentation": []} for i in range(100_000)
    ]
    data["annotations"][54_321]["bbox"] = [5.0, 5.0, 0.0, 20.0]
    ann = bench.write_json(data)
    return ["dataset", "check", "-e", str(bench.spec_for(ann))], ["ann.json", "annotation 54321", "zero or negative"]


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height but carries almost no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def _image_file_case(payload: Callable[[], bytes], file_name: str, size: tuple[int, int], *words: str) -> Case:
    def build(bench: Bench) -> tuple[list[str], list[str]]:
        images = bench.root / "images"
        images.mkdir()
        (images / file_name).write_bytes(payload())
        data = {
            "images": [{"id": 1, "file_name": file_name, "width": size[0], "height": size[1]}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40]}],
            "categories": [{"id": 1, "name": "thing"}],
        }
        ann = bench.write_json(data)
        return ["dataset", "check", "-e", str(bench.spec_for(ann, images)), "dataset.load_mask=false"], [
            file_name,
            *words,
        ]

    return build


COCO_CASES.update(
    empty_file=_raw_ann_case(b"", "malformed JSON"),
    truncated_json=_raw_ann_case(b'{"images": [{"id": 1,', "malformed JSON at line 1"),
    not_utf8=_raw_ann_case(b'{"images": "\xff\xfe"}', "UTF-8"),
    ann_is_a_folder=_ann_is_folder,
    ann_missing=_ann_missing,
    img_dir_missing=_img_dir_missing,
    hundred_thousand_boxes_one_bad=_hundred_thousand_boxes_one_bad,
    image_zero_bytes=_image_file_case(lambda: b"", "empty.png", (64, 64), "cannot be read"),
    image_not_an_image=_image_file_case(lambda: b"GIF89a but not really", "fake.png", (64, 64), "cannot be read"),
    image_declares_20001_squared=_image_file_case(
        lambda: _png_header(20001, 20000), "huge.png", (20001, 20000), "decompression-bomb limit"
    ),
)


def _tar_member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def archive_case(members: list[tarfile.TarInfo], *words: str) -> Case:
    """The image folder given as a crafted tar: refused before anything lands outside the cache."""

    def build(bench: Bench) -> tuple[list[str], list[str]]:
        archive = bench.root / "images.tar"
        with tarfile.open(archive, "w") as tar:
            for member in members:
                data = b"x" * 16 if member.isfile() else b""
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data) if data else None)
        spec = bench.spec_for(bench.synthetic / "annotations.json", archive)
        return ["dataset", "check", "-e", str(spec)], ["images.tar", *words]

    return build


def linked_archive_case(suffix: str, members: list[Member], *words: str) -> Case:
    """The image folder given as a zip or tar whose links try to lead out (see tests/data/test_archive_links.py)."""

    def build(bench: Bench) -> tuple[list[str], list[str]]:
        builder = build_zip if suffix == ".zip" else build_tar
        archive = builder(bench.root / f"images{suffix}", [("images/ok.png", "file", "png"), *members])
        spec = bench.spec_for(bench.synthetic / "annotations.json", archive)
        return ["dataset", "check", "-e", str(spec)], [archive.name, *words]

    return build


# "l" is ".", so "l/l/l/.." reads as inside but is the parent of the root once the links are followed.
DOT_CHAIN: list[Member] = [("l", "symlink", "."), ("a", "symlink", "l/l/l/..")]


def _zip_bomb(bench: Bench) -> tuple[list[str], list[str]]:
    archive = bench.root / "images.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("zeros.png", b"\0" * (64 << 20))  # 64 MiB of zeros in ~64 kB: ratio ~1000x
    spec = bench.spec_for(bench.synthetic / "annotations.json", archive)
    return ["dataset", "check", "-e", str(spec)], ["images.zip", "zip bomb"]


def _zip_traversal(bench: Bench) -> tuple[list[str], list[str]]:
    archive = bench.root / "images.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../../escaped.txt", b"gotcha")
    spec = bench.spec_for(bench.synthetic / "annotations.json", archive)
    return ["dataset", "check", "-e", str(spec)], ["images.zip", "'..'"]


def _truncated_archive(bench: Bench) -> tuple[list[str], list[str]]:
    whole = bench.root / "whole.tar.gz"
    with tarfile.open(whole, "w:gz") as tar:
        tar.add(bench.images, arcname="images")
    archive = bench.root / "images.tar.gz"
    archive.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    spec = bench.spec_for(bench.synthetic / "annotations.json", archive)
    return ["dataset", "check", "-e", str(spec)], ["images.tar.gz", "complete"]


ARCHIVE_CASES: dict[str, Case] = {
    "tar_traversal": archive_case([_tar_member("../../escaped.txt")], "'..'"),
    "tar_absolute_path": archive_case([_tar_member("/tmp/mal_absolute_escape.txt")], "absolute"),
    "tar_symlink_out": archive_case([_tar_member("images/link", tarfile.SYMTYPE, "../../../etc/passwd")], "outside"),
    "tar_hardlink_out": archive_case([_tar_member("images/hard", tarfile.LNKTYPE, "/etc/passwd")], "outside"),
    "tar_device_file": archive_case([_tar_member("images/dev", tarfile.CHRTYPE)], "device"),
    "tar_fifo": archive_case([_tar_member("images/pipe", tarfile.FIFOTYPE)], "device"),
    "zip_bomb": _zip_bomb,
    "zip_traversal": _zip_traversal,
    "truncated_tar_gz": _truncated_archive,
    "zip_member_below_a_dot_chain": linked_archive_case(
        ".zip", [*DOT_CHAIN, ("a/escaped.txt", "file", "x")], "'a/escaped.txt'", "below the link"
    ),
    "tar_member_below_a_dot_chain": linked_archive_case(
        ".tar", [*DOT_CHAIN, ("a/escaped.txt", "file", "x")], "'a/escaped.txt'", "below the link"
    ),
    "zip_dot_chain_link_out": linked_archive_case(".zip", DOT_CHAIN, "'l'", "root folder"),
    "tar_dot_chain_link_out": linked_archive_case(".tar", DOT_CHAIN, "'l'", "root folder"),
    "tar_hardlink_up": linked_archive_case(".tar", [("h", "hardlink", "images/../../x")], "'h'", "outside"),
    "zip_link_loop": linked_archive_case(".zip", [("a", "symlink", "b"), ("b", "symlink", "a")], "loop"),
    "zip_link_to_a_folder": linked_archive_case(".zip", [("all", "symlink", "images")], "'all'", "folder"),
    "tar_dangling_link": linked_archive_case(".tar", [("x.png", "symlink", "nope.png")], "'x.png'", "nothing"),
    "tar_member_before_its_link": linked_archive_case(
        ".tar", [("up/escaped.txt", "file", "x"), ("up", "symlink", "..")], "'up'"
    ),
}

ALL_FAST_CASES = {
    **{f"spec-{k}": v for k, v in SPEC_CASES.items()},
    **{f"coco-{k}": v for k, v in COCO_CASES.items()},
    **{f"archive-{k}": v for k, v in ARCHIVE_CASES.items()},
}


@pytest.mark.parametrize("case", list(ALL_FAST_CASES), ids=list(ALL_FAST_CASES))
def test_bad_input_gives_one_clear_error(case, tmp_path, synthetic):
    bench = Bench(tmp_path, synthetic)
    cache = tmp_path / "cache"
    argv, words = ALL_FAST_CASES[case](bench)
    result = run_mal(*argv, env=mal_env(MAL_CACHE_DIR=str(cache)), cwd=tmp_path, timeout=120)
    assert_user_error(result, *words)
    assert leftovers(bench.results) == []
    # Hostile YAML and archives ran no code and wrote nothing outside the cache.
    assert not (tmp_path / "PWNED").exists()
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path.parent / "escaped.txt").exists()
    assert not Path("/tmp/mal_absolute_escape.txt").exists()
    sources = cache / "sources"
    entries = [entry for entry in sources.iterdir() if entry.is_dir()] if sources.exists() else []
    assert all((entry / "source.json").is_file() for entry in entries), "a half-extracted entry was left in the cache"


def test_debug_shows_the_traceback_and_still_exits_2(tmp_path, synthetic):
    bench = Bench(tmp_path, synthetic)
    argv, _ = COCO_CASES["unknown_category"](bench)
    result = run_mal("--debug", *argv)
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "DataError" in result.stderr


# ------------------------------------------------------------------------------ checkpoints (need torch, slower)


class _RunsCode:
    """Unpickling this object runs `open(marker, 'w')`: a stand-in for any code a hostile pickle could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _hostile_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {}, "payload": _RunsCode(marker)}, path)
    return path


def _checkpoint_cases(trained: Path, root: Path) -> dict[str, tuple[Path, list[str]]]:
    marker = root / "CODE_RAN"
    truncated = root / "truncated.pth"
    truncated.write_bytes(trained.read_bytes()[: trained.stat().st_size // 3])
    garbage = root / "garbage.pth"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    plain = root / "plain_state_dict.pth"
    torch.save({"weight": torch.zeros(3)}, plain)
    wrong_arch = root / "wrong_arch.pth"
    checkpoint = torch.load(trained, weights_only=True)
    checkpoint["hyper_parameters"]["config"]["model"]["arch"] = "vit-small/16"
    torch.save(checkpoint, wrong_arch)
    return {
        "runs_code": (_hostile_checkpoint(root / "hostile.pth", marker), ["hostile.pth", "refused"]),
        "truncated": (truncated, ["truncated.pth", "truncated"]),
        "random_bytes": (garbage, ["garbage.pth"]),
        "not_a_mal_checkpoint": (plain, ["plain_state_dict.pth", "state_dict"]),
        "wrong_arch": (wrong_arch, ["wrong_arch.pth", "vit-small/16"]),
        "missing": (root / "nope.pth", ["nope.pth", "does not exist"]),
    }


CLI_CHECKPOINT_CASES = ("runs_code", "truncated", "wrong_arch")


def test_bad_checkpoints_are_refused_through_the_cli_without_running_code(tmp_path, synthetic, trained):
    cases = _checkpoint_cases(trained, tmp_path)
    for name in CLI_CHECKPOINT_CASES:
        checkpoint, words = cases[name]
        results = tmp_path / f"results_{name}"
        spec = write_spec(tmp_path / "spec.yaml", synthetic / "annotations.json", synthetic / "images", results)
        result = run_mal("inference", "-e", spec, f"inference.checkpoint={checkpoint}")
        assert_user_error(result, *words)
        assert leftovers(results) == [], name
    assert not (tmp_path / "CODE_RAN").exists(), "unpickling the hostile checkpoint ran code"


def test_every_bad_checkpoint_is_a_checkpoint_error_naming_the_file(tmp_path, trained):
    """All cases in-process (the CLI maps CheckpointError to exit 2, proven above for three of them)."""
    from mal.engine.checkpoint_io import load_trained_model
    from mal.errors import CheckpointError

    for name, (checkpoint, words) in _checkpoint_cases(trained, tmp_path).items():
        with pytest.raises(CheckpointError) as caught:
            load_trained_model(checkpoint)
        assert all(word in str(caught.value) for word in words), (name, str(caught.value))
        assert "\n" not in str(caught.value)
    assert not (tmp_path / "CODE_RAN").exists(), "unpickling the hostile checkpoint ran code"


def test_hostile_pretrained_weights_are_refused_without_running_code(tmp_path, synthetic):
    marker = tmp_path / "CODE_RAN"
    hostile = _hostile_checkpoint(tmp_path / "mae_pretrain.pth", marker)
    truncated = tmp_path / "weights.safetensors"
    truncated.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    for weights, words in ((hostile, ["mae_pretrain.pth", "refused"]), (truncated, ["weights.safetensors"])):
        results = tmp_path / f"results_{weights.stem}"
        spec = write_spec(tmp_path / "spec.yaml", synthetic / "annotations.json", synthetic / "images", results)
        result = run_mal("train", "-e", spec, f"train.pretrained_model_path={weights}")
        assert_user_error(result, *words)
        assert not list(results.rglob("*.pth"))
    assert not marker.exists(), "unpickling the hostile weights ran code"


# ------------------------------------------------------------------------------ images through inference


def _one_image_dataset(root: Path, images: dict[str, tuple[bytes, tuple[int, int]]]) -> Path:
    folder = root / "images"
    folder.mkdir(exist_ok=True)
    data: dict = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
    for index, (name, (payload, (width, height))) in enumerate(images.items(), start=1):
        (folder / name).write_bytes(payload)
        data["images"].append({"id": index, "file_name": name, "width": width, "height": height})
        data["annotations"].append(
            {"id": index, "image_id": index, "category_id": 1, "bbox": [4.0, 6.0, width / 2, height / 3]}
        )
    ann = root / "images.json"
    ann.write_text(json.dumps(data, ensure_ascii=False))
    return ann


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_broken_images_fail_inference_with_the_file_named_and_no_label_file(tmp_path, trained):
    valid_png = _encoded(Image.new("RGB", (64, 48), (90, 30, 200)), "PNG")
    cases = {
        "half.png": (valid_png[: len(valid_png) // 2], (64, 48)),
        "header_only_20000.png": (_png_header(20000, 20000), (20000, 20000)),
    }
    for name, payload in cases.items():
        root = tmp_path / name
        root.mkdir()
        ann = _one_image_dataset(root, {name: payload})
        results = root / "results"
        spec = write_spec(root / "spec.yaml", ann, root / "images", results)
        labels = results / "labels.json"
        result = run_mal(
            "inference", "-e", spec, f"inference.checkpoint={trained}", f"inference.label_dump_path={labels}"
        )
        assert_user_error(result, name)
        assert not labels.exists()
        assert leftovers(results) == []
        assert status_events(results / "inference" / "status.json")[-1]["status"] == "FAILURE"


def test_unusual_but_valid_images_and_unicode_names_are_labeled(tmp_path, trained):
    """16-bit, grayscale, CMYK, RGBA, palette and EXIF-rotated images, with non-ASCII file names, all work."""
    rng = np.random.default_rng(0)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40 wide x 64 high, shown rotated: 64 x 40
    sixteen = Image.fromarray((rng.integers(0, 4096, (48, 64))).astype(np.uint16))
    images = {
        "gray_16bit_ünïcode.png": (_encoded(sixteen, "PNG"), (64, 48)),
        "グレー.png": (_encoded(Image.new("L", (64, 48), 120), "PNG"), (64, 48)),
        "cmyk.jpg": (_encoded(Image.new("CMYK", (64, 48), (0, 80, 160, 20)), "JPEG"), (64, 48)),
        "rgba 空白.png": (_encoded(Image.new("RGBA", (64, 48), (10, 200, 30, 100)), "PNG"), (64, 48)),
        "palette.png": (_encoded(Image.new("P", (64, 48), 3), "PNG"), (64, 48)),
        "exif_rotated.jpg": (_encoded(Image.new("RGB", (40, 64), (200, 10, 10)), "JPEG", exif=exif), (64, 40)),
    }
    ann = _one_image_dataset(tmp_path, images)
    results = tmp_path / "results"
    spec = write_spec(tmp_path / "spec.yaml", ann, tmp_path / "images", results)
    check = run_mal("dataset", "check", "-e", spec, "dataset.load_mask=false")
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-2000:]
    labels = tmp_path / "labels out.json"
    result = run_mal("inference", "-e", spec, f"inference.checkpoint={trained}", f"inference.label_dump_path={labels}")
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(labels.read_text(encoding="utf-8"))
    assert [image["file_name"] for image in out["images"]] == list(images)
    for image, ann in zip(out["images"], out["annotations"], strict=True):
        assert ann["segmentation"]["size"] == [image["height"], image["width"]]
        assert 0 <= ann["area"] <= image["height"] * image["width"]


def test_archive_of_images_is_extracted_inside_its_cache_and_reused(tmp_path, synthetic):
    archive = tmp_path / "images.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(synthetic / "images", arcname="images")
    cache = tmp_path / "cache"
    spec = write_spec(tmp_path / "spec.yaml", synthetic / "annotations.json", archive, tmp_path / "results")
    before = {path for path in tmp_path.rglob("*")}
    for _ in range(2):
        result = run_mal("dataset", "check", "-e", spec, env=mal_env(MAL_CACHE_DIR=str(cache)))
        assert result.returncode == 0, result.stderr[-2000:]
    created = {path for path in tmp_path.rglob("*")} - before
    assert created and all(path == cache or cache in path.parents for path in created), sorted(
        map(str, created - {cache})
    )[:5]
    assert len([entry for entry in (cache / "sources").iterdir() if entry.is_dir()]) == 1
    shutil.rmtree(cache)


def test_a_full_cache_says_no_space_and_leaves_no_half_entry(small_disk, tmp_path, synthetic):
    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w") as zf:  # stored, so it needs its full size (1 MB) on the 300 kB disk
        zf.writestr("images/noise.bin", np.random.default_rng(0).bytes(1 << 20))
    spec = write_spec(tmp_path / "spec.yaml", synthetic / "annotations.json", archive, tmp_path / "results")
    result = run_mal("dataset", "check", "-e", spec, env=mal_env(MAL_CACHE_DIR=str(small_disk)))
    last = assert_user_error(result, "images.zip", "no space left", "MAL_CACHE_DIR")
    assert "complete" not in last
    leftover = [p.name for p in (small_disk / "sources").iterdir() if not p.name.endswith(".lock")]
    assert leftover == []
