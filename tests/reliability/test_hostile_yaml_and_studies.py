"""Hostile YAML on every YAML input (spec, overrides, study files, settings, skill templates), wrong study files,
bad `MAL_*` environment values and read-only AutoML commands on a store that is not there (issue #17, classes 3,
10 and 11).

Every CLI case must give exit 2, one short last stderr line naming the culprit, in seconds, and write nothing:
no run folder, no workspace, no journal, no cache entry. The unit tests pin `mal.safe_yaml` itself: ordinary YAML
(anchors included) reads as `yaml.safe_load` reads it, and every limit is refused in well under a second.
"""

from __future__ import annotations

import itertools
import json
import shutil
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from mal.automl.platforms.contract import load_yaml
from mal.automl.settings import parse_settings
from mal.env import EnvError, env_folder, env_int, env_number
from mal.errors import SpecError
from mal.safe_yaml import MAX_DEPTH, MAX_NODES, YamlRefused, load_file, load_text
from mal.spec.export import write_skill_dir
from support.reliability import assert_user_error, mal_env, run_mal, write_spec

REPO = Path(__file__).resolve().parents[2]
DEEP = 100_000


def alias_bomb(levels: int = 8, width: int = 9) -> str:
    """A flow list whose last anchor expands to width**levels strings (9**8: 43 million) from about 250 bytes."""
    names = "abcdefghijklmnop"[:levels]
    items = [f"&{names[0]} [{', '.join(['lol'] * width)}]"]
    items += [f"&{name} [{', '.join([f'*{prev}'] * width)}]" for prev, name in itertools.pairwise(names)]
    return "[" + ", ".join(items) + "]"


def deep_list(depth: int = DEEP) -> str:
    return "[" * depth + "]" * depth


# ----------------------------------------------------------------------------------------------- mal.safe_yaml


ORDINARY = {
    "scalars": "a: 1\nb: 2.5\nc: 1e-5\nd: yes\ne: null\nf: '007'\ng: 2024-01-02\n",
    "nested": "train:\n  lr: 0.001\n  betas: [0.9, 0.999]\nmodel: {arch: vit-tiny/16, heads: [{n: 1}, {n: 2}]}\n",
    "anchors": "base: &b {lr: 0.1, wd: 0.01}\nrun1: *b\nrun2:\n  <<: *b\n  lr: 0.2\nlist: [*b, *b]\n",
    "scalar_anchor": "x: &v 5\ny: [*v, *v, *v]\n",
    "empty": "",
    "comment_only": "# nothing\n",
    "block_lists": "- - 1\n  - 2\n- - 3\n",
    "exactly_max_depth": "[" * MAX_DEPTH + "]" * MAX_DEPTH,
}


@pytest.mark.parametrize("name", sorted(ORDINARY))
def test_ordinary_yaml_reads_as_safe_load_does(name):
    text = ORDINARY[name]
    assert load_text(text) == yaml.safe_load(text)


def test_shipped_specs_and_the_skill_templates_read_unchanged(skill):
    files = sorted((REPO / "specs").glob("*.yaml")) + sorted((skill / "references").glob("*.yaml"))
    assert len(files) >= 4
    for path in files:
        assert load_file(path) == yaml.safe_load(path.read_text()), path


def test_anchors_used_normally_are_shared_values_not_copies_to_refuse():
    # 300 uses of a 300-value anchor: 90,000 values once expanded, under the limit, so it loads.
    anchor = "[" + ", ".join(["1"] * 299) + "]"
    text = f"base: &b {anchor}\nuses: [{', '.join(['*b'] * 299)}]\n"
    data = load_text(text)
    assert len(data["uses"]) == 299 and data["uses"][0] == [1] * 299


