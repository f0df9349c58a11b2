"""The real command line, invoked in-process (Typer's CliRunner) against one database URL."""

from __future__ import annotations

from typing import Any

from typer.testing import CliRunner


class Cli:
    """Invokes the real command line in-process against one database URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.runner = CliRunner()

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> Any:
        from connector_sync.cli import app

        return self.runner.invoke(app, ["--database-url", self.url, *args], env=env)
