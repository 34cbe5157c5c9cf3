"""Secrets in every URL form are hidden everywhere: one redaction function (`mal.redaction`), used by every writer.

A real `mal train` and a dummy-job AutoML study are run with one distinct secret planted in each form a URL can
carry one (user:password, an empty user, an unencoded '@' in the password, a percent-encoded password, a
credential query parameter, an LLM endpoint and a storage URL); then every file they wrote (checkpoints and
TensorBoard events included, read as bytes) and everything they printed is searched for each secret.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from mal.dotted import set_dotted
from mal.redaction import MASK, redact_text, redact_tree, redact_url, url_secrets
from support.reliability import mal_env, run_mal, write_spec
from support.study import automl_run_command, write_dummy_study

# -- the function itself ------------------------------------------------------------------------------------------

URL_FORMS = {
    "user and password": ("postgresql://mal:hunter2@db:5432/mal", "postgresql://mal:***@db:5432/mal"),
    "empty user": ("postgresql://:hunter2@db/mal", "postgresql://:***@db/mal"),
    "unencoded @ in the password": ("postgresql://mal:hun@ter2@db/mal", "postgresql://mal:***@db/mal"),
    "two @ in the password": ("redis://u:a@b@c@cache:6379/0", "redis://u:***@cache:6379/0"),
    "percent-encoded password": ("postgresql://mal:hun%40ter2@db/mal", "postgresql://mal:***@db/mal"),
    "slash in the password": ("postgresql://mal:hun/ter2@db/mal", "postgresql://mal:***@db/mal"),
    "password parameter": (
        "postgresql://db/mal?sslmode=require&password=hunter2",
        "postgresql://db/mal?sslmode=require&password=***",
    ),
    "parameter names in any case": ("postgresql://db/mal?PassWord=hunter2", "postgresql://db/mal?PassWord=***"),
    "http data URL": ("http://alice:hunter2@data.example.com/imgs.zip", "http://alice:***@data.example.com/imgs.zip"),
    "presigned S3 URL": (
        "https://b.s3.amazonaws.com/a.zip?X-Amz-Credential=AKIA1&X-Amz-Signature=f00d&X-Amz-Expires=60",
        "https://b.s3.amazonaws.com/a.zip?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Expires=60",
    ),
    "SAS token": ("https://acct.blob.core.windows.net/c/a.zip?sv=2022&sig=abc%2Bdef", None),
    "token, api_key, key, pwd, secret": (
        "https://h/v1?token=t1&api_key=k1&apikey=k2&key=k3&pwd=p1&secret=s1&access_key=a1&passwd=p2&signature=g",
        "https://h/v1?token=***&api_key=***&apikey=***&key=***&pwd=***&secret=***&access_key=***&passwd=***"
        "&signature=***",
    ),
}
UNCHANGED = [
    "postgresql://mal@db:5432/mal",
    "https://data.example.com/coco/annotations.json?version=2&format=json",
    "s3://bucket/prefix/images.zip",
    "http://localhost:8080/users/@me",
    "https://registry.example.com/@scope/pkg",
    "/data/coco/annotations.json",
    "journal:///shared/study.journal",
    "user:@host is not a URL",
    "",
]


@pytest.mark.parametrize("form", sorted(URL_FORMS))
def test_redact_url_hides_the_secret_of_each_form_and_keeps_the_rest(form):
    url, expected = URL_FORMS[form]
    shown = redact_url(url)
    if expected is not None:
        assert shown == expected
    assert MASK in shown
    for secret in ("hunter2", "hun@ter2", "hun%40ter2", "a@b@c", "f00d", "AKIA1", "abc%2Bdef", "t1", "k3"):
        if secret in url:
            assert secret not in shown, shown
    # The URL stays readable: scheme and host are still there.
    assert shown.split("://")[0] == url.split("://")[0]


@pytest.mark.parametrize("text", UNCHANGED)
def test_a_url_or_path_without_secrets_is_unchanged(text):
    assert redact_url(text) == text
    assert redact_text(text) == text


def test_redact_text_finds_every_url_inside_a_message():
    message = (
        "Could not open storage 'postgresql://:pw1x@db/mal?password=pw2x' (timeout); also tried "
        '"http://u:pw3x@h/a.zip" and <https://h/b?token=pw4x#frag>, then mysql://root:p@w5x@h2/db.'
    )
    shown = redact_text(message)
    for secret in ("pw1x", "pw2x", "pw3x", "pw4x", "p@w5x"):
        assert secret not in shown, shown
    assert shown.startswith("Could not open storage 'postgresql://:***@db/mal?password=***' (timeout)")
    assert "#frag>" in shown and "@h2/db." in shown


def test_redact_text_also_hides_given_values_wherever_they_appear():
    url = "postgresql://mal:s3cr3t@tail@db/mal"
    # A driver that splits at the first '@' quotes a host name made of the password's second half.
    driver_error = 'could not translate host name "tail@db" to address'
    shown = redact_text(driver_error, url_secrets(url))
    assert "tail" not in shown and "s3cr3t" not in shown
    assert url_secrets("postgresql://db/mal?password=a%40b") == ["a%40b", "a@b"]
    assert url_secrets("postgresql://mal@db/mal") == []


def test_redact_tree_walks_a_config_and_blanks_keys_that_name_secrets():
    config = {
        "dataset": {"train_img_dir": "http://u:pw9@h/imgs.zip", "crop_size": 512, "tags": ["https://:pw8@h/x"]},
        "llm_api_key": "sk-pw7",
        "llm_endpoint": "https://bot:pw6@llm.example.com/v1",
        "llm_max_tokens": 1024,
        "db": {"password": "pw5", "PASSWORD_FILE": None, "token": "", "client_secret": ("pw4",)},
        "aws_secret_access_key": "pw3",
        "use_token": True,
        "nested": [{"x-amz-security-token": "pw2"}, ("s3://b/a?sig=pw1", 3)],
    }
    shown = redact_tree(config)
    text = json.dumps(shown)
    for number in range(1, 10):
        assert f"pw{number}" not in text, text
    assert shown["dataset"]["crop_size"] == 512 and shown["llm_max_tokens"] == 1024 and shown["use_token"] is True
    assert shown["dataset"]["train_img_dir"] == "http://u:***@h/imgs.zip"
    assert shown["llm_api_key"] == MASK and shown["db"]["password"] == MASK
    assert shown["db"]["token"] == "" and shown["db"]["PASSWORD_FILE"] is None  # nothing to hide stays as it is
    assert shown["nested"][1] == ("s3://b/a?sig=***", 3)
    assert config["llm_api_key"] == "sk-pw7"  # a copy: the caller's config keeps its values


def test_there_is_one_redaction_function():
    """Every redact helper of the package is the one of mal.redaction (no second, weaker regex)."""
    from mal.automl.storage import redact as storage_redact

    for url, _ in URL_FORMS.values():
        assert storage_redact(url) == redact_url(url)
    source = Path(__file__).parents[2] / "src" / "mal"
    rules = [
        f"{path.relative_to(source)}"
        for path in source.rglob("*.py")
        if path.name != "redaction.py" and ":***@" in path.read_text(encoding="utf-8")
    ]
    assert rules == []


# -- the real commands --------------------------------------------------------------------------------------------

# One distinct secret per form; none is a substring of another, so a leak names its form.
SECRETS = {
    "http user:password data URL": "Hp4ssAlphaQ7",
    "empty-user data URL": "EmptyUsrBravo3",
    "at-sign in a data URL password": "At@SignCharlie5",
    "percent-encoded data URL password": "Pct%40EncDelta8",
    "token parameter of a data URL": "TokParamEcho1",
    "LLM endpoint credentials": "LlmEndFoxtrot6",
    "LLM endpoint key parameter": "LlmKeyGolf2",
    "PostgreSQL ?password=": "PgQueryHotel4",
    "PostgreSQL empty user": "PgEmptyIndia9",
    "PostgreSQL at-sign in the password": "Pg@AtJuliet0",
}
# Pieces a tool may print once it has split a password at an unencoded '@' (a host name "SignCharlie5@host").
PIECES = {"At@SignCharlie5": ["SignCharlie5"], "Pg@AtJuliet0": ["AtJuliet0"], "Pct%40EncDelta8": ["Pct@EncDelta8"]}


def data_urls() -> dict[str, str]:
    """Spec keys a training does not read (an inference dataset beside the training data), each a data URL."""
    s = SECRETS
    return {
        "inference.img_dir": f"http://alice:{s['http user:password data URL']}@data.example.com/coco/images.zip",
        "inference.ann_path": f"https://:{s['empty-user data URL']}@data.example.com/coco/ann.json",
        "evaluate.checkpoint": f"https://bob:{s['at-sign in a data URL password']}@h.example.com/m.pth",
        "export.onnx_file": f"https://carol:{s['percent-encoded data URL password']}@h.example.com/m.onnx",
        "export.checkpoint": f"https://h.example.com/m.pth?sv=1&token={s['token parameter of a data URL']}",
    }


def storage_urls() -> list[str]:
    s = SECRETS
    return [
        f"postgresql://mal@127.0.0.1:1/mal?password={s['PostgreSQL ?password=']}",
        f"postgresql://:{s['PostgreSQL empty user']}@127.0.0.1:1/mal",
        f"postgresql://mal:{s['PostgreSQL at-sign in the password']}@127.0.0.1:1/mal",
    ]


def leaks(files: list[Path], outputs: list[str], secrets: list[str]) -> list[str]:
    """'<where> holds <form>' for every secret (or a piece of one) found in a file's bytes or an output."""
    wanted = {piece: form for form, secret in SECRETS.items() if secret in secrets
              for piece in [secret, *PIECES.get(secret, [])]}  # fmt: skip
    found = [f"{path} holds the {form}" for path in files for piece, form in wanted.items()
             if piece.encode() in path.read_bytes()]  # fmt: skip
    found += [f"output {i} holds the {form}" for i, text in enumerate(outputs) for piece, form in wanted.items()
              if piece in text]  # fmt: skip
    return found


