"""Who may read what (connector_sync.policy): file roots, kernel files, FIFOs, metadata
hosts and allowed hosts, at `add` and again when a sync or `test` runs."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from connector_sync.connectors.file import FileConnector
from connector_sync.connectors.http import HttpConnector
from connector_sync.connectors.sql import SqlConnector
from connector_sync.exceptions import ConfigError
from connector_sync.policy import ALLOWED_HOSTS_VARIABLE, FILE_ROOTS_VARIABLE, Policy
from support.fake_api import FakeApi

FAST = {"retry_backoff": 0.01, "max_retries": 0, "timeout": 2}


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with FakeApi.serve() as api:
        yield api


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file root with data.csv in it, set as the only one."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "data.csv").write_text("a\n1\n")
    (tmp_path / "outside.csv").write_text("secret\nkept out\n")
    monkeypatch.setenv(FILE_ROOTS_VARIABLE, str(root))
    return root


def refused(call: Callable[[], Any], *fragments: str) -> str:
    with pytest.raises(ConfigError) as raised:
        call()
    message = raised.value.message
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def in_time(call: Callable[[], Any], seconds: float = 5.0) -> Any:
    """The call's result or exception, failing the test if it blocks (on a FIFO)."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"still blocked after {seconds}s"
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


# -- files -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/proc/self/environ", "/sys/kernel/hostname", "/dev/stdin"])
def test_kernel_and_device_files_are_never_read(path: str) -> None:
    refused(lambda: FileConnector.validate_config({"path": path, "format": "csv"}), "never read")
    url = f"sqlite:///{path}"
    refused(lambda: SqlConnector.validate_config({"url": url, "query": "SELECT 1"}), "never read")


def test_a_path_outside_the_file_roots_is_refused_traversal_or_symlink(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert len(list(FileConnector({"path": str(root / "data.csv")}).read())) == 1
    escape = f"{root}/../../../../etc/shadow"
    refused(
        lambda: FileConnector.validate_config({"path": escape, "format": "csv"}),
        "/etc/shadow)",
        f"is outside {FILE_ROOTS_VARIABLE} ({root})",
    )
    (root / "link.csv").symlink_to(root.parent / "outside.csv")
    refused(lambda: FileConnector({"path": str(root / "link.csv")}), "outside.csv)", "is outside")
    monkeypatch.chdir(root)  # a relative path resolves against the current directory
    refused(lambda: FileConnector({"path": "../outside.csv"}), "is outside")


def test_a_config_stored_before_the_policy_is_checked_when_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = tmp_path / "outside.csv"
    outside.write_text("a\n1\n")
    plugin = FileConnector({"path": str(outside)})  # accepted: no roots yet
    monkeypatch.setenv(FILE_ROOTS_VARIABLE, str(tmp_path / "elsewhere"))
    refused(lambda: list(plugin.read()), "is outside")
    refused(plugin.check, "is outside")


def test_a_fifo_is_refused_at_add_and_never_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    refused(lambda: FileConnector.validate_config({"path": str(fifo)}), "a FIFO (named pipe)")
    regular = tmp_path / "swapped.csv"
    regular.write_text("a\n1\n")
    plugin = FileConnector({"path": str(regular)})
    regular.unlink()
    os.mkfifo(regular)  # swapped in after the config was checked
    refused(lambda: in_time(plugin.check), "a FIFO (named pipe)")
    refused(lambda: in_time(lambda: list(plugin.read())), "a FIFO (named pipe)")


# -- hosts -------------------------------------------------------------------------------

METADATA_URLS = [
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.170.2/v2/credentials",
    "http://[fd00:ec2::254]/latest/",
    "http://[::ffff:169.254.169.254]/",
    "http://metadata.google.internal./computeMetadata/v1/",
    "http://[fe80::1]:8080/",
]


@pytest.mark.parametrize("url", METADATA_URLS)
def test_link_local_and_metadata_hosts_are_refused_unless_listed(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused(lambda: HttpConnector.validate_config({"url": url}), "cloud metadata address")
    refused(lambda: FileConnector.validate_config({"url": url, "format": "json"}), "metadata")
    monkeypatch.setenv(ALLOWED_HOSTS_VARIABLE, str(urlsplit(url).hostname))
    HttpConnector.validate_config({"url": url})


def test_a_name_that_resolves_to_a_metadata_address_is_refused_when_connecting(
    api: FakeApi,
) -> None:
    # 2852039166 is 169.254.169.254 as one number: no rule on names sees it, the
    # address looked up at connect time does.
    plugin = HttpConnector({"url": "http://2852039166/latest/meta-data/", **FAST})
    refused(lambda: list(plugin.read()), "connecting to 2852039166", "(169.254.169.254)")
    redirect = f"{api.url}/redirect?to={quote('http://169.254.169.254/latest/')}"
    refused(lambda: list(HttpConnector({"url": redirect, **FAST}).read()), "metadata address")


def test_allowed_hosts_refuse_a_name_resolving_outside_them(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://localhost:{api.port}/items"
    monkeypatch.setenv(ALLOWED_HOSTS_VARIABLE, "10.0.0.0/8, api.example.com")
    plugin = HttpConnector({"url": url, **FAST})  # a name: decided by its addresses
    refused(
        lambda: list(plugin.read()),
        "host localhost (127.0.0.1) is not in CONNECTOR_SYNC_ALLOWED_HOSTS",
        "10.0.0.0/8",
    )
    refused(lambda: FileConnector({"url": url, "format": "json", **FAST}).check(), "not in")
    refused(lambda: HttpConnector.validate_config({"url": api.url}), "127.0.0.1 is not in")
    assert api.requests == []
    for allowed in ("127.0.0.0/8", "localhost", "*.example.com,localhost"):
        monkeypatch.setenv(ALLOWED_HOSTS_VARIABLE, allowed)
        assert len(list(HttpConnector({"url": url, **FAST}).read())) == 23


def test_allowed_hosts_with_names_only_refuse_other_names_at_add(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ALLOWED_HOSTS_VARIABLE, "*.example.com")
    HttpConnector.validate_config({"url": "https://api.example.com/v1"})
    refused(lambda: HttpConnector.validate_config({"url": "https://example.org/"}), "not in")


def test_a_malformed_allowed_hosts_entry_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ALLOWED_HOSTS_VARIABLE, "api.example.com, https://x/")
    refused(Policy.from_environment, ALLOWED_HOSTS_VARIABLE, "'https://x/'")


def test_no_policy_set_reads_any_file_and_host_but_the_refused_ones(
    api: FakeApi, tmp_path: Path
) -> None:
    path = tmp_path / "any.csv"
    path.write_text("a\n1\n")
    assert Policy.from_environment() == Policy()
    assert len(list(FileConnector({"path": str(path)}).read())) == 1
    assert len(list(HttpConnector({"url": f"{api.url}/items"}).read())) == 23
