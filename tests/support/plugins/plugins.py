"""Connector types for the tests, installed through the entry-point group like any plugin."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from connector_sync.connectors.base import CheckResult, ConfigField, ConnectorPlugin
from connector_sync.exceptions import TransientError


class RecordsConnector(ConnectorPlugin):
    """Yields the records given in its config, and remembers a cursor in its state."""

    type_name = "records"
    config_fields = (
        ConfigField("records", list, required=True),
        ConfigField("token", str, secret=True),
        ConfigField("fail_after", int),
    )

    def check(self) -> CheckResult:
        return CheckResult(True, f"{len(self.config['records'])} records")

    def read(self) -> Iterator[dict[str, Any]]:
        for i, record in enumerate(self.config["records"]):
            if self.config["fail_after"] is not None and i >= self.config["fail_after"]:
                raise RuntimeError(f"records connector stopped after {i} records")
            self.state["last_seen"] = i
            yield record


class FlakyConnector(ConnectorPlugin):
    """Fails transiently (a stand-in for a 503) the first `fail_times` reads, then works.

    Tries are counted in a file, since each try builds a new plugin object.
    """

    type_name = "flaky"
    config_fields = (
        ConfigField("message", str, default="service unavailable (503)"),
        ConfigField("fail_times", int, default=1_000_000),
        ConfigField("counter_file", str),
        ConfigField("records", int, default=3),
    )

    def _tries(self) -> int:
        path = self.config["counter_file"]
        if path is None:
            return 1
        counter = Path(path)
        tries = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(tries))
        return tries

    def check(self) -> CheckResult:
        raise TransientError(self.config["message"])

    def read(self) -> Iterator[dict[str, Any]]:
        tries = self._tries()
        yield {"n": 0, "try": tries}
        if tries <= self.config["fail_times"]:
            raise TransientError(f"{self.config['message']} (try {tries})")
        for n in range(1, self.config["records"]):
            yield {"n": n, "try": tries}


class SleepyConnector(ConnectorPlugin):
    """Sleeps before each record: a slow source, or with a long sleep, a hung one."""

    type_name = "sleepy"
    config_fields = (
        ConfigField("records", int, default=1),
        ConfigField("seconds", float, default=60.0),
    )

    def check(self) -> CheckResult:
        return CheckResult(True, "sleepy")

    def read(self) -> Iterator[dict[str, Any]]:
        for n in range(self.config["records"]):
            time.sleep(self.config["seconds"])
            yield {"n": n}


class StealLeaseConnector(ConnectorPlugin):
    """Mid-sync, plays another worker taking the connector over, then keeps reading.

    Plugins never touch the database; this one does so only to stage a lost lease.
    """

    type_name = "steal"
    config_fields = (
        ConfigField("database_url", str, required=True),
        ConfigField("connector_id", int, required=True),
        ConfigField("wait", float, default=0.5),
    )

    def check(self) -> CheckResult:
        return CheckResult(True, "ready to steal")

    def read(self) -> Iterator[dict[str, Any]]:
        yield {"n": 1}
        engine = sa.create_engine(
            self.config["database_url"].replace("postgresql://", "postgresql+psycopg://")
        )
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE connectors SET lease_token = 'thief', lease_owner = 'thief:1' "
                    "WHERE id = :id"
                ),
                {"id": self.config["connector_id"]},
            )
        engine.dispose()
        time.sleep(self.config["wait"])  # long enough for a heartbeat to notice
        yield {"n": 2}