@pytest.mark.slow
def test_a_training_writes_no_data_url_secret_to_hparams_events_checkpoints_or_output(synthetic, tmp_path):
    """hparams.yaml, the TensorBoard events, every .pth and status.json of a real `mal train` (1 epoch)."""
    results = tmp_path / "results"
    spec_path = write_spec(tmp_path / "spec.yaml", synthetic / "annotations.json", synthetic / "images", results, 1)
    spec = yaml.safe_load(spec_path.read_text())
    for key, url in data_urls().items():
        set_dotted(spec, key, url)
    spec_path.write_text(yaml.safe_dump(spec))
    env = mal_env(MAL_CACHE_DIR=str(tmp_path / "cache"))
    result = run_mal("train", "-e", spec_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]

    written = sorted(path for path in results.rglob("*") if path.is_file())
    names = {path.name for path in written}
    assert "hparams.yaml" in names and "mal_model_best.pth" in names
    assert any(name.startswith("events.out.tfevents") for name in names)
    planted = [secret for form, secret in SECRETS.items() if "data URL" in form]
    assert leaks(written, [result.stdout, result.stderr], planted) == []

    # The config kept in the checkpoint is the spec with the passwords hidden, and still serves every reader.
    checkpoint = torch.load(results / "train" / "mal_model_best.pth", map_location="cpu", weights_only=True)
    config = checkpoint["hyper_parameters"]["config"]
    assert config["inference"]["img_dir"] == "http://alice:***@data.example.com/coco/images.zip"
    assert config["model"]["arch"] == "vit-tiny/16" and config["dataset"]["crop_size"] == 32
    from mal.engine.checkpoint_io import load_trained_model

    model, loaded = load_trained_model(results / "train" / "mal_model_best.pth")
    assert loaded["dataset"]["crop_size"] == 32 and model is not None


