"""A study kept in a shared Optuna storage, so that workers on many machines can run it together.

    create_distributed_study("postgresql://user@db/mal", "lr-sweep", skill_dir="skill/",
                             automl_settings={"algorithm": "asha", "automl_max_trials": 40}, spec_overrides={...})
    # then on any number of machines:   mal automl worker --study lr-sweep --storage postgresql://user@db/mal

Storage URLs (`open_storage`):
    postgresql://user:pw@host:5432/db   many machines; SQLAlchemy + psycopg (3) or psycopg2
    mysql+pymysql://...                 any other SQLAlchemy database works the same way
    redis://host:6379/0                 Optuna's journal on Redis (needs the `redis` package)
    /shared/path/study.journal          the embedded default: an append-only journal file (also `journal:///...`);
                                        safe for parallel workers on one machine or a shared file system
Plain SQLite is refused: its single writer lock turns parallel workers into "database is locked" errors.

The study holds everything a worker needs (`mal:config`: settings, base spec, search space source, trial
command), so a worker needs only the URL and the study name. Every recommendation the search will make is
queued in the store up front as a WAITING trial; a worker takes one by flipping it to RUNNING, which the storage
does atomically (a row lock in SQL, the journal's order in a file), so no recommendation runs twice and none is
lost. Search decisions (the GP, TPE and BOHB proposals, successive halving's promotions) are made from what the
store holds when a worker takes a trial or reports an epoch, so workers may join and leave at any time.
"""

from __future__ import annotations

import importlib.util
import json
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.trial import TrialState

from mal import __version__
from mal.automl.algorithms import ALGORITHMS, make_algorithm
from mal.automl.algorithms._store_sampler import UNIT_PREFIX
from mal.automl.algorithms.hyperband import full_budget
from mal.automl.platforms.contract import load_yaml
from mal.automl.settings import parse_settings
from mal.automl.space import SearchSpace
from mal.automl.study_inputs import absolute_data_paths
from mal.automl.study_rules import action_kpis, check_skill, honour_user_values, read_skill_info, resolve_metric
from mal.dotted import deep_merge, nest_dotted
from mal.errors import SpecError, UserError
from mal.redaction import redact_text, redact_url, split_userinfo, url_secrets

CONFIG_ATTR = "mal:config"
READY_ATTR = "mal:ready"
HEARTBEAT_ATTR = "mal:heartbeat"
# A scheduled study's runner says here whether it still submits jobs ("running") or has finished ("done").
SCHEDULER_ATTR = "mal:scheduler"
# A runner asks the worker of a running job to stop it (system attribute of the job's trial).
STOP_ATTR = "mal:stop"
# Algorithms a shared store can run: their state is the trials themselves (samplers/pruners read it from the store).
# Which algorithms workers run as peers is a property of each algorithm class (`shared_store`); the others run on
# a store through one scheduler (`mal.automl.platforms.store`).
DISTRIBUTED_ALGORITHMS = tuple(name for name, algorithm in ALGORITHMS.items() if algorithm.shared_store)
_READY_TIMEOUT = 60.0

optuna.logging.set_verbosity(optuna.logging.WARNING)


# -- storages ----------------------------------------------------------------------------------------------------


def redact(url: str | Path) -> str:
    """The URL with any password or credential parameter replaced by ***, for logs and reports."""
    return redact_url(url)


def _sqlalchemy_url(url: str) -> str:
    """`postgresql://` with whichever PostgreSQL driver is installed (SQLAlchemy's default is psycopg2)."""
    scheme, rest = url.split("://", 1)
    if scheme in ("postgres", "postgresql"):
        if importlib.util.find_spec("psycopg2") is not None:
            return f"postgresql+psycopg2://{rest}"
        if importlib.util.find_spec("psycopg") is not None:
            return f"postgresql+psycopg://{rest}"
        raise UserError(
            f"Storage {redact(url)} needs a PostgreSQL driver; install one with `pip install 'psycopg[binary]'`."
        )
    return url


def journal_path(url: str | Path) -> Path | None:
    """The journal file a storage URL names (a plain path, journal:// or file://); None for a database URL."""
    text = str(url)
    if "://" not in text or text.startswith(("journal://", "file://")):
        return Path(re.sub(r"^(journal|file)://", "", text)).expanduser()
    return None


