"""Turning command-line input into what the operations take: the connector config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from connector_sync.connectors.base import JSON_VALUE_TYPE_NAMES
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
        config = json.loads(text, parse_constant=_reject_constant)
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