@pytest.mark.slow
def test_a_study_writes_no_secret_to_any_file_or_output(tmp_path):
    """run.json, state.json, result.json, preflight.json, launch_review.*, report/*, the trial logs, the status
    and report output of a dummy-job study with data URLs and an LLM endpoint that carry credentials."""
    ws = tmp_path / "ws"
    endpoint = (
        f"https://bot:{SECRETS['LLM endpoint credentials']}@llm.example.com/v1"
        f"?api_key={SECRETS['LLM endpoint key parameter']}"
    )
    study_file = write_dummy_study(tmp_path, ws, automl_max_recommendations=2, automl_max_epochs=1,
                                   llm_endpoint=endpoint, llm_model="m")  # fmt: skip
    study = yaml.safe_load(study_file.read_text())
    study["spec_overrides"].update(data_urls())
    study_file.write_text(yaml.safe_dump(study))
    env = {**mal_env(MAL_CACHE_DIR=str(tmp_path / "cache")), "MAL_DUMMY_SLEEP": "0.02"}
    run = subprocess.run(automl_run_command(study_file), env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    run_dir = sorted(ws.glob("run_*"))[-1]
    outputs = [run.stdout, run.stderr]
    base = [sys.executable, "-m", "mal", "automl"]
    for command in (["status", run_dir], ["status", run_dir, "--json"], ["report", run_dir]):
        shown = subprocess.run([*base, *map(str, command)], env=env, capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0, shown.stderr[-3000:]
        outputs += [shown.stdout, shown.stderr]

    # The specs the trainings read must carry the data URLs whole; they are the only files that do, and only
    # their owner can read them.
    inputs = [run_dir / "base_spec.yaml", *run_dir.glob("trials/*/spec.yaml")]
    assert len(inputs) >= 3
    for path in inputs:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    assert SECRETS["http user:password data URL"] in inputs[-1].read_text()
    written = sorted(path for path in ws.rglob("*") if path.is_file() and path not in inputs)
    expected = {"run.json", "state.json", "result.json", "preflight.json", "launch_review.md", "launch_review.json",
                "report.md", "report.html", "best_spec.yaml", "stdout.log"}  # fmt: skip
    assert expected <= {path.name for path in written}
    assert any(path.name.startswith("events.out.tfevents") for path in written)
    assert leaks(written, outputs, list(SECRETS.values())) == []
    # The settings are still recorded, readable, with the password hidden.
    settings = json.loads((run_dir / "run.json").read_text())["settings"]
    assert settings["llm_endpoint"] == "https://bot:***@llm.example.com/v1?api_key=***"
    assert "alice:***@data.example.com" in (run_dir / "report" / "best_spec.yaml").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("storage", storage_urls(), ids=["password parameter", "empty user", "@ in password"])
def test_a_storage_that_cannot_be_opened_says_so_without_its_password(tmp_path, storage):
    """`mal automl status --storage URL` on a PostgreSQL URL that refuses the connection: exit 2, one line, the
    URL shown with *** (a driver splitting `p@ss@host` at the first '@' does not leak the rest either)."""
    pytest.importorskip("sqlalchemy")
    result = subprocess.run(
        [sys.executable, "-m", "mal", "automl", "status", "--storage", storage, "--study", "s"],
        env=mal_env(), capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("mal automl status: error:") and "127.0.0.1" in last and MASK in last, last
    planted = [secret for form, secret in SECRETS.items() if form.startswith("PostgreSQL")]
    assert leaks([], [result.stdout, result.stderr], planted) == []
    assert list(tmp_path.iterdir()) == []  # a read-only command wrote nothing


@pytest.mark.slow
def test_a_resumed_study_gives_its_trainings_the_data_url_that_run_json_hides(tmp_path):
    """run.json holds the overrides with *** for the password; a resume still trains on the whole URL (from the
    owner-only base_spec.yaml), and a caller that passes a hidden setting again gives its secret back."""
    from mal.errors import UserError
    from support.study import quiet_runner, spec_overrides

    url = data_urls()["inference.img_dir"]
    endpoint = f"https://bot:{SECRETS['LLM endpoint credentials']}@llm.example.com/v1"
    overrides = spec_overrides(tmp_path, **{"inference.img_dir": url})
    settings = {"automl_max_recommendations": 1, "automl_max_epochs": 1, "llm_endpoint": endpoint}
    runner = quiet_runner(tmp_path, max_concurrent=1)
    with pytest.raises(UserError, match="no terminal"):  # stopped at the launch prompt: nothing trained yet
        runner.run(automl_algorithm="random", automl_settings=settings, spec_overrides=overrides, yes=False)
    run_dir = sorted((tmp_path / "ws").glob("run_*"))[-1]
    stored = json.loads((run_dir / "run.json").read_text())
    assert stored["spec_overrides"]["inference"]["img_dir"] == "http://alice:***@data.example.com/coco/images.zip"
    assert stored["settings"]["llm_endpoint"] == "https://bot:***@llm.example.com/v1"

    resumed = quiet_runner(tmp_path, max_concurrent=1)
    result = resumed.run(resume=True, automl_settings={"llm_endpoint": endpoint}, yes=True)
    assert result["phase"] == "done"
    trial_specs = list(run_dir.glob("trials/*/spec.yaml"))
    assert trial_specs and all(yaml.safe_load(p.read_text())["inference"]["img_dir"] == url for p in trial_specs)
    assert "resume keeps the study's own settings" not in resumed.console.file.getvalue()
