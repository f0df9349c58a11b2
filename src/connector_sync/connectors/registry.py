"""Finds connector types through the `connector_sync.connectors` entry-point group."""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points

from connector_sync.connectors.base import ConnectorPlugin
from connector_sync.exceptions import BadInput, ConnectorSyncError, PermanentError

ENTRY_POINT_GROUP = "connector_sync.connectors"


@cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_types() -> list[str]:
    """Names of every installed connector type, sorted."""
    return sorted(_entry_points())


@cache
def load_plugin(type_name: str) -> type[ConnectorPlugin]:
    """The plugin class registered under `type_name`.

    Raises:
        BadInput: no plugin of that name is installed.
        PermanentError: the plugin is installed but cannot be imported.
    """
    entry_point = _entry_points().get(type_name)
    if entry_point is None:
        known = ", ".join(available_types()) or "none"
        raise BadInput(
            f"unknown connector type '{type_name}': installed types are {known} "
            "(see 'connector-sync types')"
        )
    try:
        plugin = entry_point.load()
    except Exception as exc:
        raise PermanentError(
            f"connector type '{type_name}' ({entry_point.value}) failed to load: {exc}"
        ) from exc
    if not (isinstance(plugin, type) and issubclass(plugin, ConnectorPlugin)):
        raise PermanentError(
            f"connector type '{type_name}' ({entry_point.value}) is not a ConnectorPlugin"
        )
    if getattr(plugin, "type_name", None) != type_name:
        raise PermanentError(
            f"connector type '{type_name}' ({entry_point.value}) declares type_name "
            f"{getattr(plugin, 'type_name', None)!r}; they must match"
        )
    return plugin


def secret_fields(type_name: str) -> frozenset[str]:
    """The config fields `type_name` declares secret; none for a type that cannot be loaded
    (its connectors' configs are then masked by key names and URLs alone)."""
    try:
        return load_plugin(type_name).secret_fields()
    except ConnectorSyncError:
        return frozenset()
