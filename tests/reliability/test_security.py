"""Security: no code path can unpickle, eval or shell out on user data, and secrets never reach a file or a log."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from support.reliability import mal_env
from support.study import automl_run_command, write_dummy_study

ROOT = Path(__file__).parents[2]
SCANNED = [ROOT / "src" / "mal", ROOT / "benchmarks"]


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


FORBIDDEN_CALLS = {
    "yaml.load": "use yaml.safe_load",
    "yaml.unsafe_load": "use yaml.safe_load",
    "yaml.full_load": "use yaml.safe_load",
    "pickle.load": "pickles run code; store data as JSON / safetensors",
    "pickle.loads": "pickles run code; store data as JSON / safetensors",
    "eval": "never evaluate text",
    "exec": "never execute text",
    "os.system": "use subprocess with an argument list",
    "os.popen": "use subprocess with an argument list",
}


def dangerous_calls(path: Path, root: Path = ROOT) -> list[str]:
    """Every call in one file that could run code from data or a shell string."""
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        where = f"{path.relative_to(root)}:{node.lineno}"
        keywords = {kw.arg: kw.value for kw in node.keywords}
        if name in FORBIDDEN_CALLS:
            found.append(f"{where} {name}(): {FORBIDDEN_CALLS[name]}")
        if name == "torch.load":
            value = keywords.get("weights_only")
            if not (isinstance(value, ast.Constant) and value.value is True):
                found.append(f"{where} torch.load without weights_only=True")
        shell = keywords.get("shell")
        if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
            found.append(f"{where} {name}(shell=...): pass an argument list instead")
    return found


def test_no_unsafe_loading_eval_or_shell_strings_in_the_source_tree():
    files = [path for folder in SCANNED for path in folder.rglob("*.py")]
    assert len(files) > 50
    problems = [problem for path in files for problem in dangerous_calls(path)]
    assert problems == []


def test_the_scanner_catches_each_pattern(tmp_path):
    """The scan above is only worth something if it flags these."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import os, pickle, subprocess, torch, yaml\n"
        "torch.load('a')\ntorch.load('a', weights_only=False)\nyaml.load('a')\nyaml.unsafe_load('a')\n"
        "pickle.load(f)\neval('1')\nos.system('ls')\nsubprocess.run('ls', shell=True)\n"
        "torch.load('ok', weights_only=True)\nyaml.safe_load('ok')\nsubprocess.run(['ls'])\n"
    )
    problems = dangerous_calls(bad, root=tmp_path)
    assert [int(problem.split(":")[1].split()[0]) for problem in problems] == [2, 3, 4, 5, 6, 7, 8, 9]


SECRETS = {
    "WANDB_API_KEY": "wandb-planted-0c1d2e3f4a5b6c7d8e9f",
    "AWS_ACCESS_KEY_ID": "AKIAPLANTEDKEYID0001",
    "AWS_SECRET_ACCESS_KEY": "aws-planted-secret-9f8e7d6c5b4a",
    "OPENAI_API_KEY": "sk-planted-openai-1a2b3c4d5e6f",
    "MAL_LLM_API_KEY": "mal-llm-planted-77aa88bb99cc",
    "HF_TOKEN": "hf_planted_token_5566778899",
}
SETTINGS_KEY = "settings-planted-llm-key-abcdef123456"


@pytest.mark.slow
def test_secrets_never_reach_a_file_stdout_or_stderr_of_a_study(tmp_path):
    ws = tmp_path / "ws"
    study_file = write_dummy_study(
        tmp_path,
        ws,
        automl_max_recommendations=3,
        automl_max_epochs=2,
        run_baseline=True,
        run_final_evaluation=True,
        llm_api_key=SETTINGS_KEY,
    )
    env = {**mal_env(**SECRETS), "MAL_DUMMY_SLEEP": "0.02"}
    outputs = []
    base = [sys.executable, "-m", "mal", "automl"]
    run = subprocess.run(automl_run_command(study_file), env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    outputs += [run.stdout, run.stderr]
    run_dir = sorted(ws.glob("run_*"))[-1]
    for command in (["status", str(run_dir)], ["report", str(run_dir)]):
        result = subprocess.run([*base, *command], env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
        outputs += [result.stdout, result.stderr]

    written = [path for path in ws.rglob("*") if path.is_file()]
    assert len(written) > 10 and (run_dir / "result.json").is_file()
    planted = [*SECRETS.values(), SETTINGS_KEY]
    leaks = [
        f"{path.relative_to(tmp_path)} holds {secret[:12]}..."
        for path in written
        for secret in planted
        if secret.encode() in path.read_bytes()
    ]
    leaks += [f"output holds {secret[:12]}..." for text in outputs for secret in planted if secret in text]
    assert leaks == []
    # The study still knew about the key: it is recorded as present, never as its value.
    assert "llm_api_key" not in json.loads((run_dir / "result.json").read_text()).get("settings", {})
