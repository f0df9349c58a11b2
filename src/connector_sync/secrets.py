"""Secrets in connector configs: `env:NAME` references, which values are secret, masking.

Pure functions, no I/O beyond reading the environment passed in. A config string
`env:NAME` is a reference, not a secret: it may be shown as is. What it resolves to
is secret when it sits in a secret place: a field the plugin declares secret, a key
whose name looks secret (`token`, `password`, `Authorization`, `X-Api-Key`, …), the
password of a URL, a query-string parameter whose name looks secret, or anything read
from a variable whose own name looks secret (`env:GITHUB_TOKEN`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

from connector_sync.exceptions import ConfigError

SECRET_MASK = "***"

_ENV_PREFIX = "env:"
_ENV_REF = re.compile(r"env:([A-Za-z_][A-Za-z0-9_]*)")
# An escaped or encoded form of a secret (JSON, `\/`, percent-encoding) shorter than this
# is not masked on its own: `\"` or `%2F` alone is everywhere and says nothing.
_MIN_DERIVED_FORM = 4
_PERCENT_HEX = re.compile(r"%[0-9A-F]{2}")

# Names of keys, headers, query parameters and environment variables whose values
# are secret. `auth` but not `author`; `key` alone (Google's `?key=`) but not `monkey`.
_SECRET_NAME = re.compile(
    r"passw|passphrase|pwd|secret|token|api[-_]?key|authori[sz]ation|auth(?!or)|credential"
    r"|cookie|session|signature|private[-_]?key|access[-_]?key|^key$|^sig$|^pass$",
    re.IGNORECASE,
)

_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s\"'<>]+")
# The password between `scheme://user:` and the last `@` of the authority.
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s/?#@:]*:)[^\s/?#]*(?=@)")
# A value ends at the next separator; a `:` right before white space or the end is
# punctuation of the surrounding message ("GET https://…?key=abc: HTTP 401"), not the value.
_QUERY_PARAM = re.compile(
    r"(?P<head>[?&;](?P<name>[^=&;#\s?]+)=)(?P<value>[^&;#\s\"'<>]*?)(?=[&;#\s\"'<>]|:(?:\s|$)|$)"
)


def is_env_ref(value: object) -> bool:
    """Whether `value` is an `env:NAME` reference."""
    return isinstance(value, str) and _ENV_REF.fullmatch(value) is not None


def is_secret_name(name: str) -> bool:
    """Whether a key, header, parameter or variable of this name holds a secret."""
    return _SECRET_NAME.search(name) is not None


def check_env_refs(config: Mapping[str, Any]) -> None:
    """Check that every string starting with `env:`, at any depth, is a valid reference.

    `add` calls this: a mistyped reference (`env:MY-TOKEN`) would otherwise be sent as
    the literal value. A value that really starts with `env:` can still be given through
    a variable that holds it.

    Raises:
        ConfigError: naming the field, never its value (it may be a mistyped secret).
    """
    for path, value in _strings(config, ""):
        if value.startswith(_ENV_PREFIX) and _ENV_REF.fullmatch(value) is None:
            raise ConfigError(
                f"config field '{path}' starts with env: but is not a valid env: reference: "
                "use env:NAME where NAME is letters, digits and _ (not starting with a digit)"
            )


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string inside `value` with its field path (`headers.X-Api-Key`, `list[0]`)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _strings(v, _key_path(path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}[{i}]")


def _key_path(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def resolve_env_refs(
    config: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A copy of `config` with every `env:NAME` string, at any depth, replaced by $NAME.

    A string that only looks like a reference (`env:eu-west-1`) is kept as it is: `add`
    refuses new ones (`check_env_refs`), and one stored earlier keeps working.

    Raises:
        ConfigError: a referenced variable is not set (the message names it and the field).
    """
    env = os.environ if environ is None else environ
    resolved = _resolve(config, env, "")
    assert isinstance(resolved, dict)
    return resolved


