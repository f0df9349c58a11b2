"""Connector plugins: the protocol every plugin implements, the registry and the built-ins."""

from __future__ import annotations

from connector_sync.connectors.base import CheckResult, ConfigField, ConnectorPlugin
from connector_sync.connectors.registry import available_types, load_plugin

__all__ = ["CheckResult", "ConfigField", "ConnectorPlugin", "available_types", "load_plugin"]
