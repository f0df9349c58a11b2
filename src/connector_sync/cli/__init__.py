"""The `connector-sync` command line: parses, calls one operation, renders, sets the exit code."""

from __future__ import annotations

from connector_sync.cli.app import app, main

__all__ = ["app", "main"]