REFUSED = {
    "alias_bomb": (alias_bomb(), "aliases", "through its aliases"),
    "alias_bomb_in_a_mapping": (f"train:\n  lr: {alias_bomb()}\n", "aliases", "through its aliases"),
    "recursive_list": ("&a [*a]", "recursive", "alias inside its own anchor"),
    "recursive_mapping": ("top: &a {child: *a}\n", "recursive", "alias inside its own anchor"),
    "recursive_deeper": ("&a [1, [2, [3, *a]]]", "recursive", "*a"),
    "deep_flow_list": (deep_list(), "depth", f"more than {MAX_DEPTH} levels"),
    "deep_flow_mapping": ("{a: " * DEEP + "}" * DEEP, "depth", f"more than {MAX_DEPTH} levels"),
    "deep_block_list": ("- " * DEEP + "x\n", "depth", f"more than {MAX_DEPTH} levels"),
    "one_over_max_depth": ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "depth", f"more than {MAX_DEPTH}"),
    "python_tag": ("x: !!python/object/apply:os.system ['touch PWNED']\n", "tag", "unsupported YAML tag"),
    "syntax": ("train: [1\n", "syntax", "not valid YAML (line 2"),
    "undefined_alias_long_name": ("x: *" + "z" * 20_000 + "\n", "syntax", "undefined alias"),
    "mapping_as_key": ("{[1]: 2}", "syntax", "unhashable"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_hostile_yaml_is_refused_at_once_in_one_short_line(name, tmp_path):
    text, reason, words = REFUSED[name]
    start = time.perf_counter()
    with pytest.raises(YamlRefused) as caught:
        load_text(text)
    assert time.perf_counter() - start < 1.0
    assert caught.value.reason == reason
    message = str(caught.value)
    assert words in message and "\n" not in message and len(message) < 300, message
    assert not (tmp_path / "PWNED").exists()


def test_a_plain_document_above_the_value_limit_is_refused_once_it_passes_it():
    with pytest.raises(YamlRefused) as caught:
        load_text("[" + ", ".join(["1"] * 1_001) + "]", max_nodes=1_000)
    assert caught.value.reason == "size" and "more than 1000 YAML values in all" in str(caught.value)
    assert len(load_text("[" + ", ".join(["1"] * 999) + "]", max_nodes=1_000)) == 999
    assert MAX_NODES == 100_000


def test_control_characters_in_a_yaml_problem_stay_escaped():
    with pytest.raises(YamlRefused) as caught:
        load_text("a: *\x1b\x85x")
    assert str(caught.value).isprintable()


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p, "missing"),
        (lambda p: (p.mkdir(), p)[1], "folder"),
        (lambda p: (p.write_bytes(b"a: \xff\xfe\n"), p)[1], "encoding"),
        (lambda p: (p.write_text("# " + "x" * 1_100_000), p)[1], "size"),
    ],
)
def test_load_file_refuses_what_is_not_a_small_utf8_file(tmp_path, make, reason):
    with pytest.raises(YamlRefused) as caught:
        load_file(make(tmp_path / "in.yaml"))
    assert caught.value.reason == reason


def test_automl_readers_turn_a_refusal_into_a_spec_error_naming_the_file(tmp_path):
    bomb = tmp_path / "spec.yaml"
    bomb.write_text(f"train:\n  lr: {alias_bomb()}\n")
    with pytest.raises(SpecError, match=r"spec\.yaml expands to more than"):
        load_yaml(bomb)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n")
    with pytest.raises(SpecError, match=r"list\.yaml must hold a mapping"):
        load_yaml(listed)
    with pytest.raises(SpecError, match=r"automl_settings must be a mapping"):
        parse_settings(["seed", 1])  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------- mal.env