def open_storage(url: str | Path) -> BaseStorage:
    """The Optuna storage a URL (or a journal file path) names; UserError when it cannot be used. Opening a journal
    file that does not exist creates it: callers that only read check `journal_path` first."""
    text = str(url)
    path = journal_path(text)
    if path is not None:
        if not path.parent.is_dir():
            raise UserError(f"Storage {text}: folder {path.parent} does not exist; create it or pick another path.")
        if path.exists() and not path.is_file():
            raise UserError(f"Storage {text} is a folder, not a journal file; pass the study's .journal file.")
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(str(path)))
    scheme = text.split("://", 1)[0].split("+", 1)[0]
    if scheme == "sqlite":
        raise UserError(
            f"Storage {redact(text)}: SQLite allows one writer at a time and fails with 'database is locked' under "
            f"parallel workers; use a journal file (a plain path) or postgresql://."
        )
    if scheme == "redis":
        if importlib.util.find_spec("redis") is None:
            raise UserError(f"Storage {redact(text)} needs the redis package; `pip install redis`.")
        from optuna.storages.journal import JournalRedisBackend

        return JournalStorage(JournalRedisBackend(_encoded_password(text)))
    try:
        return RDBStorage(_sqlalchemy_url(_encoded_password(text)), engine_kwargs={"pool_pre_ping": True})
    except UserError:
        raise
    except Exception as exc:  # SQLAlchemy/driver errors: unreachable host, bad credentials, unknown dialect
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        # A driver may quote the password outside the URL (a host name parsed out of `p@ss@host`): hide it too.
        first = redact_text(first, url_secrets(text))
        raise UserError(f"Could not open storage {redact(text)} ({first}); check the URL and that it is up.") from None


def _encoded_password(url: str) -> str:
    """The URL with an unencoded '@', '/', '?' or '#' of its password percent-encoded, as the drivers need it;
    the password runs to the last '@' before the host, the rule `redact` hides it by."""
    parts = split_userinfo(url)
    if parts is None or not parts[2] or not any(char in parts[2] for char in "@/?#"):
        return url
    scheme, user, password, rest = parts
    for char, code in (("@", "%40"), ("/", "%2F"), ("?", "%3F"), ("#", "%23")):
        password = password.replace(char, code)
    return f"{scheme}{user}:{password}@{rest}"


# -- what a study runs -------------------------------------------------------------------------------------------


def build_space(config: Mapping[str, Any]) -> SearchSpace:
    return SearchSpace.from_schema(
        config["schema"],
        config.get("template") or {},
        config.get("hyperparameters"),
        config.get("custom_param_ranges") or None,
        source=f"the {config.get('action', 'train')} schema stored with the study",
    )


def unit_params(space: SearchSpace, params: Mapping[str, Any]) -> dict[str, float]:
    """Optuna sees every searched key as a float in [0, 1] (`SearchSpace.to_unit`), which keeps math_cond,
    depends_on and option lists in our own code; the real values travel as the trial's `params` user attr."""
    return {f"{UNIT_PREFIX}{name}": float(u) for name, u in zip(space.names, space.to_unit(params))}


# -- creating and loading a study ----------------------------------------------------------------------------------


