"""The study folder: fresh run folders, finding a study from a path, one runner at a time, atomic JSON."""

from __future__ import annotations

import json

import pytest

from mal.automl.workspace import RUN_FILE, Workspace, WorkspaceBusyError
from mal.errors import UserError


def test_every_create_is_a_new_run_folder(tmp_path):
    first, second = Workspace.create(tmp_path), Workspace.create(tmp_path)
    assert first.root != second.root
    assert first.root.name.startswith("run_") and first.root.name.endswith("Z")
    assert (first.root / "trials").is_dir()


def test_open_finds_the_run_or_the_newest_run_in_a_parent(tmp_path):
    older, newer = Workspace.create(tmp_path), Workspace.create(tmp_path)
    for ws in (older, newer):
        ws.write_json(RUN_FILE, {"created": ws.root.name})
    assert Workspace.open(older.root).root == older.root
    assert Workspace.open(tmp_path).root == newer.root
    with pytest.raises(UserError, match="holds no AutoML study"):
        Workspace.open(tmp_path / "nothing")


def test_json_round_trip_leaves_no_temp_files(tmp_path):
    ws = Workspace.create(tmp_path)
    assert ws.read_json("state.json") is None
    ws.write_json("state.json", {"trials": {"rec_000": {"metric": 0.5}}})
    ws.write_json("state.json", {"trials": {"rec_000": {"metric": 0.6}}})
    assert ws.read_json("state.json")["trials"]["rec_000"]["metric"] == 0.6
    assert json.loads((ws.root / "state.json").read_text())
    assert not list(ws.root.glob(".*.tmp"))


def test_a_second_runner_on_the_same_study_is_refused(tmp_path):
    ws = Workspace.create(tmp_path)
    busy = pytest.raises(WorkspaceBusyError, match="Another AutoML runner")
    with ws.runner_lock(), busy, Workspace(ws.root).runner_lock():
        pass
    with Workspace(ws.root).runner_lock():  # released: the next runner may go on
        pass