def test_env_numbers_accept_sane_values_and_name_the_variable_otherwise(monkeypatch, tmp_path):
    monkeypatch.delenv("MAL_T", raising=False)
    assert env_int("MAL_T", 7, minimum=1) == 7
    for raw, expected in (("", 7), ("12", 12), ("1e9", 1_000_000_000), ("200_000", 200_000)):
        monkeypatch.setenv("MAL_T", raw)
        assert env_int("MAL_T", 7, minimum=1) == expected
    monkeypatch.setenv("MAL_T", "2.5")
    assert env_number("MAL_T", 1.0, minimum=1) == 2.5
    for raw in ("lots", "-5", "0", "1.5", "nan", "inf", "1e999", "x" * 500):
        monkeypatch.setenv("MAL_T", raw)
        with pytest.raises(EnvError) as caught:
            env_int("MAL_T", 7, minimum=1, what="a whole number of bytes")
        message = str(caught.value)
        assert message.startswith("environment variable MAL_T=") and "a whole number of bytes >= 1" in message
        assert len(message) < 200
    monkeypatch.setenv("MAL_T", str(tmp_path / "file"))
    (tmp_path / "file").write_text("")
    with pytest.raises(EnvError, match="is a file, not a folder"):
        env_folder("MAL_T", tmp_path)
    # A path too long for one line keeps its start and its end, where the names that tell it apart are.
    deep = tmp_path.joinpath(*["nested_folder"] * 20)
    deep.mkdir(parents=True)
    (deep / "the_cache_file").write_text("")
    monkeypatch.setenv("MAL_T", str(deep / "the_cache_file"))
    with pytest.raises(EnvError) as caught:
        env_folder("MAL_T", tmp_path)
    assert f"='{str(tmp_path)[:20]}" in str(caught.value) and "/nested_folder/the_cache_file' is a file" in str(
        caught.value) and "..." in str(caught.value)
    monkeypatch.setenv("MAL_T", "~")
    assert env_folder("MAL_T", tmp_path) == Path.home()


# ------------------------------------------------------------------------------------------------ CLI corpus


@pytest.fixture(scope="module")
def skill(tmp_path_factory) -> Path:
    """`mal schema --out` of this checkout: a valid skill dir whose template a case may replace."""
    root = tmp_path_factory.mktemp("skill") / "skill"
    write_skill_dir(root)
    return root


@dataclass
class Bench:
    root: Path
    synthetic: Path
    skill: Path

    @property
    def results(self) -> Path:
        return self.root / "results"

    def text(self, name: str, text: str) -> Path:
        path = self.root / name
        path.write_text(text)
        return path

    def spec(self) -> Path:
        return write_spec(self.root / "spec.yaml", self.synthetic / "annotations.json", self.synthetic / "images",
                          self.results)  # fmt: skip

    def archive_spec(self) -> Path:
        """A spec whose images come as a zip: staging it reads the extraction limits and the cache folder."""
        archive = self.root / "images.zip"
        with zipfile.ZipFile(archive, "w") as out:
            for image in sorted((self.synthetic / "images").iterdir()):
                out.write(image, f"images/{image.name}")
        return write_spec(self.root / "spec.yaml", self.synthetic / "annotations.json", archive, self.results)

    def study(self, **keys: object) -> dict:
        return {
            "workspace_dir": str(self.root / "ws"),
            "algorithm": "random",
            "automl_settings": {"run_baseline": False, "run_final_evaluation": False, "automl_max_recommendations": 2},
            "spec_overrides": {"dataset.train_ann_path": str(self.synthetic / "annotations.json")},
            **keys,
        }


@dataclass
class Call:
    argv: list[str]
    words: list[str]
    env: dict[str, str] = field(default_factory=dict)


Case = Callable[[Bench], Call]


def spec_text_case(text: str, *words: str) -> Case:
    return lambda b: Call(["train", "-e", str(b.text("spec.yaml", text)), f"results_dir={b.results}"],
                          ["spec.yaml", *words])  # fmt: skip


def override_case(override: str, *words: str) -> Case:
    return lambda b: Call(["train", "-e", str(b.spec()), override], list(words))


