"""A real HTTP server on 127.0.0.1 for the http and file connector tests: a fake, not a mock.

It serves 23 items ({"id", "name", "updated"}) in every pagination style, failures on
demand (a status, a count of failures before success, a Retry-After), slow answers,
registered files, and hostile bodies made on the fly (endless, a gzip bomb, a huge page,
an endless line, a trickle, silence); it records every request it receives, and counts
the connections its clients closed.

The docs' examples ran against it on 127.0.0.1:8765. To try them, from a clone:
`python tests/support/fake_api.py` serves it there (`--port N` elsewhere, 0 for any
free port), with the files the docs download, until Ctrl-C.
"""

from __future__ import annotations

import email.utils
import json
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

ITEM_COUNT = 23
PAGE = 5


#: The files the docs' examples download (files.md), served as /files/NAME.
DOCS_FILES = {
    "export.json": b'[{"id": 1, "sku": "A-1", "qty": 3}, {"id": 2, "sku": "B-7", "qty": 1}]',
}


def item(n: int) -> dict[str, Any]:
    return {"id": n, "name": f"item {n}", "updated": n * 10}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    at: float


@dataclass
class FakeApi:
    """What the server knows: its address, the requests so far, files and counters."""

    host: str = "127.0.0.1"
    port: int = 0
    items: list[dict[str, Any]] = field(default_factory=lambda: [item(n) for n in range(1, 24)])
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Set when the server shuts down, so that endless answers end.
    stopping: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def requests_to(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    @classmethod
    @contextmanager
    def serve(cls, port: int = 0) -> Iterator[FakeApi]:
        """The server on 127.0.0.1:`port` (0: any free port), in a thread."""
        api = cls()
        server = _Server((api.host, port), _handler_for(api))
        api.port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
        thread.start()
        try:
            yield api
        finally:
            api.stopping.set()
            server.shutdown()
            server.server_close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and hung up is expected here


def _handler_for(api: FakeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def finish(self) -> None:
            super().finish()
            self.count("connections closed")

        def do_GET(self) -> None:
            self._handle()

        def do_POST(self) -> None:
            self._handle()

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            query = dict(parse_qsl(parts.query))
            length = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            with api.lock:
                api.requests.append(
                    Request(
                        self.command,
                        parts.path,
                        query,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                        time.monotonic(),
                    )
                )
            route = parts.path.strip("/").split("/")[0].replace("-", "_")
            getattr(self, f"route_{route}", self.route_missing)(parts.path, query, body)

        # -- helpers ---------------------------------------------------------------

        def send(
            self, status: int, payload: Any = None, headers: dict[str, str] | None = None
        ) -> None:
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def stream(self, blocks: Iterable[bytes], headers: dict[str, str] | None = None) -> None:
            """A 200 without a length, its body `blocks` until they end, the client hangs
            up (counted as "hung up: <path>") or the server stops."""
            self.send_response(200)
            for name, value in {"Connection": "close", **(headers or {})}.items():
                self.send_header(name, value)
            self.end_headers()
            self.close_connection = True
            try:
                for block in blocks:
                    if api.stopping.is_set():
                        return
                    self.wfile.write(block)
            except OSError:  # the client hung up
                self.count(f"hung up: {urlsplit(self.path).path}")

        def send_raw(self, status: int, data: bytes, content_type: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def items(self, query: dict[str, str]) -> list[dict[str, Any]]:
            since = query.get("updated_since")
            if since is None:
                return api.items
            return [i for i in api.items if i["updated"] > int(since)]

        def count(self, key: str) -> int:
            with api.lock:
                api.counters[key] = api.counters.get(key, 0) + 1
                return api.counters[key]

        # -- routes ----------------------------------------------------------------

        def route_missing(self, path: str, query: dict[str, str], body: Any) -> None:
            self.send(404, {"error": f"no route {path}"})

        def route_items(self, path: str, query: dict[str, str], body: Any) -> None:
            self.send(200, self.items(query))

        def route_page(self, path: str, query: dict[str, str], body: Any) -> None:
            number, size = int(query.get("page", 1)), int(query.get("per_page", PAGE))
            chunk = self.items(query)[(number - 1) * size : number * size]
            self.send(200, {"data": {"items": chunk, "page": number}})

        def route_offset(self, path: str, query: dict[str, str], body: Any) -> None:
            offset, limit = int(query["offset"]), int(query["limit"])
            self.send(200, {"results": self.items(query)[offset : offset + limit]})

        def route_cursor(self, path: str, query: dict[str, str], body: Any) -> None:
            start = int(query.get("cursor", "c0")[1:])
            items = self.items(query)
            end = start + PAGE
            following = f"c{end}" if end < len(items) else None
            self.send(200, {"items": items[start:end], "meta": {"next": following}})

        def route_link(self, path: str, query: dict[str, str], body: Any) -> None:
            number = int(query.get("page", 1))
            items = self.items(query)
            headers = {}
            if number * PAGE < len(items):
                following = dict(query, page=str(number + 1))
                link = f"{api.url}/link?" + "&".join(f"{k}={v}" for k, v in following.items())
                headers["Link"] = f'<{link}>; rel="next", <{api.url}/link?page=1>; rel="first"'
            self.send(200, items[(number - 1) * PAGE : number * PAGE], headers)

        def route_next(self, path: str, query: dict[str, str], body: Any) -> None:
            number = int(query.get("page", 1))
            items = self.items(query)
            following = f"/next?page={number + 1}" if number * PAGE < len(items) else None
            self.send(
                200, {"records": items[(number - 1) * PAGE : number * PAGE], "next": following}
            )

        def route_elsewhere(self, path: str, query: dict[str, str], body: Any) -> None:
            other = f"http://localhost:{api.port}/next?page=2"
            self.send(200, {"records": [item(1)], "next": other})

        def route_same_cursor(self, path: str, query: dict[str, str], body: Any) -> None:
            self.send(200, {"items": [item(1)], "meta": {"next": "again"}})

        def route_endless(self, path: str, query: dict[str, str], body: Any) -> None:
            self.send(200, [item(int(query.get("page", 1)))])

        def route_flaky(self, path: str, query: dict[str, str], body: Any) -> None:
            """Fails `fail` times per `run` with `status` (and `retry_after`), then succeeds."""
            seen = self.count(query["run"])
            if seen <= int(query.get("fail", 1)):
                headers = {}
                if query.get("retry_after") == "date":
                    when = datetime.now(UTC) + timedelta(seconds=2)
                    headers["Retry-After"] = email.utils.format_datetime(when, usegmt=True)
                elif "retry_after" in query:
                    headers["Retry-After"] = query["retry_after"]
                self.send(int(query.get("status", 500)), {"error": "try again"}, headers)
                return
            self.send(200, api.items[:3])

        def route_status(self, path: str, query: dict[str, str], body: Any) -> None:
            # Echoes the credentials it got, as careless APIs do, after `pad` dots.
            echo = self.headers.get("Authorization", "") + " " + query.get("api_key", "")
            pad = "." * int(query.get("pad", 0))
            if "raw" in query:  # not JSON: control characters as they are
                self.send_raw(int(path.split("/")[2]), b"nul\x00 bell\x07 esc\x1b[31m")
                return
            self.send(int(path.split("/")[2]), {"message": f"{pad}bad credentials: {echo}"})

        def route_slow(self, path: str, query: dict[str, str], body: Any) -> None:
            time.sleep(float(query["delay"]))
            self.send(200, api.items[:1])

        def route_search(self, path: str, query: dict[str, str], body: Any) -> None:
            self.send(200, {"hits": [dict(i, q=body["q"]) for i in api.items[: body["size"]]]})

        def route_scalars(self, path: str, query: dict[str, str], body: Any) -> None:
            self.send(200, [{"id": 1}, "two"])

        def route_redirect(self, path: str, query: dict[str, str], body: Any) -> None:
            self.send_response(int(query.get("status", 302)))
            self.send_header("Location", query["to"])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def route_not_json(self, path: str, query: dict[str, str], body: Any) -> None:
            self.send_raw(200, b"<html>maintenance</html>", "text/html")

        def route_encoded(self, path: str, query: dict[str, str], body: Any) -> None:
            """The items compressed `as` gzip, deflate (zlib), raw-deflate, gzip-members
            (two gzip streams one after the other) or br (not really: junk so named)."""
            data = json.dumps(api.items).encode()
            kind = query.get("as", "")
            packers = {
                "gzip": lambda d: zlib.compress(d, wbits=31),
                "deflate": zlib.compress,
                "raw-deflate": lambda d: zlib.compress(d, wbits=-15),
                "gzip-members": lambda d: (
                    zlib.compress(d[:9], wbits=31) + zlib.compress(d[9:], wbits=31)
                ),
                "br": lambda d: b"\x0b\x00\x80not brotli",
                "": lambda d: d,
            }
            encoded = packers[kind](data)
            name = {"raw-deflate": "deflate", "gzip-members": "gzip"}.get(kind, kind)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(encoded)))
            if name:
                self.send_header("Content-Encoding", name)
            self.end_headers()
            self.wfile.write(encoded)

        # -- hostile bodies, made as they are sent ----------------------------------

        def route_endless_body(self, path: str, query: dict[str, str], body: Any) -> None:
            """A JSON array that never ends."""
            record = b'{"id": 1, "name": "again"},' * 2048
            self.stream(_forever(b"[", record), {"Content-Type": "application/json"})

        def route_gzip_bomb(self, path: str, query: dict[str, str], body: Any) -> None:
            """A few KB on the wire per 64 MB of JSON whitespace, for ever."""
            packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: a gzip stream
            # After a full flush the same input packs the same (the header comes first).
            first, block = (
                packer.compress(b" " * 1024 * 1024) + packer.flush(zlib.Z_FULL_FLUSH)
                for _ in range(2)
            )
            headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
            self.stream(_forever(first, block), headers)

        def route_big_page(self, path: str, query: dict[str, str], body: Any) -> None:
            """A complete JSON page of `mb` megabytes, its length announced."""
            record = b'{"id": 1, "name": "again"},' * 2048
            count = int(query["mb"]) * 1024 * 1024 // len(record)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(count * len(record) + 1))
            self.end_headers()
            try:
                self.wfile.write(b"[")
                for _ in range(count - 1):
                    self.wfile.write(record)
                self.wfile.write(record[:-1] + b"]")
            except OSError:
                self.count(f"hung up: {path}")

        def route_endless_line(self, path: str, query: dict[str, str], body: Any) -> None:
            """A CSV file whose second line never ends (its first, with `first=endless`)."""
            start = b"" if query.get("first") == "endless" else b"id,name\n1,"
            self.stream(_forever(start, b"a" * 65536), {"Content-Type": "text/csv"})

        def route_endless_lines(self, path: str, query: dict[str, str], body: Any) -> None:
            """A JSON Lines file that never ends."""
            self.stream(_forever(b"", b'{"n": 1}\n' * 4096), {"Content-Type": "text/plain"})

        def route_trickle(self, path: str, query: dict[str, str], body: Any) -> None:
            """A body of one byte every `every` seconds, for ever."""
            pause = float(query.get("every", 1))

            def trickle() -> Iterator[bytes]:
                yield b"["
                while not api.stopping.wait(pause):
                    yield b" "

            self.stream(trickle(), {"Content-Type": "application/json"})

        def route_silent(self, path: str, query: dict[str, str], body: Any) -> None:
            """No answer at all until the server stops."""
            api.stopping.wait()

        def route_files(self, path: str, query: dict[str, str], body: Any) -> None:
            name = path.split("/", 2)[2]
            data = api.files.get(name)
            if data is None:
                self.send(404, {"error": f"no file {name}"})
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            for start in range(0, len(data), 4096):  # in pieces, as a big download comes
                self.wfile.write(data[start : start + 4096])

    return Handler


def _forever(first: bytes, block: bytes) -> Iterator[bytes]:
    yield first
    while True:
        yield block


def main(argv: list[str] | None = None) -> None:
    """`python tests/support/fake_api.py [--port 8765]`: the docs' fake API, until Ctrl-C."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=8765, help="0: any free port")
    port = parser.parse_args(argv).port
    with FakeApi.serve(port) as api:
        api.files.update(DOCS_FILES)
        print(f"serving on {api.url} (Ctrl-C to stop)", flush=True)
        with suppress(KeyboardInterrupt):
            api.stopping.wait()


if __name__ == "__main__":
    main()
