"""The one place that hides secrets before anything is printed or written.

    redact_url("postgresql://u:p@ss@db/mal?password=x")  ->  "postgresql://u:***@db/mal?password=***"
    redact_text("could not open http://:pw@host/a.zip")  ->  "could not open http://:***@host/a.zip"
    redact_tree({"llm_api_key": "sk-1", "dataset": {"train_img_dir": "https://u:pw@h/x"}})
        ->  {"llm_api_key": "***", "dataset": {"train_img_dir": "https://u:***@h/x"}}

What counts as a secret: the password of a URL's user-info (an empty user, an unencoded '@' in the password and
percent-encoded passwords included), the value of a query parameter that names a credential (password, token,
signature, ...), and in a config tree the value of any key that names one (llm_api_key, password, ...). The rest
of a URL (scheme, user, host, port, path) stays readable, so a message still says which store or file it means.
Every writer (logs, reports, state files, hparams, checkpoints, TensorBoard events) goes through these functions;
this module imports nothing of mal so that every layer may use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote

MASK = "***"

# Query parameters whose value is a credential (Azure SAS `sig`, S3 presigned `X-Amz-Signature`, `access_token`...).
SECRET_PARAMS = frozenset(
    {"password", "passwd", "pwd", "secret", "token", "api_key", "apikey", "access_key", "key", "sig", "signature"}
)
# A parameter or config key ending in one of these after a separator also names a credential (x-amz-signature,
# client_secret, llm_api_key, aws_secret_access_key, x-amz-security-token, ...).
_SECRET_SUFFIXES = (
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "access_key",
    "secret_key",
    "signature",
    "credential",
    "credentials",
)
_SECRET_SUFFIX_RE = re.compile(r"(?:^|[_.-])(" + "|".join(re.escape(s) for s in _SECRET_SUFFIXES) + r")$", re.I)
# Keys of a config tree whose whole value is a secret (not only the URL parts inside it).
SECRET_KEYS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "access_key",
        "secret_key",
        "auth",
        "authorization",
        "credentials",
    }
)

# A URL inside free text: a scheme, then everything up to whitespace or a quote/bracket that ends a token in
# messages, reprs and YAML/JSON dumps.
_URL_RE = re.compile(r"(?<![A-Za-z0-9+.-])([A-Za-z][A-Za-z0-9+.-]*://)([^\s'\"<>`]+)")
# user-info: a user without '/', '?', '#', '@' or ':' (it may be empty), ':' and a password. The greedy password
# runs to the LAST '@' before the first '/', so an unencoded '@' in a password stays in the part that is hidden.
_USERINFO_RE = re.compile(r"^([^/?#@:]*):([^/]*)@")
# A password that holds an unencoded '/' too: the last '@' of the whole token ends it, unless what follows the ':'
# is a port (digits up to the first '/'), which makes the '@' part of a path instead.
_USERINFO_SLASH_RE = re.compile(r"^([^/?#@:]*):(.*)@")
_PORT_RE = re.compile(r"^\d*(?:[/?#]|$)")
_WHOLE_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)(\S+)$")
_QUERY_PARAM_RE = re.compile(r"([?&;])([^=&;#?]+)=([^&;#]*)")


def is_secret_param(name: str) -> bool:
    """Whether a URL query parameter names a credential (case-insensitive)."""
    lowered = str(name).strip().lower()
    return lowered in SECRET_PARAMS or bool(_SECRET_SUFFIX_RE.search(lowered))


def is_secret_key(name: str) -> bool:
    """Whether a config key names a credential (case-insensitive); `key` and `sig` alone are too common in
    configs to count here, unlike in a URL's query."""
    lowered = str(name).strip().lower()
    return lowered in SECRET_KEYS or bool(_SECRET_SUFFIX_RE.search(lowered))


def _redact_userinfo(rest: str) -> str:
    match = _USERINFO_RE.match(rest)
    if match is None:
        match = _USERINFO_SLASH_RE.match(rest)
        if match is None or _PORT_RE.match(match.group(2)):
            return rest
    if not match.group(2):
        return rest  # `user:@host` has no password to hide
    return f"{match.group(1)}:{MASK}@{rest[match.end() :]}"


