"""Did-you-mean knows the names other tools give mal's keys (issue #20): `learning_rate` is train.lr, not the
train.margin_rate that spelling alone suggests."""

from __future__ import annotations

import pytest

from mal.errors import SpecError
from mal.spec import load_spec
from mal.spec.load import all_keys, suggest_key


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("learning_rate", "train.lr"),
        ("train.learning_rate", "train.lr"),
        ("lr", "train.lr"),
        ("epochs", "train.num_epochs"),
        ("max_epochs", "train.num_epochs"),
        ("train.epochs", "train.num_epochs"),
        ("weight_decay", "train.wd"),
        ("train.weight-decay", "train.wd"),
        ("batch", "train.batch_size"),
        ("save_top_k", "train.keep_last_checkpoints"),
        ("output_dir", "results_dir"),
        ("image_size", "dataset.crop_size"),
        # The section the user wrote wins where it has the key.
        ("pretrain.epochs", "pretrain.num_epochs"),
        ("pretrain.learning_rate", "pretrain.lr"),
        ("evaluate.batch", "evaluate.batch_size"),
    ],
)
def test_synonyms_name_the_key_meant(typed, meant):
    assert suggest_key(typed) == meant
    assert meant in all_keys()


def test_spelling_still_works_and_nonsense_gets_no_guess():
    assert suggest_key("train.warmup_epoch") == "train.warmup_epochs"
    assert suggest_key("model.crop_size") == "dataset.crop_size"
    assert suggest_key("zzzz.qqqq") is None


def test_the_error_is_one_sentence_naming_the_key_and_the_fix(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("train:\n  learning_rate: 1.0e-5\n")
    with pytest.raises(SpecError) as raised:
        load_spec(spec)
    message = str(raised.value)
    assert "unknown key train.learning_rate; did you mean train.lr?" in message and "\n" not in message
    with pytest.raises(SpecError, match=r"unknown key epochs; did you mean train\.num_epochs\?"):
        load_spec(None, ["epochs=3"])
