"""Secrets in connector configs: `env:NAME` references, which values are secret, masking.

Pure functions, no I/O beyond reading the environment passed in. A config string
`env:NAME` is a reference, not a secret: it may be shown as is. What it resolves to
is secret when it sits in a secret place: a field the plugin declares secret, a key
whose name looks secret (`token`, `password`, `Authorization`, `X-Api-Key`, …), the
password of a URL, a query-string parameter whose name looks secret, or anything read
from a variable whose own name looks secret (`env:GITHUB_TOKEN`).
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qsl, quote, quote_plus, unquote, unquote_plus, urlsplit

from connector_sync.exceptions import ConfigError

if TYPE_CHECKING:
    import httpx

SECRET_MASK = "***"

_ENV_PREFIX = "env:"
_ENV_REF = re.compile(r"env:([A-Za-z_][A-Za-z0-9_]*)")
# A secret shorter than this is not searched for in text, and neither is an escaped or
# encoded form of one (JSON, `\/`, percent-encoding): `e`, `\"` or `%2F` is everywhere and
# says nothing, and masking it would garble every message (`{"m***ssag***": …}`). Shown
# configs still mask secret fields whatever their length (by place, not by searching).
_MIN_SEARCHED = 4
_PERCENT_HEX = re.compile(r"%[0-9A-F]{2}")

# Names of keys, headers, query parameters and environment variables whose values
# are secret. `auth` but not `author`; `key` alone (Google's `?key=`) but not `monkey`;
# the keys APIs name after what they unlock, as a whole word at the end (Azure's
# Ocp-Apim-Subscription-Key and x-functions-key, Datadog's DD-APPLICATION-KEY, app_key,
# master and license keys; not client_key_id or license_key_type).
_SECRET_NAME = re.compile(
    r"passw|passphrase|pwd|secret|token|api[-_]?key|authori[sz]ation|auth(?!or)|credential"
    r"|cookie|session|signature|private[-_]?key|access[-_]?key|^key$|^sig$|^pass$"
    r"|(?:^|[-_])(?:subscription|application|app|functions?|master|license)[-_]?key$",
    re.IGNORECASE,
)

_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s\"'<>]+")
_URL_START = re.compile(r"[a-zA-Z][a-zA-Z0-9+.\-]*://")
# The password between `scheme://user:` and the last `@` of the authority.
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s/?#@:]*:)[^\s/?#]*(?=@)")
# A value ends at the next separator; a `:` right before white space or the end is
# punctuation of the surrounding message ("GET https://…?key=abc: HTTP 401"), not the value.
_QUERY_PARAM = re.compile(
    r"(?P<head>[?&;](?P<name>[^=&;#\s?]+)=)(?P<value>[^&;#\s\"'<>]*?)(?=[&;#\s\"'<>]|:(?:\s|$)|$)"
)


def is_env_ref(value: object) -> bool:
    """Whether `value` is an `env:NAME` reference."""
    return _env_ref(value) is not None


def _env_ref(value: object) -> re.Match[str] | None:
    """The match of an `env:NAME` reference (NAME is group 1), or None."""
    return _ENV_REF.fullmatch(value) if isinstance(value, str) else None


def is_secret_name(name: str) -> bool:
    """Whether a key, header, parameter or variable of this name holds a secret."""
    return _SECRET_NAME.search(name) is not None


class JsonPlace(NamedTuple):
    """Where a value sits in a JSON document: its keys from the top, and whether the
    place is secret (under a declared secret field or a key whose name looks secret)."""

    keys: tuple[str | int, ...] = ()
    secret: bool = False

    @property
    def path(self) -> str:
        """The field path as messages name it: `headers.X-Api-Key`, `list[0]`."""
        path = ""
        for key in self.keys:
            if isinstance(key, int):
                path += f"[{key}]"
            else:
                path += f".{key}" if path else key
        return path

    def child(self, key: str | int, *, secret: bool = False) -> JsonPlace:
        """The place of an item (`key` an index) or of a field, secret if `secret`, if
        this place is, or if the field's name looks secret."""
        secret = self.secret or secret or (isinstance(key, str) and is_secret_name(key))
        return JsonPlace((*self.keys, key), secret)


