"""A minimal OpenAI-compatible chat-completions client (urllib only) and the parsing of JSON proposals.

The API key comes from `llm_api_key`, else the environment (`MAL_LLM_API_KEY`, then `OPENAI_API_KEY`); it is
sent in the Authorization header and nowhere else: error messages are scrubbed of it. An endpoint written with
credentials (`https://user:pw@host/v1`) has them moved into a Basic Authorization header (urllib cannot send
them from the URL, and quotes them in its errors), and is only ever shown redacted.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mal.automl.settings import AutoMLSettings
from mal.automl.space import SearchSpace
from mal.errors import SpecError, UserError
from mal.redaction import redact_text, redact_url, split_userinfo, url_secrets

KEY_ENV_VARS = ("MAL_LLM_API_KEY", "OPENAI_API_KEY")


class LLMError(UserError):
    """The LLM endpoint failed or gave no usable proposal; the search stops instead of guessing at random."""


class LLMReplyError(ValueError):
    """One reply could not be used (the caller may ask again with the reason)."""


@dataclass
class ChatClient:
    url: str
    model: str
    temperature: float = 0.7
    max_tokens: int = 1024
    timeout_s: float = 120.0
    api_key: str | None = field(default=None, repr=False)
    basic_auth: str | None = field(default=None, repr=False)
    secrets: tuple[str, ...] = field(default=(), repr=False)

    @property
    def shown_url(self) -> str:
        return redact_url(self.url)

    @classmethod
    def from_settings(cls, settings: AutoMLSettings, algorithm: str) -> ChatClient:
        if not settings.llm_endpoint or not settings.llm_model:
            missing = "llm_endpoint" if not settings.llm_endpoint else "llm_model"
            raise SpecError(
                f"automl_settings.{missing} is required for algorithm {algorithm!r}; set the OpenAI-compatible "
                f"endpoint URL and model name (or choose another algorithm)."
            )
        url = settings.llm_endpoint.rstrip("/")
        if not url.endswith("/chat/completions"):
            url += "/chat/completions"
        key = settings.api_key() or next((os.environ[v] for v in KEY_ENV_VARS if os.environ.get(v)), None)
        secrets = tuple(url_secrets(url))
        basic_auth = None
        parts = split_userinfo(url)
        if parts is not None:
            scheme, user, password, rest = parts
            url = scheme + rest
            token = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password or '')}".encode()
            basic_auth = "Basic " + base64.b64encode(token).decode()
        return cls(
            url,
            settings.llm_model,
            settings.llm_temperature,
            settings.llm_max_tokens,
            api_key=key,
            basic_auth=basic_auth,
            secrets=secrets,
        )

    def scrub(self, text: str) -> str:
        hidden = [value for value in (self.api_key, *self.secrets) if value]
        return redact_text(text, hidden)

    def complete(self, messages: Sequence[Mapping[str, str]]) -> str:
        """The assistant's reply text; LLMError when the endpoint fails or answers something unexpected."""
        body = json.dumps(
            {
                "model": self.model,
                "messages": list(messages),
                "temperature": self.temperature,
                "max_tokens": self.max_tokens,
            }
        ).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        elif self.basic_auth:
            headers["Authorization"] = self.basic_auth
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            detail = self.scrub(exc.read(300).decode("utf-8", "replace")).strip().replace("\n", " ")
            raise LLMError(
                f"The LLM endpoint {self.shown_url} answered HTTP {exc.code} ({detail[:200]}); check llm_endpoint, "
                f"llm_model and the API key."
            ) from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = self.scrub(str(getattr(exc, "reason", exc)))
            raise LLMError(
                f"The LLM endpoint {self.shown_url} could not be reached ({reason}); check llm_endpoint."
            ) from None
        try:
            return str(json.loads(payload)["choices"][0]["message"]["content"])
        except (ValueError, KeyError, IndexError, TypeError):
            raise LLMError(
                f"The LLM endpoint {self.shown_url} did not answer in the chat-completions format "
                f"({self.scrub(payload[:120].decode('utf-8', 'replace'))!r}); point llm_endpoint at an "
                f"OpenAI-compatible server."
            ) from None


_FENCE = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.DOTALL)


def parse_proposal(text: str, space: SearchSpace) -> tuple[dict[str, Any], str]:
    """(validated params, reasoning) from a reply holding `{"params": {...}, "reasoning": "..."}`."""
    fenced = _FENCE.search(text)
    candidate = fenced.group(1) if fenced else text[text.find("{") : text.rfind("}") + 1]
    try:
        data = json.loads(candidate)
    except ValueError:
        raise LLMReplyError(f"the reply holds no JSON object (it starts {text[:80]!r})") from None
    if not isinstance(data, dict):
        raise LLMReplyError("the reply's JSON is not an object")
    params = (
        data.get("params")
        if isinstance(data.get("params"), dict)
        else {k: v for k, v in data.items() if k != "reasoning"}
    )
    for param in space.params:  # numbers sent as strings ("1e-6") are common and harmless
        value = params.get(param.name)
        if param.is_numeric and isinstance(value, str):
            with contextlib.suppress(ValueError):
                params[param.name] = float(value)
    try:
        clean = space.validate(params, source="the LLM's proposal")
    except SpecError as exc:
        raise LLMReplyError(str(exc)) from None
    return clean, str(data.get("reasoning", ""))[:1000]
