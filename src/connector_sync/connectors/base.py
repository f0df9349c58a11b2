"""The plugin contract: config fields, `check`, and a lazy `read` of records.

A plugin never touches the database. The runner hands it its validated config and
the incremental state saved by the last completed sync; the plugin yields records
(JSON-serialisable dicts) one at a time and may update `self.state`, which the
runner saves only when the sync completes.

Errors are typed (see connector_sync.exceptions): raise TransientError for what a
retry may fix (timeouts, 429, 5xx, connection resets) and PermanentError or
ConfigError for what it cannot (bad config, 401/403, 404, a missing file). Any other
exception counts as permanent.
"""

from __future__ import annotations

import abc
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from connector_sync import secrets
from connector_sync.constants import JSON_TYPE_NAMES as JSON_TYPE_NAMES
from connector_sync.constants import JSON_VALUE_TYPE_NAMES as JSON_VALUE_TYPE_NAMES
from connector_sync.exceptions import ConfigError, TransientError
from connector_sync.secrets import SECRET_MASK as SECRET_MASK


@dataclass(frozen=True)
class ConfigField:
    """One configuration key a plugin understands."""

    name: str
    type: type = str
    required: bool = False
    default: Any = None
    secret: bool = False
    help: str = ""
    #: The smallest value a number field takes (inclusive); None: no bound.
    minimum: float | None = None
    #: The largest value a number field takes (inclusive); None: no bound.
    maximum: float | None = None

    def __post_init__(self) -> None:
        if self.type not in JSON_TYPE_NAMES:
            raise TypeError(f"config field {self.name}: unsupported type {self.type!r}")
        if self.required and self.default is not None:
            raise TypeError(f"config field {self.name}: a required field has no default")
        bounds = [b for b in (self.minimum, self.maximum) if b is not None]
        if bounds and self.type not in (int, float):
            raise TypeError(f"config field {self.name}: minimum and maximum are for numbers")
        if len(bounds) == 2 and bounds[0] > bounds[1]:
            raise TypeError(f"config field {self.name}: minimum is more than maximum")

    @property
    def type_name(self) -> str:
        return JSON_TYPE_NAMES[self.type]

    def coerce(self, type_name: str, value: Any, *, within: str = "") -> Any:
        """The value checked against the field's type (ints are accepted as numbers).

        `within` names the object field this one sits in (`pagination`), for messages.
        """
        expected = self.type
        where = f"{type_name} config field '{_dotted(within, self.name)}'"
        ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            try:
                value = float(value)
            except OverflowError:  # an integer too large for a float
                raise ConfigError(f"{where} must be a finite number") from None
            ok = True
        if not ok:
            got = type(value).__name__
            if not (self.secret or isinstance(value, dict | list)):  # never echo a secret
                got += f" {value!r}"
            raise ConfigError(f"{where} must be {self.type_name}, got {got}")
        if expected in (int, float):
            self._check_number(where, value)
        return value

    def _check_number(self, where: str, value: float) -> None:
        """Raises ConfigError for NaN, an infinity, or a value outside the bounds."""
        got = "" if self.secret else f", got {_number(value)}"  # never echo a secret
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number{got}")
        if self.minimum is not None and value < self.minimum:
            raise ConfigError(f"{where} must be {_number(self.minimum)} or more{got}")
        if self.maximum is not None and value > self.maximum:
            raise ConfigError(f"{where} must be {_number(self.maximum)} or less{got}")

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type_name,
            "required": self.required,
            "default": self.default,
            "secret": self.secret,
            "help": self.help,
            "minimum": self.minimum,
            "maximum": self.maximum,
        }


def validate_fields(
    type_name: str,
    fields: Sequence[ConfigField],
    config: Mapping[str, Any],
    *,
    within: str = "",
) -> dict[str, Any]:
    """`config` checked against `fields`, defaults filled in.

    `within` is empty for a plugin's whole config, or the name of the object field
    (`pagination`, `incremental`) whose keys `fields` describe.

    Raises:
        ConfigError: naming the field that is missing, unknown or of the wrong type, or
            a number that is NaN, infinite or out of the field's bounds.
    """
    where = f"{type_name} config field '{within}'" if within else f"{type_name} config"
    if not isinstance(config, Mapping):
        raise ConfigError(f"{where} must be a JSON object")
    known = {f.name: f for f in fields}
    unknown = sorted(set(config) - set(known))
    if unknown:
        raise ConfigError(
            f"{where} has unknown field(s) {', '.join(map(str, unknown))}; "
            f"known fields: {', '.join(known) or 'none'}"
        )
    result: dict[str, Any] = {}
    for spec in fields:
        if spec.name in config and config[spec.name] is not None:
            result[spec.name] = spec.coerce(type_name, config[spec.name], within=within)
        elif spec.required:
            raise ConfigError(
                f"{type_name} config is missing required field '{_dotted(within, spec.name)}'"
                + (f" ({spec.help})" if spec.help else "")
            )
        else:
            result[spec.name] = spec.default
    return result


def _dotted(within: str, name: str) -> str:
    return f"{within}.{name}" if within else name