def _redact_query(rest: str) -> str:
    def hide(match: re.Match[str]) -> str:
        sep, name, value = match.groups()
        if not value or not is_secret_param(name):
            return match.group(0)
        return f"{sep}{name}={MASK}"

    head, sep, query = rest.partition("?")
    if not sep:
        return rest
    return head + _QUERY_PARAM_RE.sub(hide, "?" + query)


def _redact_one(match: re.Match[str]) -> str:
    scheme, rest = match.group(1), match.group(2)
    return scheme + _redact_query(_redact_userinfo(rest))


def redact_text(text: Any, secrets: Iterable[str] = ()) -> str:
    """`text` (any object, as str()) with the secrets of every URL in it replaced by ***.

    `secrets` are values to hide wherever they appear, e.g. `url_secrets(url)` of a URL whose driver may quote
    its password outside the URL (a host name parsed out of `p@ss@host` holds part of it).
    """
    value = str(text)
    # A one- or two-letter value would mask every such letter pair of the message and hide nothing useful.
    for secret in sorted({s for s in secrets if len(s) >= 3}, key=len, reverse=True):
        value = value.replace(secret, MASK)
    if "://" not in value:
        return value  # the common case, kept cheap: state files are redacted at every write
    return _URL_RE.sub(_redact_one, value)


def split_userinfo(url: str) -> tuple[str, str, str | None, str] | None:
    """(scheme://, user, password or None, rest after '@') of a URL with user-info, by the rules `redact_url`
    hides it with (the password runs to the last '@' before the host); None when it has no user-info."""
    match = _WHOLE_URL_RE.match(str(url))
    if match is None:
        return None
    scheme, rest = match.groups()
    info = _USERINFO_RE.match(rest) or _USERINFO_SLASH_RE.match(rest)
    if info is not None and not (info.re is _USERINFO_SLASH_RE and _PORT_RE.match(info.group(2))):
        return scheme, info.group(1), info.group(2), rest[info.end() :]
    user = re.match(r"^([^/?#@:]*)@", rest)
    if user is not None:
        return scheme, user.group(1), None, rest[user.end() :]
    return None


def url_secrets(url: Any) -> list[str]:
    """The secret values of one URL (its password, as written and decoded, and credential parameters), with
    each piece of a password split at an unencoded '@' that is long enough to be recognised."""
    found: list[str] = []
    parts = split_userinfo(str(url))
    if parts is not None and parts[2]:
        password = parts[2]
        found += [password, unquote(password)]
        found += [piece for piece in password.split("@") if len(piece) >= 4]
    query = str(url).partition("?")[2]
    for match in _QUERY_PARAM_RE.finditer("?" + query if query else ""):
        if match.group(3) and is_secret_param(match.group(2)):
            found += [match.group(3), unquote(match.group(3))]
    return [value for value in dict.fromkeys(found) if value]


def redact_url(url: Any) -> str:
    """One URL (or a path, returned as it is) with its password and credential parameters replaced by ***.

    The whole string is the URL here, so a quote in a password does not end it early as it does in free text.
    """
    value = str(url)
    match = _WHOLE_URL_RE.match(value)
    return _redact_one(match) if match else redact_text(value)


def redact_tree(obj: Any) -> Any:
    """A copy of a config (dicts, lists, tuples, strings) with every secret hidden, for files and logs.

    Strings are redacted as text; the value of a key that names a secret (llm_api_key, password, token, ...) is
    replaced whole, whatever it holds. Non-string leaves (numbers, None, booleans) are kept; an object that holds
    a secret (pydantic's SecretStr) becomes ***.
    """
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, Mapping):
        return {key: _redact_entry(key, value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [redact_tree(item) for item in obj]
    if isinstance(obj, tuple):
        return tuple(redact_tree(item) for item in obj)
    if type(obj).__name__ in ("SecretStr", "SecretBytes"):
        return MASK
    return obj


def _redact_entry(key: Any, value: Any) -> Any:
    if isinstance(key, str) and is_secret_key(key) and value not in (None, "", [], {}):
        if isinstance(value, bool | int | float):
            return value  # a flag or a count (`use_token: true`, `max_token: 5`) carries no secret
        return MASK
    return redact_tree(value)


__all__ = [
    "MASK",
    "SECRET_PARAMS",
    "is_secret_key",
    "is_secret_param",
    "redact_text",
    "redact_tree",
    "redact_url",
    "split_userinfo",
    "url_secrets",
]
