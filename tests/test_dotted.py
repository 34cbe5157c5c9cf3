"""mal.dotted: the one implementation of dotted keys (overrides, search spaces, trial specs)."""

from __future__ import annotations

from mal.dotted import deep_merge, get_dotted, nest_dotted, set_dotted


def test_get_and_set_walk_and_create_sections():
    tree: dict = {"train": None, "model": {"arch": "vit-tiny/16"}}
    set_dotted(tree, "train.lr", 1e-5)  # a section written as null in YAML counts as empty
    set_dotted(tree, "dataset.crop.size", 64)
    assert tree == {"train": {"lr": 1e-5}, "model": {"arch": "vit-tiny/16"}, "dataset": {"crop": {"size": 64}}}
    assert get_dotted(tree, "model.arch") == "vit-tiny/16"
    assert get_dotted(tree, "model.arch.x", "none") == "none" and get_dotted(tree, "nope.key") is None


def test_nest_mixes_dotted_keys_and_sections_and_merge_copies():
    nested = nest_dotted({"train.lr": 1e-6, "train": {"wd": 0.1, "optim.betas": [0.9, 0.99]}, "model.arch": "x"})
    assert nested == {"train": {"lr": 1e-6, "wd": 0.1, "optim": {"betas": [0.9, 0.99]}}, "model": {"arch": "x"}}
    base = {"train": {"lr": 1, "wd": 2}, "tags": [1]}
    merged = deep_merge(base, {"train": {"lr": 3}, "tags": [2]})
    assert merged == {"train": {"lr": 3, "wd": 2}, "tags": [2]}
    merged["train"]["wd"] = 9
    assert base["train"]["wd"] == 2  # the base is never changed
