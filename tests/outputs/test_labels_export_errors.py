"""`mal labels export` with hostile or mistaken input: one sentence and exit 2, nothing written outside --out,
and --out either complete or as it was."""

from __future__ import annotations

import json
import os
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from mal.cli import main
from mal.labels.export import export_labels
from mal.labels.staging import place_image, staged_folder
from support.labels_export import assert_same_masks, cvat_masks_by_xml, make_labels, reference_masks


@pytest.fixture
def labelled(synthetic_coco, tmp_path) -> tuple[Path, Path]:
    """A fresh (labels.json, images/) per test, free to spoil."""
    return make_labels(synthetic_coco(num_images=3, seed=5), tmp_path / "in")


def spoil(labels: Path, change) -> Path:
    content = json.loads(labels.read_text())
    change(content)
    labels.write_text(json.dumps(content))
    return labels


def run(capsys, *args: str) -> tuple[int, str]:
    code = main(["labels", "export", *args])
    return code, capsys.readouterr().err.strip().splitlines()[-1] if code else ""


@pytest.mark.parametrize(
    ("file_name", "said"),
    [("../../etc/passwd", "leaves the image folder"), ("/etc/passwd", "leaves the image folder")],
)
def test_a_file_name_out_of_the_images_folder_is_refused(labelled, tmp_path, capsys, file_name, said):
    labels, images = labelled
    spoil(labels, lambda c: c["images"][0].update(file_name=file_name))
    code, line = run(capsys, str(labels), "--format", "fiftyone", "--out", str(tmp_path / "out"), "--images",
                     str(images))
    assert code == 2 and said in line and "mal labels: error:" in line
    assert not (tmp_path / "out").exists()


def test_a_symbolic_link_out_of_the_images_folder_is_refused(labelled, tmp_path, capsys):
    labels, images = labelled
    secret = tmp_path / "secret.png"
    first = json.loads(labels.read_text())["images"][0]["file_name"]
    (images / first).rename(secret)
    (images / first).symlink_to(secret)  # the name looks harmless; only the file system tells
    code, line = run(capsys, str(labels), "--format", "cvat", "--out", str(tmp_path / "out"), "--images", str(images))
    assert code == 2 and f"resolves to {secret}, not a file inside the images folder" in line
    assert not (tmp_path / "out").exists()


def test_a_link_inside_the_images_folder_is_followed_and_never_written_as_a_link(labelled, tmp_path):
    labels, images = labelled
    first = json.loads(labels.read_text())["images"][0]["file_name"]
    (images / first).rename(images / "real.png")
    (images / first).symlink_to("real.png")
    export_labels(labels, "cvat", tmp_path / "out", images_dir=images)
    written = tmp_path / "out" / "images" / first
    assert not written.is_symlink() and written.read_bytes() == (images / "real.png").read_bytes()


def test_a_non_empty_out_is_kept_unless_overwrite(labelled, tmp_path, capsys):
    labels, _ = labelled
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    code, line = run(capsys, str(labels), "--format", "cvat", "--out", str(out))
    assert code == 2 and line == f"mal labels: error: --out {out} is not empty; pass --overwrite to replace it, or " \
        "choose a new folder."
    assert (out / "mine.txt").read_text() == "keep me"
    assert run(capsys, str(labels), "--format", "cvat", "--out", str(out), "--overwrite")[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["annotations.xml", "cvat_labels.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]  # no staging or retired folder left


def test_overwrite_never_deletes_the_inputs(labelled, tmp_path, capsys):
    labels, images = labelled
    code, line = run(capsys, str(labels), "--format", "cvat", "--out", str(labels.parent), "--overwrite")
    assert code == 2 and "holds the input" in line
    assert labels.is_file() and images.is_dir()


def test_out_that_is_a_file_is_refused(labelled, tmp_path, capsys):
    labels, _ = labelled
    code, line = run(capsys, str(labels), "--format", "cvat", "--out", str(labels))
    assert code == 2 and line.endswith("is a file; pass a folder path.")


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (lambda c: c["annotations"][1].pop("segmentation"), "has no segmentation; every annotation needs a mask"),
        (lambda c: c["annotations"][0].update(score="high"), "score 'high' is not a finite number"),
        (lambda c: c["categories"][1].update(name="ellipse"), "share the name 'ellipse'"),
        (lambda c: c["categories"][0].update(name="bad\x01name"), "is empty or holds control characters"),
        (lambda c: c["images"][1].update(file_name=c["images"][0]["file_name"]), "give every image its own file"),
        (lambda c: c["images"][0].update(width=c["images"][0]["width"] + 1), "differs from the image's"),
        (lambda c: c["images"][0].update(file_name="missing.png"), "missing.png does not exist"),
    ],
)
def test_a_wrong_label_file_is_one_sentence_and_exit_2(labelled, tmp_path, capsys, change, said):
    labels, images = labelled
    spoil(labels, change)
    code, line = run(capsys, str(labels), "--format", "cvat", "--out", str(tmp_path / "out"), "--images", str(images))
    assert code == 2 and said in line, line
    assert not (tmp_path / "out").exists()


def test_names_with_xml_characters_arrive_intact(labelled, tmp_path):
    pytest.importorskip("label_studio_converter")
    labels, _ = labelled
    name = 'a<b & "c"'
    spoil(labels, lambda c: c["categories"][0].update(name=name))
    export_labels(labels, "cvat", tmp_path / "cvat")
    root = ET.parse(tmp_path / "cvat" / "annotations.xml").getroot()
    assert name in [label.findtext("name") for label in root.iter("label")]
    assert_same_masks(reference_masks(labels), cvat_masks_by_xml(tmp_path / "cvat"))
    export_labels(labels, "labelstudio", tmp_path / "ls")
    config = ET.parse(tmp_path / "ls" / "labeling_config.xml").getroot()
    assert name in [label.get("value") for label in config.iter("Label")]


def test_a_failed_export_leaves_no_folder_behind(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), staged_folder(out) as folder:
        (folder / "half.json").write_text("{")
        raise RuntimeError("killed half way")
    assert list(tmp_path.iterdir()) == []


def test_an_image_on_another_file_system_is_copied(tmp_path):
    other = Path("/dev/shm")
    if not other.is_dir() or other.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on a file system other than the temporary folder's")
    with tempfile.TemporaryDirectory(dir=other) as folder:
        source = Path(folder) / "a.png"
        source.write_bytes(b"pixels")
        assert place_image(source, tmp_path / "data" / "a.png") is False
    assert (tmp_path / "data" / "a.png").read_bytes() == b"pixels"
    same_disk = tmp_path / "b.png"
    same_disk.write_bytes(b"more")
    assert place_image(same_disk, tmp_path / "data" / "b.png") is True
    assert os.stat(tmp_path / "data" / "b.png").st_ino == same_disk.stat().st_ino


def test_an_empty_mask_is_left_out_where_the_tool_cannot_hold_one_and_said(labelled, tmp_path, capsys):
    pytest.importorskip("label_studio_converter")
    labels, _ = labelled
    empty = {"size": [160, 160], "counts": [160 * 160]}  # valid RLE, no pixel
    spoil(labels, lambda c: c["annotations"][2].update(segmentation=empty))
    total = len(json.loads(labels.read_text())["annotations"])
    for fmt, kept in (("cvat", total - 1), ("labelstudio", total - 1), ("fiftyone", total)):
        assert main(["labels", "export", str(labels), "--format", fmt, "--out", str(tmp_path / fmt)]) == 0
        said = capsys.readouterr().out
        assert f"and {kept} masks for" in said
        assert ("1 empty mask left out" in said) == (fmt != "fiftyone")
