"""Who may call the API: the secret fails closed, the bearer compares in constant time,
--no-auth only on loopback, a port that cannot be had is one clear line."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from connector_sync.exceptions import BadInput
from connector_sync.server.auth import bearer_matches, is_loopback, load_secret
from connector_sync.server.launch import bind, resolve


def test_the_secret_comes_from_the_file_first_then_cron_secret(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-the-file-0123456789\n")
    assert load_secret(secret_file, "from-env-0123456789") == b"from-the-file-0123456789"
    assert load_secret(None, "  from-env-0123456789 ") == b"from-env-0123456789"
    assert load_secret(None, "clé-secrète-été-0123") == "clé-secrète-été-0123".encode()


@pytest.mark.parametrize(
    ("content", "environment", "message"),
    [
        (None, None, "serve needs a secret: set CRON_SECRET or give --secret-file PATH"),
        (None, "", "CRON_SECRET is empty"),
        (None, " \n", "CRON_SECRET is empty"),
        ("\n", "ignored-0123456789", "--secret-file {path} is empty"),
        (b"\xff\xfe", None, "--secret-file {path} is not UTF-8 text"),
        ("two\nlines", None, "--secret-file {path} holds a line break inside"),
    ],
)
def test_a_missing_or_unusable_secret_refuses_to_start(
    tmp_path: Path, content: str | bytes | None, environment: str | None, message: str
) -> None:
    path = tmp_path / "secret"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(BadInput) as raised:
        load_secret(path if content is not None else None, environment)
    assert raised.value.message.startswith(message.format(path=path))
    assert "\n" not in raised.value.message


def test_an_unreadable_secret_file_is_named_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=r"^--secret-file .*/missing: cannot read it: No such file"):
        load_secret(tmp_path / "missing", "env-is-not-used-0123")


def test_the_secret_is_never_in_the_refusal(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("hunter2\nhunter3")
    with pytest.raises(BadInput) as raised:
        load_secret(path, None)
    assert "hunter" not in raised.value.message


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        ("Bearer s3cret", True),
        ("bearer s3cret", True),  # the scheme is case-insensitive
        ("BEARER  s3cret ", True),
        ("Bearer s3cre", False),
        ("Bearer s3cret2", False),
        ("Bearer S3CRET", False),
        ("Basic s3cret", False),
        ("s3cret", False),
        ("Bearer", False),
        ("", False),
        (None, False),
        ("Bearer sé", False),
    ],
)
def test_the_bearer_must_be_the_secret(header: str | None, matches: bool) -> None:
    assert bearer_matches(header, b"s3cret") is matches


def test_a_non_ascii_secret_matches_the_utf8_bytes_a_client_sends() -> None:
    secret = "clé".encode()
    # Starlette hands header bytes over decoded as latin-1.
    header = b"Bearer " + secret
    assert bearer_matches(header.decode("latin-1"), secret)
    assert not bearer_matches("Bearer clé", secret)  # the same text sent as latin-1


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("fe80::1%eth0", False),
        ("localhost", False),  # a name: bound addresses are checked, not names
    ],
)
def test_no_auth_is_for_loopback_addresses_only(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_a_taken_port_is_one_clear_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BadInput) as raised:
            bind(resolve("127.0.0.1", port))
    assert raised.value.message == (
        f"--host 127.0.0.1 --port {port}: cannot listen there (Address already in use): "
        "choose another --port, or stop what uses it"
    )


def test_an_unknown_host_is_one_clear_line() -> None:
    with pytest.raises(BadInput, match=r"^--host no-such-host\.invalid: cannot resolve it \("):
        resolve("no-such-host.invalid", 8000)


def test_port_zero_binds_a_free_port_on_the_host_given() -> None:
    with bind(resolve("localhost", 0)) as listener:
        host, port = listener.getsockname()[:2]
    assert is_loopback(host) and port > 0
