"""What `mal automl run` checks before it spends compute: data paths, credentials, LLM settings; never a value."""

from __future__ import annotations

import json
import threading
import time

import pytest

from mal.automl import preflight
from mal.automl.preflight import check_remote_data, remote_read_problem, run_preflight
from mal.automl.settings import parse_settings
from support.s3 import BUCKET, local_s3, silent_endpoint
from support.services import free_port

CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "GOOGLE_APPLICATION_CREDENTIALS",
               "WANDB_API_KEY", "MAL_LLM_API_KEY", "OPENAI_API_KEY")  # fmt: skip


@pytest.fixture(autouse=True)
def _no_credentials(monkeypatch, tmp_path):
    for name in CREDENTIALS:
        monkeypatch.delenv(name, raising=False)
    # The preflight now reads remote data: aim s3:// at a local port where nothing listens (refused at once) and
    # hide the machine's ~/.aws files, so no test reaches AWS or depends on who runs it. `s3` re-aims it at moto.
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture
def s3(monkeypatch):
    """moto's S3 server on localhost with bucket `mal-test` holding set/train.json and set/images/0.png."""
    with local_s3(monkeypatch) as client:
        client.put_object(Bucket=BUCKET, Key="set/train.json", Body=b"{}")
        client.put_object(Bucket=BUCKET, Key="set/images/0.png", Body=b"\x89PNG")
        yield client


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


def _s3_spec(ann: str, img: str = f"s3://{BUCKET}/set/images") -> dict:
    return {"dataset": {"train_ann_path": ann, "train_img_dir": img}}


def test_remote_data_that_exists_passes(tmp_path, s3):
    spec = _s3_spec(f"s3://{BUCKET}/set/train.json")
    spec["dataset"]["val_img_dir"] = f"s3://{BUCKET}/set/images/"  # a prefix is a folder
    report = _preflight(tmp_path, spec)
    assert report.errors == [] and report.warnings == [] and report.to_dict()["ok"]
    assert _check(report, "dataset.train_ann_path")["detail"] == (
        f"dataset.train_ann_path = s3://{BUCKET}/set/train.json exists and can be read"
    )
    assert _check(report, "dataset.train_img_dir")["ok"] and _check(report, "dataset.val_img_dir")["ok"]


