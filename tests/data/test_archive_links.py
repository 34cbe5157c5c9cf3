"""Links in image archives: nothing is ever written through a link, whatever chain of links the archive builds.

The chains below pass any check made on the link's text (each target stays inside when read lexically) and
escape only when `..` is applied after an earlier link is followed, as the filesystem does.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mal.data.archives import extract_archive
from mal.errors import DataError
from support.archives import Member, build_tar, build_zip


def snapshot(root: Path, skip: Path) -> dict[str, bytes | str]:
    """Every path below `root` except `skip`'s subtree, with its content (files) or kind."""
    seen: dict[str, bytes | str] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if Path(folder, d) != skip]
        for name in files + dirs:
            path = Path(folder, name)
            if path.is_symlink():
                seen[str(path)] = "link->" + os.readlink(path)
            elif path.is_file():
                seen[str(path)] = path.read_bytes()
            else:
                seen[str(path)] = "dir"
    return seen


def extract_and_check(workspace: Path, archive: Path) -> DataError | None:
    """Extract into workspace/dest; assert nothing outside changed and no link exists inside."""
    dest = workspace / "dest"
    before = snapshot(workspace, dest)
    refused = None
    try:
        extract_archive(archive, dest)
    except DataError as exc:
        refused = exc
        assert "\n" not in str(exc)
    assert snapshot(workspace, dest) == before, "something outside the extraction folder changed"
    links = [str(path) for path in dest.rglob("*") if path.is_symlink()]
    assert links == [], f"links were created on disk: {links}"
    return refused


def workspace_with_victim(root: Path) -> Path:
    """root/work/{victim.txt, outside/old.txt}: the files an escaping archive would overwrite."""
    work = root / "work"
    (work / "outside").mkdir(parents=True)
    (work / "victim.txt").write_text("original")
    (work / "outside" / "old.txt").write_text("original")
    return work


# Chains whose text stays inside: "l" is ".", so "l/l/l/.." is the parent of the root on disk.
ESCAPING_CHAINS: dict[str, list[Member]] = {
    "dot_chain_then_member_below": [
        ("l", "symlink", "."),
        ("a", "symlink", "l/l/l/.."),
        ("a/victim.txt", "file", "overwritten"),
    ],
    "dot_chain_link_to_outside_file": [
        ("l", "symlink", "."),
        ("a", "symlink", "l/l/l/../victim.txt"),
    ],
    "dir_link_then_member_through_it": [
        ("d", "dir", ""),
        ("d/up", "symlink", ".."),
        ("d/up2", "symlink", "up/.."),
        ("d/up2/victim.txt", "file", "overwritten"),
    ],
    "member_before_its_link": [
        ("x/victim.txt", "file", "inside"),
        ("x", "symlink", "../.."),
    ],
    "hardlink_to_outside": [("h", "hardlink", "../victim.txt")],
    "absolute_link": [("abs", "symlink", "/etc/passwd")],
    "loop": [("a", "symlink", "b"), ("b", "symlink", "a")],
    "link_to_folder": [("d/f.png", "file", "x"), ("ld", "symlink", "d")],
    "dangling": [("dangling", "symlink", "nothing/here.png")],
}


@pytest.mark.parametrize("builder", [build_zip, build_tar], ids=["zip", "tar"])
@pytest.mark.parametrize("chain", list(ESCAPING_CHAINS), ids=list(ESCAPING_CHAINS))
def test_link_chains_that_look_inside_are_refused_and_write_nothing_outside(tmp_path, builder, chain):
    work = workspace_with_victim(tmp_path)
    suffix = ".zip" if builder is build_zip else ".tar"
    archive = builder(tmp_path / f"images{suffix}", [("ok.png", "file", "png"), *ESCAPING_CHAINS[chain]])
    refused = extract_and_check(work, archive)
    assert refused is not None, "the archive was accepted"
    assert archive.name in str(refused)
    assert (work / "victim.txt").read_text() == "original"


def test_the_realpath_overflow_shape_of_cve_2025_4517_writes_nothing_outside(tmp_path):
    """Deep folders of 240-character names with links between them make os.path.realpath stop resolving (the
    bug behind CVE-2025-4517 in tarfile's data filter); we never resolve paths on disk, so it cannot matter."""
    work = workspace_with_victim(tmp_path)
    long = "d" * 240
    members: list[Member] = []
    path = ""
    for step in "abcdefghijklmnop":
        members.append((f"{path}{long}", "dir", ""))
        members.append((f"{path}{step}", "symlink", long))
        path += f"{long}/"
    chain = "/".join("abcdefghijklmnop")
    members.append(("escape", "symlink", f"{chain}/" + "../" * 20 + "victim.txt"))
    members.append(("escape_dir", "symlink", f"{chain}/" + "../" * 20))
    members.append(("escape_dir/victim.txt", "file", "overwritten"))
    archive = build_tar(tmp_path / "cve.tar", members)
    refused = extract_and_check(work, archive)
    assert refused is not None
    assert (work / "victim.txt").read_text() == "original"