def _resolve(value: Any, env: Mapping[str, str], path: str) -> Any:
    if isinstance(value, str):
        match = _ENV_REF.fullmatch(value)
        if match is None:
            return value
        name = match[1]
        if name not in env:
            raise ConfigError(
                f"config field '{path}' refers to environment variable {name}, which is not "
                "set: set it where connector-sync runs"
            )
        return env[name]
    if isinstance(value, Mapping):
        return {k: _resolve(v, env, _key_path(path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, env, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def secret_values(
    secret_fields: Collection[str],
    raw_config: Mapping[str, Any],
    resolved_config: Mapping[str, Any],
) -> set[str]:
    """Every secret string in use by a connector, to be redacted from whatever it reports.

    `secret_fields` are the config fields its type declares secret; `raw_config` is the
    stored config (with `env:NAME` references), `resolved_config` the one the plugin
    runs with; a value read from a variable named like a secret is secret wherever it
    is used.
    """
    found: set[str] = set()
    for key, value in resolved_config.items():
        secret = key in secret_fields or is_secret_name(str(key))
        _collect(raw_config.get(key), value, secret, found)
    found.discard("")
    found.discard(SECRET_MASK)
    return found


def connector_secrets(secret_fields: Collection[str], config: Mapping[str, Any]) -> set[str]:
    """The secret strings a stored connector uses, as far as they can be known.

    `secret_fields` are the fields its type declares secret (none for a type that is
    not installed: then secret-named keys, variables and URLs alone tell). Resolves its
    `env:` references where it can.
    """
    # A variable that is not set resolves to "" here: the reference `env:NAME` itself
    # is not a secret and must stay readable in the error that names it.
    environ = {name: "" for name in _referenced_names(config)} | dict(os.environ)
    return secret_values(secret_fields, config, resolve_env_refs(config, environ))


def _referenced_names(value: Any) -> set[str]:
    if isinstance(value, str):
        match = _ENV_REF.fullmatch(value)
        return {match[1]} if match else set()
    if isinstance(value, Mapping):
        return set().union(*(_referenced_names(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_referenced_names(v) for v in value))
    return set()


def _collect(raw: Any, value: Any, secret: bool, found: set[str]) -> None:
    if isinstance(raw, str):
        match = _ENV_REF.fullmatch(raw)
        secret = secret or (match is not None and is_secret_name(match[1]))
    if isinstance(value, str):
        if secret:
            found.update(_secret_forms(value))
        found.update(_url_secrets(value))
    elif isinstance(value, Mapping):
        raw_map = raw if isinstance(raw, Mapping) else {}
        for key, item in value.items():
            _collect(raw_map.get(key), item, secret or is_secret_name(str(key)), found)
    elif isinstance(value, list):
        raw_list = raw if isinstance(raw, list) and len(raw) == len(value) else [None] * len(value)
        for raw_item, item in zip(raw_list, value, strict=True):
            _collect(raw_item, item, secret, found)
    elif secret and isinstance(value, int | float) and not isinstance(value, bool):
        found.add(str(value))


def _secret_forms(value: str) -> set[str]:
    """A secret as it may appear in text: whole, and the credential after `Bearer `/`Basic `."""
    value = value.strip()
    forms = {value}
    scheme, _, credential = value.partition(" ")
    if credential.strip() and scheme.isalpha():
        forms.add(credential.strip())
    return forms


def _url_secrets(text: str) -> set[str]:
    """The passwords and secret query-string values of the URLs inside `text`."""
    found: set[str] = set()
    for match in _URL.finditer(text):
        try:
            parts = urlsplit(match[0])
            password = parts.password
        except ValueError:  # an unparseable port or IPv6 host: no password to read
            continue
        if password:
            found.update({password, unquote(password)})
        for name, value in parse_qsl(parts.query, keep_blank_values=False):
            if is_secret_name(name):
                found.add(value)
        for raw in _QUERY_PARAM.finditer(match[0]):
            if is_secret_name(unquote(raw["name"])) and raw["value"]:
                found.add(raw["value"])
    return found


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with each secret, every URL password and secret query-string value as ***.

    A secret is masked as it is and as a server may echo it: JSON-escaped (`\\"`,
    `\\u00e9`, `\\/`) and percent-encoded (`%2F`, `+` for a space).
    """
    forms: set[str] = set()
    for secret in set(secrets):
        if secret and secret != SECRET_MASK:
            forms.update(_text_forms(secret))
    for form in sorted(forms, key=lambda form: (-len(form), form)):  # longest first
        text = text.replace(form, SECRET_MASK)
    return mask_urls(text)


@lru_cache(maxsize=1024)
def _text_forms(secret: str) -> frozenset[str]:
    """`secret` and the escaped and encoded forms of it that text may hold instead."""
    json_forms = {json.dumps(secret, ensure_ascii=flag)[1:-1] for flag in (True, False)}
    derived = json_forms | {form.replace("/", "\\/") for form in json_forms}
    encoded = {quote(secret, safe=""), quote(secret), quote_plus(secret)}
    # Percent-encoding may use lower-case hex digits (`%2f`): both spellings.
    derived |= encoded | {_PERCENT_HEX.sub(lambda m: m[0].lower(), form) for form in encoded}
    forms = {form for form in derived if len(form) >= _MIN_DERIVED_FORM and form != SECRET_MASK}
    return frozenset(forms | {secret})


def mask_urls(text: str) -> str:
    """`text` with the password of every URL and secret-looking query values as ***."""
    text = _URL_PASSWORD.sub(lambda m: m["head"] + SECRET_MASK, text)
    return _QUERY_PARAM.sub(_mask_query_value, text)


def _mask_query_value(match: re.Match[str]) -> str:
    if match["value"] and is_secret_name(unquote(match["name"])):
        return match["head"] + SECRET_MASK
    return match[0]


def mask_config(secret_fields: Collection[str], config: Mapping[str, Any]) -> dict[str, Any]:
    """The config as it may be shown: secret fields, secret-named keys (headers, params)
    and URL passwords as ***; `env:NAME` references are shown as they are.

    `secret_fields` are the fields its type declares secret; with none (a type that is
    not installed) it masks by names and URLs alone.
    """
    return {
        key: _mask(value, key in secret_fields or is_secret_name(str(key)))
        for key, value in config.items()
    }


def _mask(value: Any, secret: bool) -> Any:
    if isinstance(value, str):
        if is_env_ref(value):
            return value
        if secret:
            return SECRET_MASK if value else value
        return mask_urls(value)
    if isinstance(value, Mapping):
        return {k: _mask(v, secret or is_secret_name(str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, secret) for v in value]
    if secret and isinstance(value, int | float) and not isinstance(value, bool):
        return SECRET_MASK
    return value