def test_credentials_not_in_the_environment_stay_a_warning_when_the_read_succeeds(tmp_path, s3, monkeypatch):
    # Credentials from a file (as an instance role or ~/.aws would give them): the read works, the hint stays.
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    credentials = tmp_path / "aws-credentials"
    credentials.write_text("[default]\naws_access_key_id = from-file\naws_secret_access_key = from-file\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    report = _preflight(tmp_path, _s3_spec(f"s3://{BUCKET}/set/train.json"))
    assert report.errors == []
    assert _check(report, "s3 credentials")["level"] == "warning"


def test_a_missing_object_is_an_error_naming_the_key_and_the_url(tmp_path, s3):
    report = _preflight(tmp_path, _s3_spec(f"s3://{BUCKET}/set/absent.json"))
    assert _check(report, "dataset.train_img_dir")["ok"]
    assert report.errors == [
        f"dataset.train_ann_path = s3://{BUCKET}/set/absent.json does not exist (not found: no such bucket, object "
        "or prefix); fix the URL or upload the data before launching"
    ]
    assert not report.to_dict()["ok"]


def test_a_bucket_that_does_not_exist_is_an_error(tmp_path, s3):
    report = _preflight(tmp_path, _s3_spec("s3://no-such-bucket/set/train.json", "s3://no-such-bucket/set/images"))
    assert len(report.errors) == 2
    assert report.errors[0].startswith("dataset.train_ann_path = s3://no-such-bucket/set/train.json does not exist")
    assert report.errors[1].startswith("dataset.train_img_dir = s3://no-such-bucket/set/images does not exist")


@pytest.mark.parametrize("endpoint", ["refused", "silent"])
def test_an_unreachable_endpoint_fails_the_preflight_in_seconds(tmp_path, monkeypatch, endpoint):
    """Nothing listening (refused at once) or a listener that never answers (the read timeout): either way the
    preflight says so well before botocore's default retries would (minutes), and for all keys at once."""
    spec = _s3_spec(f"s3://{BUCKET}/set/train.json")
    spec["dataset"]["val_ann_path"] = f"s3://{BUCKET}/set/val.json"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    with silent_endpoint() as silent:
        if endpoint == "silent":
            monkeypatch.setenv("AWS_ENDPOINT_URL_S3", silent)
        started = time.monotonic()
        report = _preflight(tmp_path, spec)
        elapsed = time.monotonic() - started
    assert elapsed < 15, elapsed
    assert len(report.errors) == 3 and all("unreachable" in error for error in report.errors), report.errors
    assert report.errors[0].startswith(f"dataset.train_ann_path = s3://{BUCKET}/set/train.json cannot be read")
    assert "AWS_ENDPOINT_URL_S3" in report.errors[0]


def test_a_probe_that_never_returns_is_cut_off_at_the_deadline(monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(preflight, "remote_read_problem", lambda url: release.wait(60) and None)
    try:
        started = time.monotonic()
        problems = check_remote_data({"dataset.train_ann_path": "gs://b/t.json"}, timeout=0.5)
        assert time.monotonic() - started < 5
    finally:
        release.set()
    assert problems["dataset.train_ann_path"].startswith("cannot be read (no answer within 0.5 s")
    assert "unreachable" in problems["dataset.train_ann_path"]


@pytest.mark.parametrize(
    "template",
    [
        "s3://reader:{password}@" + BUCKET + "/set/train.json",  # s3fs rejects it as a bucket name quoting it whole
        "https://reader:{password}@127.0.0.1:{port}/set/train.json",  # nothing listens there
    ],
    ids=["s3", "https"],
)
def test_a_url_password_never_shows_in_the_report(tmp_path, s3, template):
    password = "pw-planted-Zx81"
    url = template.format(password=password, port=free_port())
    report = _preflight(tmp_path, _s3_spec(url))
    text = json.dumps(report.to_dict())
    assert password not in text
    check = _check(report, "dataset.train_ann_path")
    assert not check["ok"] and "reader:***@" in check["detail"], check["detail"]
    assert check["detail"].startswith("dataset.train_ann_path = ")


def test_access_denied_is_named_as_such(monkeypatch):
    """A store that refuses the read (s3fs turns AccessDenied into PermissionError; moto does not enforce
    policies without IAM set up, so the refusal is played by a stand-in filesystem)."""
    import fsspec

    class Refusing:
        def info(self, path):
            raise PermissionError("Access Denied")

    monkeypatch.setattr(fsspec.core, "url_to_fs", lambda url, **options: (Refusing(), url))
    problem = remote_read_problem("gs://private/t.json")
    assert problem is not None and problem.startswith("cannot be read (access denied);")


def test_a_timm_model_name_as_pretrained_weights_is_no_missing_file(tmp_path):
    from mal.automl.preflight import run_preflight
    from mal.automl.settings import parse_settings
    from mal.automl.study_inputs import absolute_data_paths

    overrides = absolute_data_paths({"train.pretrained_model_path": "vit_small_patch16_224.augreg_in21k"})
    assert overrides["train"]["pretrained_model_path"] == "vit_small_patch16_224.augreg_in21k"  # not made a path
    report = run_preflight(tmp_path, overrides, parse_settings({}), None, 2)
    check = next(c for c in report.checks if c["check"] == "train.pretrained_model_path")
    assert check["ok"] and "is a timm model name" in check["detail"]
    missing = run_preflight(tmp_path, {"train": {"pretrained_model_path": str(tmp_path / "w.pth")}},
                            parse_settings({}), None, 2)  # fmt: skip
    assert any("w.pth does not exist" in error for error in missing.errors)
