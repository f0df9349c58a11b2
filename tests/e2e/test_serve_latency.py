"""`serve` answers without waiting on the client's delayed ACK: its sockets say they are
TCP, so asyncio turns Nagle's algorithm off (TCP_NODELAY) on every connection."""

from __future__ import annotations

import socket
import time

from connector_sync.server.launch import bind, resolve
from support.serving import client, served


def test_the_listening_socket_is_tcp() -> None:
    with bind(resolve("127.0.0.1", 0)) as listener:
        assert listener.proto == socket.IPPROTO_TCP


def test_answers_on_one_connection_do_not_wait_for_delayed_acks(sqlite_url: str) -> None:
    with served(sqlite_url) as server, client(server.url) as http:
        http.get("/healthz")
        started = time.monotonic()
        for _ in range(20):
            assert http.get("/api/connectors").status_code == 200
        took = time.monotonic() - started
    # With Nagle on, each answer on a kept-alive connection waited about 40 ms.
    assert took < 20 * 0.040 / 2, f"20 requests on one connection took {took:.3f}s"
