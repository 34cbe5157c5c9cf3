"""Search algorithms behind one interface (`SearchAlgorithm`), chosen by name.

    algo = make_algorithm("asha", space, settings, seed=0)
    while not algo.is_finished():
        rec = algo.ask()             # None: wait for a running training to finish
        ...launch `mal train` with SearchSpace.nest(rec.params), rec.budget epochs, rec.resume_from...
        algo.tell(rec.rec_id, metric)

See docs/ALGORITHMS.md for what each algorithm does and how they compare on the LCBench surrogate.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from mal.automl.algorithms._llm_client import LLMError
from mal.automl.algorithms.asha import ASHA
from mal.automl.algorithms.autoresearch import AutoResearch
from mal.automl.algorithms.base import Recommendation, SearchAlgorithm, Trial
from mal.automl.algorithms.bayesian import BayesianSearch
from mal.automl.algorithms.bohb import BOHB
from mal.automl.algorithms.dehb import DEHB
from mal.automl.algorithms.hybrid import HybridSearch
from mal.automl.algorithms.hyperband import Hyperband, hyperband_brackets
from mal.automl.algorithms.llm import LLMSearch
from mal.automl.algorithms.mobster import MOBSTER
from mal.automl.algorithms.pbt import PBT
from mal.automl.algorithms.random_search import RandomSearch
from mal.automl.algorithms.tpe import TPESearch
from mal.automl.settings import AutoMLSettings, parse_settings
from mal.automl.space import SearchSpace
from mal.errors import SpecError

ALGORITHMS: dict[str, type[SearchAlgorithm]] = {
    cls.name: cls
    for cls in (
        RandomSearch,
        BayesianSearch,
        TPESearch,
        Hyperband,
        ASHA,
        BOHB,
        DEHB,
        MOBSTER,
        PBT,
        LLMSearch,
        HybridSearch,
        AutoResearch,
    )
}


def make_algorithm(
    name: str | None,
    space: SearchSpace,
    settings: AutoMLSettings | Mapping[str, Any] | None = None,
    seed: int | None = None,
) -> SearchAlgorithm:
    """The algorithm called `name` (default: settings.algorithm) over `space`."""
    settings = parse_settings(settings)
    name = name or settings.algorithm
    if name not in ALGORITHMS:
        hint = difflib.get_close_matches(name, list(ALGORITHMS), n=1, cutoff=0.5)
        tip = f" Did you mean {hint[0]!r}?" if hint else ""
        raise SpecError(f"automl_settings.algorithm {name!r} is unknown.{tip} Choose one of {sorted(ALGORITHMS)}.")
    return ALGORITHMS[name](space, settings, seed)


__all__ = [
    "ALGORITHMS",
    "ASHA",
    "BOHB",
    "DEHB",
    "PBT",
    "AutoResearch",
    "BayesianSearch",
    "HybridSearch",
    "Hyperband",
    "LLMError",
    "LLMSearch",
    "RandomSearch",
    "Recommendation",
    "SearchAlgorithm",
    "TPESearch",
    "Trial",
    "hyperband_brackets",
    "make_algorithm",
]
