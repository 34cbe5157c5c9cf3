"""`automl_settings`: TAO's key names and defaults, validated, with did-you-mean errors for unknown keys.

`parse_settings(mapping)` is the one way in: unknown keys and bad values raise `SpecError` with one sentence.
TAO's other spellings are read as aliases: `num_recommendations`, `automl_algorithm`, and every `automl_*` setting
without its prefix (`max_epochs`, `reduction_factor`, ...); the settings keep only the canonical names, and
`AutoMLSettings.renamed` says which aliases were read (shown once, in the launch review). `llm_api_key` is a
`SecretStr` so it never appears in a repr, a log or a JSON dump (`AutoMLSettings.to_json_dict()` leaves it out).
"""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationError

from mal.errors import SpecError

# TAO's names that mean one of ours; the unprefixed `automl_*` names are added below the model.
ALIASES = {"num_recommendations": "automl_max_recommendations", "automl_algorithm": "algorithm"}

# Names TAO users may write that have no single MAL equivalent: refused with what to set instead.
REFUSED = {
    "automl_budget": "a study's work is set by automl_max_recommendations trainings "
    "(random, bayesian, tpe), automl_max_trials configurations of up to automl_max_epochs epochs (hyperband, asha, "
    "bohb, dehb, mobster), automl_population_size x automl_max_generations (pbt) or automl_max_experiments (llm); "
    "set the one your algorithm reads (the launch review shows the planned trainings and epochs)",
}

# A wrong value is quoted in the error, cut short: the settings come from a user's file and may be huge.
_shown = reprlib.Repr()
_shown.maxlevel = 2
_shown.maxlist = _shown.maxtuple = _shown.maxdict = _shown.maxset = 4
_shown.maxstring = _shown.maxother = 60

AlgorithmName = Literal[
    "bayesian", "random", "tpe", "hyperband", "asha", "bohb", "dehb", "mobster", "pbt", "llm", "hybrid",
    "autoresearch",
]


class AutoMLSettings(BaseModel):
    """Every setting AutoML reads, with TAO's names and defaults."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)

    algorithm: AlgorithmName = "bayesian"
    """Search algorithm (see docs/ALGORITHMS.md)."""
    metric: str = "val/mIoU"
    """KPI to optimise, as written in the job's status.json `kpi`."""
    direction: Literal["maximize", "minimize"] = "maximize"
    """Whether a larger metric is better."""
    seed: int = Field(0, ge=0)
    """Seed of the search's random choices; the same seed and results give the same recommendations."""

    automl_max_recommendations: int = Field(20, ge=1)
    """Trainings to launch (random, bayesian, tpe); the default number of configurations for ASHA."""

    automl_max_epochs: int = Field(27, ge=1)
    """Hyperband family: R, the largest budget in resource units (epochs x epoch_multiplier)."""
    automl_reduction_factor: int = Field(3, ge=2)
    """Hyperband family: eta; each successive-halving round keeps the top 1/eta (mobster: 2 unless set)."""
    epoch_multiplier: int = Field(1, ge=1)
    """Hyperband family: epochs per resource unit."""

    automl_max_concurrent: int = Field(4, ge=1)
    """Trainings running at once; ask() answers None while this many are running."""
    automl_max_trials: int | None = Field(None, ge=1)
    """ASHA / Hyperband family: configurations to start (ASHA: automl_max_recommendations when unset;
    Hyperband family: one full pass over the brackets when unset)."""
    automl_min_top_configs: int = Field(5, ge=1)
    """ASHA: once no new configuration may start, promote the best until this many reach the full budget."""

    automl_population_size: int = Field(10, ge=2)
    """PBT: members trained side by side."""
    automl_max_generations: int = Field(20, ge=1)
    """PBT: exploit/explore rounds."""
    automl_eval_interval: int = Field(10, ge=1)
    """PBT: epochs per generation."""
    automl_perturbation_factor: float = Field(1.2, gt=1.0)
    """PBT: explore multiplies or divides a number by this factor."""

    automl_mutation_factor: float = Field(0.5, gt=0.0, le=2.0)
    """DEHB: differential weight F of rand/1 mutation."""
    automl_crossover_prob: float = Field(0.5, ge=0.0, le=1.0)
    """DEHB: binomial crossover probability."""

    automl_kde_samples: int = Field(64, ge=1)
    """BOHB: candidates drawn from the good-configurations density per proposal."""
    automl_top_n_percent: float = Field(15, gt=0, lt=100)
    """BOHB: percentage of observations that count as good."""
    automl_min_points_in_model: int = Field(10, ge=2)
    """BOHB: observations a budget needs before its density model is used."""

    automl_max_experiments: int = Field(50, ge=1)
    """LLM family: trainings to launch."""
    llm_endpoint: str | None = None
    """OpenAI-compatible base URL (…/v1) or full chat-completions URL."""
    llm_model: str | None = None
    """Model name sent to the endpoint."""
    llm_api_key: SecretStr | None = None
    """API key; when unset, MAL_LLM_API_KEY or OPENAI_API_KEY from the environment."""
    llm_temperature: float = Field(0.7, ge=0.0, le=2.0)
    """Sampling temperature of the LLM."""
    llm_max_tokens: int = Field(1024, ge=16)
    """Largest reply, in tokens."""

    run_baseline: bool = True
    """Measure the starting point before the launch review: `mal evaluate` of the spec's evaluate.checkpoint when
    given, else a calibration training of the spec's own values for one resource unit (also what the wall-time
    estimate is measured from). A failed baseline blocks the launch."""
    baseline_metric: float | None = None
    """A known baseline metric, used instead of training the baseline."""
    run_final_evaluation: bool = True
    """Evaluate the best checkpoint with `mal evaluate` once the search ends."""
    train_sample_count: int | None = Field(None, ge=1)
    """Train on this many images per trial (a cheaper proxy); None uses all."""
    automl_delete_intermediate_ckpt: bool = True
    """Delete checkpoints that no recommendation can resume from any more."""
    session_id: str | None = None
    """Free-form label of this search (the workspace path, not this id, is what resumes a run)."""

    _renamed: list[tuple[str, str]] = PrivateAttr(default_factory=list)

    @property
    def renamed(self) -> list[tuple[str, str]]:
        """(alias, canonical name) of every alias the settings were read from."""
        return list(self._renamed)

    def to_json_dict(self) -> dict[str, Any]:
        """Settings as JSON, without the API key."""
        return self.model_dump(mode="json", exclude={"llm_api_key"})

    def api_key(self) -> str | None:
        return None if self.llm_api_key is None else self.llm_api_key.get_secret_value()


