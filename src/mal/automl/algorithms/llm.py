"""LLM search: an OpenAI-compatible chat model proposes each configuration from the space and prior results.

Every proposal is validated against the search space; a reply that cannot be used is answered once with the
reason, and a second failure (or any endpoint error) stops the search with `LLMError` - there is no silent
random fallback. The brain log (`brain_log`, part of `state_dict()`) records every proposal with the results the
model saw, every rejected reply, and (autoresearch) every keep/discard decision. The API key is never logged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mal.automl.algorithms._full_fidelity import FullFidelitySearch
from mal.automl.algorithms._llm_client import ChatClient, LLMError, LLMReplyError, parse_proposal
from mal.automl.algorithms.base import Trial, ranked

MAX_ATTEMPTS = 2
SHOWN_BEST = 25
SHOWN_RECENT = 10

SYSTEM_PROMPT = (
    "You tune the hyperparameters of a deep-learning training job. Each message gives the search space, the "
    "objective and the results so far. Propose the next configuration to train. Reply with ONE JSON object and "
    'nothing else: {"params": {<every key of the search space>: <value>}, "reasoning": "<one or two '
    'sentences>"}. Values must lie inside the ranges and choices given and satisfy their conditions.'
)


class LLMSearch(FullFidelitySearch):
    name = "llm"
    needs_llm = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client = ChatClient.from_settings(self.settings, self.name)
        self.brain_log: list[dict[str, Any]] = []

    def max_trials(self) -> int:
        return self.settings.automl_max_experiments

    # -- prompting ---------------------------------------------------------------------------------------------

    def _result_row(self, trial: Trial) -> dict[str, Any]:
        row: dict[str, Any] = {"rec_id": trial.rec_id, "params": trial.rec.params, "status": trial.status}
        if trial.status == "done":
            row["metric"] = trial.metric
        return row

    def shown_results(self) -> list[Trial]:
        """The trials put in the prompt: the best ones, the most recent ones and all failures among those."""
        finished = [t for t in self.trials.values() if t.status != "running"]
        best = ranked(finished, self)[:SHOWN_BEST]
        recent = sorted(finished, key=lambda t: t.rec_id)[-SHOWN_RECENT:]
        chosen = {t.rec_id: t for t in best + recent}
        return [chosen[k] for k in sorted(chosen)]

    def _context(self) -> dict[str, Any]:
        return {
            "objective": {
                "metric": self.settings.metric,
                "direction": self.direction,
                "epochs_per_training": self.full_budget,
            },
            "search_space": self.space.describe(),
            "results_so_far": [self._result_row(t) for t in self.shown_results()],
            "still_running": [t.rec.params for t in self.running()],
            "trainings_left": self.max_trials() - len(self.trials),
        }

    def _request(self) -> str:
        return "Propose the next configuration; do not repeat one that was already trained or is running."

    def _messages(self, context: Mapping[str, Any], request: str) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": json.dumps(context, default=str) + "\n\n" + request},
        ]

    # -- proposing ---------------------------------------------------------------------------------------------

    def _propose(self, rec_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
        return self._ask_llm(rec_id)

    def _ask_llm(self, rec_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
        messages = self._messages(self._context(), self._request())
        seen = [{"rec_id": t.rec_id, "metric": t.metric, "status": t.status} for t in self.shown_results()]
        problem = ""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            reply = self.client.complete(messages)
            try:
                params, reasoning = parse_proposal(reply, self.space)
            except LLMReplyError as exc:
                problem = str(exc)
                self.brain_log.append(
                    {
                        "event": "rejected_reply",
                        "rec_id": rec_id,
                        "attempt": attempt,
                        "reason": self.client.scrub(problem),
                        "reply": self.client.scrub(reply[:500]),
                    }
                )
                messages += [
                    {"role": "assistant", "content": reply},
                    {
                        "role": "user",
                        "content": f"That reply cannot be used: {problem}. Reply again with the JSON object only.",
                    },
                ]
                continue
            self.brain_log.append(
                {
                    "event": "proposal",
                    "rec_id": rec_id,
                    "source": "llm",
                    "params": params,
                    "reasoning": self.client.scrub(reasoning),
                    "prior_results": seen,
                    "attempt": attempt,
                }
            )
            return params, {"source": "llm", "reasoning": self.client.scrub(reasoning)}
        raise LLMError(
            f"The LLM at {self.client.url} gave no usable proposal in {MAX_ATTEMPTS} tries ({problem}); "
            f"try another llm_model or algorithm."
        )

    def _extra_state(self) -> dict[str, Any]:
        return {"brain_log": json.loads(json.dumps(self.brain_log, default=str))}

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        self.brain_log = list(state.get("brain_log", []))