def walk_json(
    value: Any,
    leaf: Callable[[Any, JsonPlace], Any],
    secret_fields: Collection[str] = (),
    place: JsonPlace = JsonPlace(),
) -> Any:
    """`value` rebuilt, objects and arrays copied, every other value replaced by
    `leaf(value, place)`; the original is left as it is.

    `secret_fields` names the top-level fields whose whole content is secret. Object keys
    are taken as strings (`headers.X-Api-Key`), array items by index (`list[0]`).
    """
    if isinstance(value, Mapping):
        return {
            key: walk_json(item, leaf, (), place.child(str(key), secret=key in secret_fields))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [walk_json(item, leaf, (), place.child(i)) for i, item in enumerate(value)]
    return leaf(value, place)


def _leaves(value: Any, secret_fields: Collection[str] = ()) -> list[tuple[Any, JsonPlace]]:
    """Every value inside `value` that is not an object or an array, with its place."""
    found: list[tuple[Any, JsonPlace]] = []
    walk_json(value, lambda leaf, place: found.append((leaf, place)), secret_fields)
    return found


def check_env_refs(config: Mapping[str, Any]) -> None:
    """Check that every string starting with `env:`, at any depth, is a valid reference.

    `add` calls this: a mistyped reference (`env:MY-TOKEN`) would otherwise be sent as
    the literal value. A value that really starts with `env:` can still be given through
    a variable that holds it.

    Raises:
        ConfigError: naming the field, never its value (it may be a mistyped secret).
    """
    for value, place in _leaves(config):
        if isinstance(value, str) and value.startswith(_ENV_PREFIX) and not is_env_ref(value):
            raise ConfigError(
                f"config field '{place.path}' starts with env: but is not a valid env: "
                "reference: use env:NAME where NAME is letters, digits and _ (not starting "
                "with a digit)"
            )


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

    def resolve(value: Any, place: JsonPlace) -> Any:
        match = _env_ref(value)
        if match is None:
            return value
        if match[1] not in env:
            raise ConfigError(
                f"config field '{place.path}' refers to environment variable {match[1]}, "
                "which is not set: set it where connector-sync runs"
            )
        return env[match[1]]

    resolved: dict[str, Any] = walk_json(config, resolve)
    return resolved


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
    from_secret_variables = {
        place.keys
        for value, place in _leaves(raw_config)
        if (match := _env_ref(value)) and is_secret_name(match[1])
    }
    found: set[str] = set()
    for value, place in _leaves(resolved_config, secret_fields):
        secret = place.secret or place.keys in from_secret_variables
        if isinstance(value, str):
            if secret:
                found.update(_secret_forms(value))
            found.update(_url_secrets(value))
        elif secret and _is_number(value):
            found.add(str(value))
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
    referenced = {match[1] for value, _ in _leaves(config) if (match := _env_ref(value))}
    environ = dict.fromkeys(referenced, "") | dict(os.environ)
    return secret_values(secret_fields, config, resolve_env_refs(config, environ))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _secret_forms(value: str) -> set[str]:
    """A secret as it may appear in text: whole, and the credential after `Bearer `/`Basic `."""
    value = value.strip()
    forms = {value}
    scheme, _, credential = value.partition(" ")
    if credential.strip() and scheme.isalpha():
        forms.add(credential.strip())
    return forms


def _url_secrets(text: str) -> set[str]:
    """The passwords and secret query-string values of the URLs inside `text`, and of
    `text` itself, if it is a URL, as httpx sends it."""
    sent = _as_sent(text)
    found = set() if sent is None else _sent_url_secrets(sent)
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


def _as_sent(value: str) -> httpx.URL | None:
    """`value` parsed as httpx parses the URL it sends, or None when it is not a URL.

    httpx normalises what it sends (a lower-case host, no default port, a space as `%20`,
    no `..` segments, IDNA): that is the form its errors, and our messages, echo.
    """
    if not _URL_START.match(value):
        return None
    import httpx  # only once a URL is seen: `--help` and plain text do without it

    try:
        return httpx.URL(value)
    except httpx.InvalidURL:
        return None


def _sent_url_secrets(url: httpx.URL) -> set[str]:
    """The password and secret query values of `url`, decoded and as httpx encodes them,
    and the credential of the `Authorization: Basic` header httpx sends for its user
    info (the user too, when it comes without a password: then it is the key)."""
    found: set[str] = set()
    if url.password:
        found |= {url.password, url.userinfo.decode("ascii").partition(":")[2]}
    if url.scheme in ("http", "https") and (url.username or url.password):  # httpx sends it
        found.add(_basic_credential(url.username, url.password))
        if not url.password:  # a key given as the user alone (Stripe's sk_live_...@)
            found |= {url.username, url.userinfo.decode("ascii")}
    for pair in url.query.decode("ascii").split("&"):
        name, _, value = pair.partition("=")
        if value and is_secret_name(unquote(name)):
            found |= {value, unquote_plus(value)}
    return found


def _basic_credential(username: str, password: str) -> str:
    """The credential httpx sends as `Authorization: Basic …` for a URL's user and password
    (`httpx._auth.BasicAuth`): standard base64, padded, of UTF-8 `user:password`. A server
    that echoes the header echoes this, which holds the password without showing it."""
    return base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def _sent_forms(secret: str) -> set[str]:
    """A secret URL as httpx sends it: normalised, without its fragment, and without its
    query string (which a connector rebuilds when it adds parameters: `?page=2`)."""
    sent = _as_sent(secret)
    if sent is None:
        return set()
    return {
        str(sent),
        str(sent.copy_with(fragment=None)),
        str(sent.copy_with(query=None, fragment=None)),
    }


def redact_json(value: Any, secrets: Iterable[str]) -> Any:
    """`value` rebuilt with every string inside it redacted (see `redact`)."""
    hidden = frozenset(secrets)
    return walk_json(value, lambda leaf, _: redact(leaf, hidden) if isinstance(leaf, str) else leaf)


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with each secret, every URL password and secret query-string value as ***.

    A secret is masked as it is and as a server may echo it: JSON-escaped (`\\"`,
    `\\u00e9`, `\\/`) and percent-encoded (`%2F`, `+` for a space); a secret URL also
    as httpx sends it (`_sent_forms`). A secret shorter than 4 characters is not searched
    for (it cannot be told from ordinary text); URL passwords and secret query values are
    masked whatever their length, found by their place in a URL.
    """
    forms: set[str] = set()
    for secret in set(secrets):
        if len(secret) >= _MIN_SEARCHED and secret != SECRET_MASK:
            forms.update(_text_forms(secret))
    for form in sorted(forms, key=lambda form: (-len(form), form)):  # longest first
        text = text.replace(form, SECRET_MASK)
    return mask_urls(text)


@lru_cache(maxsize=1024)
def _text_forms(secret: str) -> frozenset[str]:
    """`secret`, the forms httpx sends it in, and the escaped and encoded forms of each."""
    return frozenset().union(*map(_escaped_forms, {secret, *_sent_forms(secret)}))


def _escaped_forms(secret: str) -> frozenset[str]:
    """`secret` and the escaped and encoded forms of it that text may hold instead."""
    json_forms = {json.dumps(secret, ensure_ascii=flag)[1:-1] for flag in (True, False)}
    derived = json_forms | {form.replace("/", "\\/") for form in json_forms}
    encoded = {quote(secret, safe=""), quote(secret), quote_plus(secret)}
    # Percent-encoding may use lower-case hex digits (`%2f`): both spellings.
    derived |= encoded | {_PERCENT_HEX.sub(lambda m: m[0].lower(), form) for form in encoded}
    forms = {form for form in derived if len(form) >= _MIN_SEARCHED and form != SECRET_MASK}
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
    masked: dict[str, Any] = walk_json(config, _masked, secret_fields)
    return masked


def _masked(value: Any, place: JsonPlace) -> Any:
    if isinstance(value, str):
        if is_env_ref(value):
            return value
        if place.secret:
            return SECRET_MASK if value else value
        return mask_urls(value)
    if place.secret and _is_number(value):
        return SECRET_MASK
    return value
