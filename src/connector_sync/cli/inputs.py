"""Turning command-line input into what the operations take: configs, durations."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from connector_sync.constants import JSON_VALUE_TYPE_NAMES
from connector_sync.documents import RepeatedKey, unique_keys
from connector_sync.exceptions import BadInput


def parse_config(config_json: str | None, config_file: Path | None) -> dict[str, Any]:
    """The connector config from --config or --config-file (a JSON object)."""
    if config_json is not None and config_file is not None:
        raise BadInput("give --config or --config-file, not both")
    if config_file is not None:
        try:
            text = config_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise BadInput(f"--config-file {config_file}: cannot read it: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise BadInput(
                f"--config-file {config_file} is not UTF-8 (byte {exc.start}): save it as UTF-8"
            ) from None
        source = f"--config-file {config_file}"
    elif config_json is not None:
        text, source = config_json, "--config"
    else:
        return {}
    example = """give a JSON object, e.g. '{"records": 100}'"""
    try:
        config = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=unique_keys)
    except RepeatedKey as exc:
        raise BadInput(f"{source}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise BadInput(
            f"{source} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): "
            f"{example}"
        ) from None
    except ValueError as exc:  # NaN, Infinity
        raise BadInput(f"{source} is not valid JSON ({exc}): {example}") from None
    except RecursionError:
        raise BadInput(f"{source} is nested too deeply: a config is a few levels deep") from None
    if not isinstance(config, dict):
        kind = JSON_VALUE_TYPE_NAMES[type(config)]  # json.loads makes only these types
        raise BadInput(f"{source} must be a JSON object, got a JSON {kind}: {example}")
    return config


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def config_assignment(text: str) -> tuple[str, Any]:
    """`key=value` of --set: the value as JSON when it is JSON (5, true, {"a": 1}, "5"),
    else as text (orders.csv)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise BadInput(f"--set '{text}' is not key=value: give e.g. --set path=orders.csv")
    try:
        value = json.loads(raw, parse_constant=_reject_constant, object_pairs_hook=unique_keys)
    except RepeatedKey as exc:
        raise BadInput(f"--set '{key.strip()}': {exc}") from None
    except ValueError:
        value = raw
    return key.strip(), value


@contextmanager
def whole_file(path: Path) -> Iterator[TextIO]:
    """A text file written whole or not at all: into a temporary file beside `path`,
    renamed over it only when the block ends without an error. Only a regular file is
    replaced (never a directory, a device, a FIFO or a symbolic link), and it keeps its
    permissions; a new one gets open()'s.

    Raises:
        BadInput: `path` is something else, or its directory cannot be written.
    """
    from connector_sync.operations import check_output_file

    check_output_file(path)
    try:
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as exc:
        raise BadInput(f"--output {path}: cannot write there: {exc.strerror}") from None
    try:
        if path.exists():  # keep who may read it (an export may be private)
            mode = path.stat().st_mode & 0o777
        else:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask  # as open() would have made it, not mkstemp's 0600
        os.chmod(fd, mode)
        with open(fd, "w", encoding="utf-8", newline="") as handle:
            yield handle
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