def _number(value: float) -> str:
    """A number as a message shows it: 86400 rather than 86400.0, 1e+20, nan, inf."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    if isinstance(value, int) and abs(value) >= 10**100:
        return "a number of more than 100 digits"
    return repr(value)


def printable(text: str) -> str:
    """`text` with each character that is not printable (a control character, a lone
    surrogate) written as an escape (\\x00, \\ud800): what a source sends stays one line
    of text every database can store."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


#: Seconds `check` (what `connector-sync test` runs) may take in all, unless configured.
DEFAULT_CHECK_TIMEOUT = 60.0


def check_timeout_field() -> ConfigField:
    """The `check_timeout` field of the built-in types: `test`'s overall deadline."""
    return ConfigField(
        "check_timeout",
        float,
        default=DEFAULT_CHECK_TIMEOUT,
        minimum=0.001,
        maximum=86_400,
        help="seconds `test` may take in all; a silent or trickling source fails then",
    )


@dataclass(frozen=True)
class Deadline:
    """A moment (on the monotonic clock) by which an operation must be done."""

    at: float
    seconds: float
    #: The config field that sets it, for messages.
    field: str = "check_timeout"

    @classmethod
    def after(cls, seconds: float, field: str = "check_timeout") -> Deadline:
        return cls(time.monotonic() + seconds, seconds, field)

    def left(self) -> float:
        return self.at - time.monotonic()

    def passed(self) -> bool:
        return self.left() <= 0

    def error(self, what: str) -> TransientError:
        return TransientError(
            f"{what}: not done within {self.seconds:g}s ({self.field}); raise {self.field} "
            "if the source is only slow"
        )

    def check(self, what: str) -> None:
        """Raises TransientError (naming `what` and the field) once the deadline passed."""
        if self.passed():
            raise self.error(what)


def own_sqlite_file(own_database_url: str) -> str | None:
    """The file of connector-sync's own database when it is SQLite (None otherwise)."""
    from connector_sync.db import plain_url

    plain = plain_url(own_database_url)
    if plain is not None:  # the usual forms, without importing SQLAlchemy for a sync
        return plain.sqlite_path
    import sqlalchemy as sa

    try:
        url = sa.make_url(own_database_url)
    except sa.exc.ArgumentError:
        return None
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return url.database


@dataclass(frozen=True)
class CheckResult:
    """What `check` found: whether the source is reachable and usable, in one sentence."""

    ok: bool
    message: str
    details: dict[str, Any] = field(default_factory=dict)


class ConnectorPlugin(abc.ABC):
    """Base class of every connector type."""

    #: The name users give as `--type`; equal to the entry-point name.
    type_name: ClassVar[str]
    #: One line for `connector-sync types`.
    description: ClassVar[str] = ""
    #: The configuration keys this type accepts.
    config_fields: ClassVar[tuple[ConfigField, ...]] = ()
    #: Kept by a plugin that knows its records as it makes them: the (field name, exact
    #: value type) pairs of every record `read` has yielded so far (updated before it
    #: yields them), with no float NaN or infinite among the values. The runner then
    #: takes the dataset's schema from it and encodes without looking at each record.
    #: None (the default): the runner looks at each record.
    record_fields: set[tuple[str, type]] | None = None

    def __init__(self, config: Mapping[str, Any], state: Mapping[str, Any] | None = None) -> None:
        self.config: dict[str, Any] = self.validate_config(config)
        self.state: dict[str, Any] = dict(state or {})

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """The config with defaults filled in.

        Raises:
            ConfigError: a required field is missing, a field is unknown or has the wrong
                type, or a number is out of bounds.
        """
        return validate_fields(cls.type_name, cls.config_fields, config)

    @classmethod
    def secret_fields(cls) -> frozenset[str]:
        """The names of the config fields this type declares secret."""
        return frozenset(f.name for f in cls.config_fields if f.secret)

    @classmethod
    def check_new_config(cls, config: Mapping[str, Any]) -> None:
        """Raise ConfigError for what a config being added or changed must not say, beyond
        validate_config: rules added after connectors were stored with such configs, which
        keep syncing as they did (a stored config is checked by validate_config alone).
        `config` is as given, before defaults; nothing by default.
        """
        return None

    @classmethod
    def mask_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """The config as it may be shown: secret fields, secret headers and URL passwords ***."""
        return secrets.mask_config(cls.secret_fields(), config)

    @classmethod
    def refuse_own_database(cls, config: Mapping[str, Any], own_database_url: str) -> None:
        """Raise ConfigError when `config` reads connector-sync's own database, which holds
        every tenant's configs and secrets, without saying it means to. A type that reads
        no database has nothing to refuse (this default).

        `config` is resolved (`env:` references replaced), or as stored: a type checks what
        it can.
        """
        return None

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {
            "type": cls.type_name,
            "description": cls.description,
            "fields": [f.describe() for f in cls.config_fields],
        }

    @abc.abstractmethod
    def check(self) -> CheckResult:
        """Test the connection cheaply, without reading the whole source.

        Returns a CheckResult; raises PluginError subclasses for failures it can classify.
        """

    @abc.abstractmethod
    def read(self) -> Iterator[dict[str, Any]]:
        """Yield the source's records lazily, one dict at a time.

        Memory must not grow with the size of the source. May update `self.state`.
        """