def automl_run(path: Path) -> list[str]:
    return ["automl", "run", "-e", str(path), "--yes", "--no-live", "--poll-interval", "0.05"]


def study_text_case(text: str, *words: str) -> Case:
    return lambda b: Call(automl_run(b.text("automl.yaml", text)), ["automl.yaml", *words])


def study_case(*words: str, **keys: object) -> Case:
    """A valid study with `keys` laid over it (one wrong value each)."""
    return lambda b: Call(automl_run(b.text("automl.yaml", yaml.safe_dump(b.study(**keys)))), ["automl.yaml", *words])


def _study_with(b: Bench, key: str, hostile: str) -> Path:
    """The valid study as YAML with one key's value replaced by raw hostile YAML text."""
    study = b.study()
    study.pop(key, None)
    return b.text("automl.yaml", yaml.safe_dump(study) + f"{key}: {hostile}\n")


def hostile_study_case(key: str, hostile: str, *words: str) -> Case:
    return lambda b: Call(automl_run(_study_with(b, key, hostile)), ["automl.yaml", *words])


def _template_bomb(b: Bench) -> Call:
    skill = b.root / "skill"
    shutil.copytree(b.skill, skill)
    (skill / "references" / "spec_template_train.yaml").write_text(f"train:\n  lr: {alias_bomb()}\n")
    study = b.text("automl.yaml", yaml.safe_dump(b.study(skill_dir=str(skill))))
    return Call(automl_run(study), ["spec_template_train.yaml", "through its aliases"])


def _study_folder(b: Bench) -> Call:
    (b.root / "automl.yaml").mkdir()
    return Call(automl_run(b.root / "automl.yaml"), ["automl.yaml", "is a folder"])


def _study_not_utf8(b: Bench) -> Call:
    (b.root / "automl.yaml").write_bytes(b"algorithm: random\nworkspace_dir: \xff\xfe\x80\n")
    return Call(automl_run(b.root / "automl.yaml"), ["automl.yaml", "not UTF-8"])


def _workspace_is_a_file(b: Bench) -> Call:
    b.text("taken", "")
    return study_case("workspace_dir", "is a file", workspace_dir=str(b.root / "taken"))(b)


def _resume_damaged(run_json: str, *words: str) -> Case:
    def build(b: Bench) -> Call:
        run = b.root / "ws" / "run_20240101T000000Z"
        run.mkdir(parents=True)
        (run / "run.json").write_text(run_json)
        return Call(["automl", "resume", str(run), "--yes", "--no-live"], ["run.json", *words])

    return build


def read_only_case(command: str, storage: Callable[[Bench], str], *words: str) -> Case:
    return lambda b: Call(["automl", command, "--storage", storage(b), "--study", "s"], list(words))


def env_case(variable: str, value: str | Callable[[Bench], str], *, archive: bool = False) -> Case:
    def build(b: Bench) -> Call:
        spec = b.archive_spec() if archive else b.spec()
        shown = value(b) if callable(value) else value
        return Call(["dataset", "check", "-e", str(spec)], [f"{variable}={shown!r}"], {variable: shown})

    return build


