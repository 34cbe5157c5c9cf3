"""What `mal automl run` checks before it spends compute: data paths, credentials, LLM settings; never a value."""

from __future__ import annotations

import json

import pytest

from mal.automl.preflight import run_preflight
from mal.automl.settings import parse_settings

CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "GOOGLE_APPLICATION_CREDENTIALS",
               "WANDB_API_KEY", "MAL_LLM_API_KEY", "OPENAI_API_KEY")  # fmt: skip


@pytest.fixture(autouse=True)
def _no_credentials(monkeypatch):
    for name in CREDENTIALS:
        monkeypatch.delenv(name, raising=False)


def _check(report, name):
    return next(c for c in report.checks if c["check"] == name)


def _preflight(tmp_path, spec, **settings):
    return run_preflight(tmp_path, spec, parse_settings(settings), None, 2)


def test_local_paths_must_exist_and_the_error_names_key_and_path(tmp_path):
    (tmp_path / "train.json").write_text("{}")
    spec = {"dataset": {"train_ann_path": str(tmp_path / "train.json"), "train_img_dir": str(tmp_path / "nope")}}
    report = _preflight(tmp_path, spec)
    assert _check(report, "dataset.train_ann_path")["ok"]
    assert report.errors == [f"dataset.train_img_dir = {tmp_path / 'nope'} does not exist; fix the path or mount the "
                             "data before launching"]  # fmt: skip
    assert not report.to_dict()["ok"]


def test_unset_training_data_is_a_warning_not_an_error(tmp_path):
    report = _preflight(tmp_path, {})
    assert report.errors == [] and len(report.warnings) == 2
    assert all("is not set in the spec" in w for w in report.warnings)


def test_remote_data_reports_which_credentials_are_set_never_their_values(tmp_path, monkeypatch):
    spec = {"dataset": {"train_ann_path": "s3://bucket/train.json", "train_img_dir": "s3://bucket/images"}}
    report = _preflight(tmp_path, spec)
    assert _check(report, "s3 credentials")["level"] == "warning"
    assert "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY not all SET" in report.warnings[0]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA-visible-only-here")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret")
    report = _preflight(tmp_path, spec)
    assert _check(report, "s3 credentials")["ok"] and report.warnings == []
    assert report.env["AWS_ACCESS_KEY_ID"] == "SET" and report.env["AWS_PROFILE"] == "UNSET"
    text = json.dumps(report.to_dict())
    assert "very-secret" not in text and "AKIA-visible-only-here" not in text
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_PROFILE", "labeling")  # a named profile is enough
    assert _check(_preflight(tmp_path, spec), "s3 credentials")["ok"]


def test_online_wandb_without_a_key_is_a_warning(tmp_path, monkeypatch):
    spec = {"wandb": {"enable": True, "mode": "online"}}
    assert "wandb.mode is online and WANDB_API_KEY is UNSET" in _preflight(tmp_path, spec).warnings
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert _check(_preflight(tmp_path, spec), "wandb key")["ok"]
    assert _preflight(tmp_path, {"wandb": {"enable": True, "mode": "offline"}}).env.get("WANDB_API_KEY") is None


def test_llm_search_needs_its_own_key_and_an_endpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)  # other credentials are no LLM key
    monkeypatch.setenv("AWS_PROFILE", "labeling")
    spec = {"wandb": {"enable": True, "mode": "online"}, "dataset": {"train_ann_path": "s3://b/t.json"}}
    report = _preflight(tmp_path, spec, algorithm="llm")
    assert _check(report, "llm api key")["level"] == "warning"
    assert "algorithm llm needs llm_api_key, MAL_LLM_API_KEY or OPENAI_API_KEY" in report.warnings
    assert "algorithm llm needs automl_settings.llm_endpoint" in report.errors
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-printed")
    report = _preflight(tmp_path, spec, algorithm="hybrid", llm_endpoint="http://127.0.0.1:9/v1")
    assert _check(report, "llm api key")["ok"] and _check(report, "llm endpoint")["ok"]
    assert "sk-never-printed" not in json.dumps(report.to_dict())