@pytest.mark.parametrize("builder", [build_zip, build_tar], ids=["zip", "tar"])
def test_links_to_files_of_the_archive_become_copies(tmp_path, builder):
    suffix = ".zip" if builder is build_zip else ".tar"
    members: list[Member] = [
        ("images/a.png", "file", "AAA"),
        ("images/sub/b.png", "file", "BBB"),
        ("alias", "symlink", "images/sub"),
        ("images/c.png", "symlink", "../alias/b.png"),  # through a link to a folder, to a file: fine
        ("images/d.png", "symlink", "c.png"),  # a chain of links
        ("images/e.png", "hardlink" if builder is build_tar else "symlink", "images/a.png" if builder is build_tar
         else "a.png"),
    ]
    members = [m for m in members if m[0] != "alias"] + [("alias", "symlink", "images/sub")]
    dest = tmp_path / "out"
    with pytest.raises(DataError, match="leads to a folder"):
        extract_archive(builder(tmp_path / f"with_dir_link{suffix}", members), dest)
    members = [m for m in members if m[0] != "alias"]
    members[2] = ("images/c.png", "symlink", "sub/b.png")
    extract_archive(builder(tmp_path / f"ok{suffix}", members), tmp_path / "ok")
    read = {p.relative_to(tmp_path / "ok").as_posix(): p.read_text() for p in (tmp_path / "ok").rglob("*.png")}
    assert read == {
        "images/a.png": "AAA",
        "images/sub/b.png": "BBB",
        "images/c.png": "BBB",
        "images/d.png": "BBB",
        "images/e.png": "AAA",
    }
    assert not any(p.is_symlink() for p in (tmp_path / "ok").rglob("*"))


def test_a_link_made_on_disk_by_someone_else_is_never_followed(tmp_path):
    """Decided from the filesystem: if a link appears inside the target (planted, raced), writes through it fail."""
    work = workspace_with_victim(tmp_path)
    dest = work / "dest"
    dest.mkdir()
    os.symlink(work, dest / "images")
    archive = build_zip(tmp_path / "plain.zip", [("images/victim.txt", "file", "overwritten")])
    with pytest.raises(DataError, match="images"):
        extract_archive(archive, dest)
    assert (work / "victim.txt").read_text() == "original"


# ------------------------------------------------------------------------------ property: random link chains

SEGMENTS = ["a", "b", "l", "d", "victim.txt", "outside"]
TARGETS = [".", "..", "../..", "a", "b", "l", "d", "l/l/..", "a/..", "../victim.txt", "../outside", "victim.txt"]


def _paths(max_depth: int) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=max_depth).map("/".join)


def _targets(outside: str) -> st.SearchStrategy[str]:
    joined = st.lists(st.sampled_from([*TARGETS, outside]), min_size=1, max_size=3).map("/".join)
    return st.one_of(st.sampled_from([*TARGETS, outside, outside + "/old.txt"]), joined)


@st.composite
def archives(draw: st.DrawFn, outside: str) -> list[Member]:
    kinds = st.sampled_from(["file", "file", "dir", "symlink", "symlink", "hardlink"])
    members = []
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(kinds)
        name = draw(_paths(3))
        payload = draw(_targets(outside)) if kind in ("symlink", "hardlink") else "overwritten"
        members.append((name, kind, payload))
    return members


OUTSIDE_MARKER = "/__outside__"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(members=archives(OUTSIDE_MARKER), as_zip=st.booleans())
def test_random_link_chains_never_write_outside_the_target(members, as_zip):
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        work = workspace_with_victim(root)
        outside = str(work / "outside")
        concrete = [(name, kind, payload.replace(OUTSIDE_MARKER, outside)) for name, kind, payload in members]
        if as_zip:
            concrete = [(n, "symlink" if k == "hardlink" else k, p) for n, k, p in concrete]
            archive = build_zip(root / "random.zip", concrete)
        else:
            archive = build_tar(root / "random.tar", concrete)
        extract_and_check(work, archive)
        assert (work / "victim.txt").read_text() == "original"
        assert (work / "outside" / "old.txt").read_text() == "original"