BOMB = alias_bomb()
CASES: dict[str, Case] = {
    # -- spec file and overrides
    "spec_alias_bomb": spec_text_case(f"model:\n  arch: {BOMB}\n", "through its aliases"),
    "spec_alias_bomb_at_top": spec_text_case(f"{BOMB}\n", "through its aliases"),
    "spec_recursive_alias": spec_text_case("train: &t\n  extra: *t\n", "alias inside its own anchor"),
    "spec_deep_nesting": spec_text_case(f"train:\n  lr: {deep_list()}\n", "more than 50 levels"),
    "spec_deep_block_nesting": spec_text_case("- " * DEEP + "x\n", "more than 50 levels"),
    "override_alias_bomb": override_case(f"train.lr={BOMB}", "train.lr", "through its aliases"),
    "override_recursive_alias": override_case("train.lr=&a [*a]", "train.lr", "alias inside its own anchor"),
    # 60,000 levels: one command-line argument holds at most 128 KiB on Linux.
    "override_deep_nesting": override_case(f"train.lr={deep_list(60_000)}", "train.lr", "more than 50 levels"),
    # -- study files: hostile YAML anywhere in them, and a skill template the study reads
    "study_alias_bomb_at_top": study_text_case(f"{BOMB}\n", "through its aliases"),
    "study_alias_bomb_in_spec_overrides": hostile_study_case("spec_overrides", f"{{train.lr: {BOMB}}}", "aliases"),
    "study_alias_bomb_in_settings": hostile_study_case("automl_settings", f"{{seed: {BOMB}}}", "aliases"),
    "study_alias_bomb_in_ranges": hostile_study_case("custom_param_ranges", f"{{train.lr: {BOMB}}}", "aliases"),
    "study_recursive_alias": hostile_study_case("spec_overrides", "&o {train.lr: *o}", "alias inside its own"),
    "study_deep_nesting": hostile_study_case("spec_overrides", f"{{train.lr: {deep_list()}}}", "more than 50"),
    "study_python_tag": hostile_study_case("command", "!!python/object/apply:os.system [touch PWNED]", "unsupported"),
    "skill_template_alias_bomb": _template_bomb,
    # -- study files that are not a study
    "study_is_a_folder": _study_folder,
    "study_not_utf8": _study_not_utf8,
    "study_top_level_list": study_text_case("- algorithm\n- random\n", "mapping", "not a list"),
    # -- study keys of the wrong type or range
    "kill_grace_words": study_case("kill_grace", "'soon'", "number of seconds", kill_grace="soon"),
    "kill_grace_negative": study_case("kill_grace", "-1", ">= 0", kill_grace=-1),
    "kill_grace_bool": study_case("kill_grace", "True", kill_grace=True),
    "poll_interval_zero": study_case("poll_interval", "> 0", poll_interval=0),
    "poll_interval_list": study_case("poll_interval", "[1]", poll_interval=[1]),
    "heartbeat_interval_nan": study_case("heartbeat_interval", "nan", heartbeat_interval=float("nan")),
    "grace_period_text": study_case("grace_period", "'1m'", grace_period="1m"),
    "settings_as_list": study_case("automl_settings", "mapping", automl_settings=["seed", 1]),
    "settings_bad_value": study_case("automl_settings.seed", "'x'", automl_settings={"seed": "x"}),
    "settings_zero_concurrency": study_case(
        "automl_settings.automl_max_concurrent", automl_settings={"automl_max_concurrent": 0}
    ),
    "settings_unknown_key": study_case("automl_settings", "'sead'", "seed", automl_settings={"sead": 1}),
    "algorithm_number": study_case("algorithm", "7", algorithm=7),
    "algorithm_unknown": study_case("automl_settings.algorithm", "'grid'", algorithm="grid"),
    "algorithms_disagree": study_case(
        "algorithm", "disagree", algorithm="random", automl_settings={"algorithm": "tpe"}
    ),
    "spec_overrides_as_text": study_case("spec_overrides", "mapping", spec_overrides="train.lr=1e-4"),
    "spec_overrides_int_key": study_case("spec_overrides", "not a string", spec_overrides={1: 2}),
    "hyperparameters_as_text": study_case("hyperparameters", "list", hyperparameters="train.lr"),
    "hyperparameters_numbers": study_case("hyperparameters", "list", hyperparameters=[1, 2]),
    "ranges_as_list": study_case("custom_param_ranges", "mapping", custom_param_ranges=[0.1, 0.2]),
    "command_number": study_case("command", "5", command=5),
    "command_mapping": study_case("command", "list of arguments", command={"run": "x"}),
    "command_without_spec": study_case("command", "{spec}", command=["python", "job.py"]),
    "platform_unknown": study_case("platform", "'aws'", "local or slurm", platform="aws"),
    "slurm_as_list": study_case("slurm", "mapping", platform="slurm", slurm=["gpu"]),
    "slurm_bad_cpus": study_case("slurm", "cpus_per_task", platform="slurm", slurm={"cpus_per_task": "many"}),
    "slurm_unknown_key": study_case("slurm", "partitoin", platform="slurm", slurm={"partitoin": "gpu"}),
    "skill_dir_number": study_case("skill_dir", "5", skill_dir=5),
    "workspace_dir_list": study_case("workspace_dir", "['ws']", workspace_dir=["ws"]),
    "workspace_dir_is_a_file": _workspace_is_a_file,
    "negative_poll_interval_flag": lambda b: Call(
        [*automl_run(b.text("automl.yaml", yaml.safe_dump(b.study())))[:-1], "-1"], ["--poll-interval", "-1"]
    ),
    # -- resume of a study whose run.json is damaged
    "resume_run_json_not_json": _resume_damaged("{", "cannot be read"),
    "resume_run_json_no_settings": _resume_damaged(json.dumps({"command": ["x"]}), "no study settings"),
    "resume_run_json_bad_settings": _resume_damaged(json.dumps({"settings": {"seed": -1}}), "settings.seed"),
    # -- read-only commands on a store that is not there create nothing
    "status_new_journal": read_only_case(
        "status", lambda b: "new.journal", "new.journal", "has no study 's'", "does not exist"
    ),
    "report_new_journal": read_only_case(
        "report", lambda b: "new.journal", "new.journal", "has no study 's'", "does not exist"
    ),
    "status_journal_url": read_only_case(
        "status", lambda b: f"journal://{b.root / 'new.journal'}", "new.journal", "has no study 's'", "does not exist"
    ),
    "status_journal_is_a_folder": read_only_case(
        "status", lambda b: str((b.root / "d.journal").mkdir() or b.root / "d.journal"), "d.journal", "folder"
    ),
    # -- MAL_* environment variables
    "max_image_pixels_words": env_case("MAL_MAX_IMAGE_PIXELS", "lots"),
    "max_image_pixels_negative": env_case("MAL_MAX_IMAGE_PIXELS", "-5"),
    "max_image_pixels_fraction": env_case("MAL_MAX_IMAGE_PIXELS", "1.5"),
    "extract_max_bytes_words": env_case("MAL_EXTRACT_MAX_BYTES", "lots", archive=True),
    "extract_max_bytes_zero": env_case("MAL_EXTRACT_MAX_BYTES", "0", archive=True),
    "extract_max_ratio_nan": env_case("MAL_EXTRACT_MAX_RATIO", "nan", archive=True),
    "extract_max_ratio_negative": env_case("MAL_EXTRACT_MAX_RATIO", "-2", archive=True),
    "cache_dir_is_a_file": env_case("MAL_CACHE_DIR", lambda b: str(b.text("cache_file", "")), archive=True),
}


def _files(root: Path) -> set[Path]:
    return {path for path in root.rglob("*")}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_input_gives_one_short_line_and_writes_nothing(case, tmp_path, synthetic, skill):
    bench = Bench(tmp_path, synthetic, skill)
    call = CASES[case](bench)
    env = mal_env(MAL_CACHE_DIR=str(tmp_path / "cache"))
    env.update(call.env)
    before = _files(tmp_path)
    start = time.monotonic()
    result = run_mal(*call.argv, env=env, cwd=tmp_path, timeout=120)
    elapsed = time.monotonic() - start
    last = assert_user_error(result, *call.words)
    assert len(last) < 500, last
    assert elapsed < 20, f"took {elapsed:.1f} s"
    # Nothing written: no run folder, workspace, journal, report folder or cache entry.
    assert _files(tmp_path) - before == set()
    assert not (tmp_path / "PWNED").exists()