def create_distributed_study(
    storage: str | Path,
    study_name: str,
    skill_dir: str | Path,
    automl_settings: Mapping[str, Any] | None = None,
    spec_overrides: Mapping[str, Any] | None = None,
    automl_hyperparameters: Sequence[str] | None = None,
    custom_param_ranges: Mapping[str, Any] | None = None,
    command: Sequence[str] | None = None,
    slurm: Mapping[str, Any] | None = None,
    enqueue: Sequence[Mapping[str, Any]] = (),
    heartbeat_interval: float = 10.0,
    grace_period: float = 60.0,
    action: str = "train",
    kill_grace: float | None = None,
) -> optuna.Study:
    """Create the study in the store and queue its recommendations; joining an existing study with the same
    name returns it unchanged (so a restarted coordinator is harmless). An algorithm that workers cannot run as
    peers (`shared_store` False: hyperband, dehb, mobster, pbt, the LLM searches) gets a scheduled study: nothing is
    queued here, and `AutoMLRunner` with a `StorePlatform` submits every job.

    enqueue: configurations (dotted key -> value) to try first, in order; the rest are drawn by the algorithm.
    heartbeat_interval / grace_period: a running trial whose worker has not beaten for grace_period seconds
        is failed and retried once.
    kill_grace: seconds a stopped local trial gets between SIGTERM and SIGKILL on every worker.
    """
    settings = parse_settings(automl_settings)
    skill = Path(skill_dir)
    info = read_skill_info(skill)
    check_skill(skill, action, info)
    resolve_metric(settings, action_kpis(info, action), action)
    honour_user_values(settings, nest_dotted(spec_overrides or {}))
    scheduled = settings.algorithm in ALGORITHMS and not ALGORITHMS[settings.algorithm].shared_store
    if scheduled and enqueue:
        raise SpecError(
            f"automl_settings.algorithm {settings.algorithm!r} runs on a store through one scheduler, which asks "
            f"the algorithm for every configuration; enqueue works with {list(DISTRIBUTED_ALGORITHMS)}."
        )
    if grace_period <= 2 * heartbeat_interval:
        raise SpecError(
            f"grace_period {grace_period}s must exceed twice heartbeat_interval {heartbeat_interval}s, or live "
            f"workers would be declared dead between two beats."
        )
    schema_path = skill / "schemas" / f"{action}.schema.json"
    SearchSpace.from_skill_dir(skill, automl_hyperparameters, custom_param_ranges, action=action)  # errors here
    template_path = skill / "references" / f"spec_template_{action}.yaml"
    template = load_yaml(template_path) if template_path.is_file() else {}

    config = {
        "mal_version": __version__,
        "action": action,
        "created": time.time(),
        "settings": settings.to_json_dict(),
        "schema": json.loads(schema_path.read_text(encoding="utf-8")),
        "template": template,
        "hyperparameters": list(automl_hyperparameters) if automl_hyperparameters else None,
        "custom_param_ranges": dict(custom_param_ranges or {}),
        "base_spec": deep_merge(template, nest_dotted(absolute_data_paths(spec_overrides or {}))),
        "command": list(command) if command else None,
        "slurm": dict(slurm or {}),
        "heartbeat_interval": float(heartbeat_interval),
        "grace_period": float(grace_period),
        "scheduler": scheduled,
        "planned_trials": 0 if scheduled else ALGORITHMS[settings.algorithm].store_trials(settings),
        "full_budget": full_budget(settings),
        "kill_grace": None if kill_grace is None else float(kill_grace),
    }
    space = build_space(config)
    make_algorithm(settings.algorithm, space, settings)  # an unknown or unusable algorithm fails before the store
    store = open_storage(storage)
    try:
        study = optuna.create_study(storage=store, study_name=study_name, direction=settings.direction)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(storage=store, study_name=study_name)
        existing = wait_ready(study)
        if existing["settings"] != config["settings"] or existing["base_spec"] != config["base_spec"]:
            raise UserError(
                f"Study {study_name!r} already exists in {redact(str(storage))} with other settings; pick another "
                f"--study name or join it with `mal automl worker`."
            ) from None
        return study
    study.set_user_attr(CONFIG_ATTR, config)
    given = [space.validate(dict(params), source=f"enqueued configuration {i}") for i, params in enumerate(enqueue)]
    for number in range(config["planned_trials"]):
        params = given[number] if number < len(given) else None
        if params is None and not ALGORITHMS[settings.algorithm].samples_in_store:
            # Random and successive-halving searches draw their configurations up front, reproducibly.
            params = space.sample(np.random.default_rng([settings.seed, number]))
        if params is None:
            study.enqueue_trial({}, user_attrs={"slot": number})
        else:
            study.enqueue_trial(unit_params(space, params), user_attrs={"slot": number, "params": params})
    study.set_user_attr(READY_ATTR, True)
    return study


def wait_ready(study: optuna.Study, timeout: float = _READY_TIMEOUT) -> dict[str, Any]:
    """The study's config once its creator has queued every recommendation (a worker may start first)."""
    deadline = time.monotonic() + timeout
    while True:
        attrs = study.user_attrs
        if attrs.get(READY_ATTR) and CONFIG_ATTR in attrs:
            return attrs[CONFIG_ATTR]
        if time.monotonic() > deadline:
            raise UserError(
                f"Study {study.study_name!r} holds no mal AutoML configuration; create it with "
                f"`mal automl run --storage URL --study {study.study_name}` first."
            )
        time.sleep(0.5)


def load_distributed_study(storage: str | Path, study_name: str, wait: float = 0.0) -> tuple[optuna.Study, dict]:
    """(study, config) of an existing distributed study; UserError naming the study when it is not there.

    A journal file that does not exist is waited for (up to `wait` seconds), never created: status and report
    only read, and a worker started before the study's creator finds the file once the creator wrote it."""
    deadline = time.monotonic() + wait
    journal = journal_path(storage)
    while journal is not None and not journal.exists():
        if time.monotonic() >= deadline:
            raise UserError(
                f"Storage {redact(str(storage))} has no study {study_name!r}: no journal file is there ({journal} does "
                f"not exist); pass an existing study's journal, or create it with `mal automl run --storage URL "
                f"--study {study_name}`."
            )
        time.sleep(0.5)
    store = open_storage(storage)
    while True:
        try:
            study = optuna.load_study(storage=store, study_name=study_name)
            break
        except KeyError:
            if time.monotonic() >= deadline:
                names = [s.study_name for s in optuna.get_all_study_summaries(store)]
                raise UserError(
                    f"Storage {redact(str(storage))} has no study {study_name!r} (it has {names or 'none'}); "
                    f"create it with `mal automl run --storage URL --study {study_name}`."
                ) from None
            time.sleep(0.5)
    config = wait_ready(study, timeout=max(wait, 1.0))
    return study, config


__all__ = [
    "CONFIG_ATTR",
    "DISTRIBUTED_ALGORITHMS",
    "HEARTBEAT_ATTR",
    "SCHEDULER_ATTR",
    "STOP_ATTR",
    "TrialState",
    "build_space",
    "create_distributed_study",
    "journal_path",
    "load_distributed_study",
    "open_storage",
    "redact",
    "unit_params",
    "wait_ready",
]