def parse_settings(
    settings: Mapping[str, Any] | AutoMLSettings | None = None, source: str = "automl_settings"
) -> AutoMLSettings:
    """Validate user settings; unknown keys and bad values raise SpecError naming the key."""
    if isinstance(settings, AutoMLSettings):
        return settings
    if settings is not None and not isinstance(settings, Mapping):
        raise SpecError(
            f"{source} must be a mapping of setting: value, not a {type(settings).__name__} "
            f"({_shown.repr(settings)}); see docs/ALGORITHMS.md for the keys."
        )
    data = dict(settings or {})
    renamed = []
    for alias, name in ALIASES.items():
        if alias in data:
            if name in data:
                raise SpecError(f"{source} sets both {alias} and {name}; keep only {name}.")
            data[name] = data.pop(alias)
            renamed.append((alias, name))
    known = list(AutoMLSettings.model_fields)
    for key in data:
        if key in REFUSED:
            raise SpecError(f"{source} sets {key}, which is not a MAL setting: {REFUSED[key]}.")
        if key not in known:
            hint = difflib.get_close_matches(str(key), known + list(ALIASES), n=1, cutoff=0.6)
            tip = f" Did you mean {hint[0]}?" if hint else " See docs/ALGORITHMS.md for the keys."
            raise SpecError(f"{source} has unknown key {_shown.repr(key)}.{tip}")
    try:
        parsed = AutoMLSettings(**data)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        value = error.get("input")
        shown = "<hidden>" if key == "llm_api_key" else _shown.repr(value)
        raise SpecError(f"{source}.{key} = {shown} is invalid: {error['msg']}.") from None
    parsed._renamed = renamed
    return parsed


ALIASES.update(
    {name.removeprefix("automl_"): name for name in AutoMLSettings.model_fields if name.startswith("automl_")}
)


def settings_for_algorithm(
    settings: Mapping[str, Any] | None, algorithm: str | None, source: str = "automl_settings"
) -> AutoMLSettings:
    """`parse_settings` with the algorithm named beside the settings (the study file's `algorithm`, the
    runner's `automl_algorithm`); naming two different ones is refused rather than one silently winning."""
    if isinstance(settings, AutoMLSettings):
        if algorithm is not None and settings.algorithm != algorithm:
            raise SpecError(
                f"{source}.algorithm {settings.algorithm!r} and the algorithm {_shown.repr(algorithm)} named beside "
                "it disagree; set only one."
            )
        return settings
    data = dict(settings or {}) if isinstance(settings, Mapping) else settings
    tao_spelling = isinstance(data, dict) and "automl_algorithm" in data and "algorithm" not in data
    if tao_spelling:
        data["algorithm"] = data.pop("automl_algorithm")  # TAO's spelling, compared below like ours
    if algorithm is not None and isinstance(data, dict):
        if data.get("algorithm", algorithm) != algorithm:
            raise SpecError(
                f"{source}.algorithm {_shown.repr(data['algorithm'])} and the algorithm {_shown.repr(algorithm)} "
                "named beside it disagree; set only one."
            )
        data["algorithm"] = algorithm
    parsed = parse_settings(data, source=source)
    if tao_spelling:
        parsed._renamed.insert(0, ("automl_algorithm", "algorithm"))
    return parsed
