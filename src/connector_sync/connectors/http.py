"""`http`: records from a JSON REST API, page by page, through httpx.

Also home of `HttpSession`, the one HTTP client every connector uses (the `file`
connector downloads through it): a per-connector rate limit, retries of transient
failures with tenacity, errors classified as transient or permanent, and URLs shown
without their secrets.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import socket
import time
import zlib
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import httpcore
import httpx
import tenacity

from connector_sync.connectors import jsontext
from connector_sync.connectors.base import (
    CheckResult,
    ConfigField,
    ConnectorPlugin,
    Deadline,
    check_timeout_field,
    printable,
    validate_fields,
)
from connector_sync.connectors.httpfields import (
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MAX_RETRY_WAIT,
    MAX_SLEEP_IN_REQUEST,
    MAX_WAIT_SECONDS,
    byte_size,
    max_response_bytes_field,
    max_retry_wait_field,
    timeout_field,
)
from connector_sync.connectors.incremental import Cursor, Incremental, incremental_field
from connector_sync.exceptions import ConfigError, PermanentError, PluginError, TransientError
from connector_sync.policy import Policy
from connector_sync.secrets import is_env_ref, is_secret_name, mask_urls, redact, secret_values

T = TypeVar("T")

PAGINATION_TYPES = ("none", "page", "offset", "cursor", "link", "next_url")
#: The most bytes of a body handed on at once: a gzip bomb inflates no faster.
_PIECE_BYTES = 64 * 1024
#: What connector-sync can decompress, a bounded piece at a time (see `_Inflater`).
ACCEPT_ENCODING = "gzip, deflate"
DEFAULT_MAX_PAGES = 10_000
_EXCERPT_CHARS = 200
#: How much of an error response's body is read for its excerpt, in bytes.
_EXCERPT_WINDOW_BYTES = 16 * 1024
# A character of a secret takes at most this many in an escaped or encoded form of it
# (`%F0%9F%98%80` or `\ud83d\ude00` for one emoji).
_MAX_ENCODED_CHARS = 12
# The longest an excerpt waits for a trickling error body, in seconds.
_EXCERPT_SECONDS = 5.0
# 408 Request Timeout and 429 Too Many Requests are worth a retry; so is every 5xx.
_TRANSIENT_STATUS = frozenset({408, 429})
MIN_RATE = 0.001


# RFC 9110: a header name is a token; a value is printable ASCII, spaces and tabs (httpx
# sends header values as ASCII; a line break would start another header).
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")

_PAGINATION_FIELDS = (
    ConfigField("type", str, default="none", help=" | ".join(PAGINATION_TYPES)),
    ConfigField("page_param", str, default="page", help="page: the page number parameter"),
    ConfigField("start_page", int, default=1, help="page: the first page's number"),
    ConfigField("offset_param", str, default="offset", help="offset: the offset parameter"),
    ConfigField("limit_param", str, default="limit", help="offset: the page size parameter"),
    ConfigField("size_param", str, help="page: the page size parameter, if any"),
    ConfigField("page_size", int, minimum=1, help="page/offset: records per page"),
    ConfigField("cursor_param", str, help="cursor: the parameter that sends the cursor"),
    ConfigField("cursor_path", str, help="cursor: dot path of the next cursor in a response"),
    ConfigField("next_url_path", str, help="next_url: dot path of the next page's URL"),
    ConfigField(
        "max_pages", int, default=DEFAULT_MAX_PAGES, minimum=1, help="stop with an error beyond"
    ),
)
# The keys each pagination type uses (besides `type` and `max_pages`), and which it needs.
_PAGINATION_KEYS: dict[str, tuple[set[str], set[str]]] = {
    "none": (set(), set()),
    "page": ({"page_param", "start_page", "size_param", "page_size"}, set()),
    "offset": ({"offset_param", "limit_param", "page_size"}, set()),
    "cursor": ({"cursor_param", "cursor_path"}, {"cursor_param", "cursor_path"}),
    "link": (set(), set()),
    "next_url": ({"next_url_path"}, {"next_url_path"}),
}
_DEFAULT_OFFSET_PAGE_SIZE = 100
# Pagination types that page through query parameters; the others follow a URL.
_QUERY_PAGED = frozenset({"none", "page", "offset", "cursor"})
# What a parsed record list holds when every record is an object (the usual case).
_DICT_ONLY = frozenset({dict})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently one request is tried again."""

    #: Tries after the first; 0 means no retry.
    max_retries: int = 4
    #: The first wait, in seconds; it doubles each time (plus up to as much jitter).
    backoff: float = 1.0
    #: The longest wait a Retry-After may ask for, in seconds: a longer one is cut to this.
    max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT

    @property
    def max_sleep(self) -> float:
        """The longest sleep between tries of one request; asked for more, it gives up."""
        return min(self.max_retry_wait, MAX_SLEEP_IN_REQUEST)


class RetryableError(TransientError):
    """A request failed in a way that may pass; `asked` is the server's Retry-After in
    seconds, if it sent one (already at most MAX_WAIT_SECONDS)."""

    def __init__(self, message: str, asked: float | None = None) -> None:
        super().__init__(message)
        self.asked = asked


class HttpSession:
    """One connector's HTTP client: rate limit, retries, classified errors, safe URLs,
    bounded bodies, the access policy, and an optional deadline for all of it."""

    def __init__(
        self,
        *,
        timeout: float,
        headers: Mapping[str, str] | None = None,
        max_requests_per_second: float | None = None,
        retry: RetryPolicy | None = None,
        secrets: set[str] | frozenset[str] = frozenset(),
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        body_name: str = "response",
        deadline: Deadline | None = None,
    ) -> None:
        self.timeout = timeout
        #: Bounds every body read (`iter_body`): a page of `request_json`, a `stream`'s
        #: download; `body_name` is what the error calls the body ("the file is more than").
        self.max_response_bytes = max_response_bytes
        self.body_name = body_name
        #: When everything must be done (a check), or None.
        self.deadline = deadline
        # Read now, not at add: a config stored before the policy is checked as it runs.
        self.policy = Policy.from_environment()
        self.retry = retry or RetryPolicy()
        self.secrets = set(secrets)
        self._secret_margin = _MAX_ENCODED_CHARS * max(map(len, self.secrets), default=0)
        self._interval = 1.0 / max_requests_per_second if max_requests_per_second else 0.0
        self._next_request_at = 0.0
        self._backoff = tenacity.wait_exponential(
            multiplier=self.retry.backoff, max=self.retry.max_sleep
        ) + tenacity.wait_random(0, self.retry.backoff)
        self._home: tuple[str, str, int | None] | None = None
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            headers={"Accept-Encoding": ACCEPT_ENCODING, **(headers or {})},
            follow_redirects=True,
            transport=_checked_transport(self.policy),
            event_hooks={
                "request": [self._check_host, self._keep_secrets_home],
                "response": [self._refuse_body_across_origins],
            },
        )

    def __enter__(self) -> HttpSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    def shown(self, url: httpx.URL | str) -> str:
        """The URL as it may appear in a message: no fragment, no secrets."""
        return redact(str(httpx.URL(str(url)).copy_with(fragment=None)), self.secrets)

    def request_json(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> tuple[httpx.Response, Any]:
        """The response and its parsed JSON body, after retries of transient failures.

        The body is read as it comes, and refused past `max_response_bytes`, as sent or
        once decompressed (a gzip bomb).

        Raises:
            TransientError: retries did not help (timeouts, 429, 5xx, connection errors),
                or the deadline passed.
            PermanentError: 4xx, a body that is not JSON or too large, a URL httpx cannot
                use, a 307/308 to another origin.
        """

        def attempt() -> tuple[httpx.Response, bytearray]:
            response = self._send(self._build(method, url, params, body), stream=True)
            try:
                self._raise_for_status(response)
                return response, self._read_body(response)
            finally:
                response.close()

        response, content = self._retrying(attempt)
        try:
            data = jsontext.loads(content)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            kind = response.headers.get("content-type", "no content type")
            raise PermanentError(
                f"{response.request.method} {self.shown(response.url)}: the response is not "
                f"JSON ({kind}): {getattr(exc, 'msg', exc)}"
            ) from None
        return response, data

    @contextmanager
    def stream(self, url: str) -> Iterator[httpx.Response]:
        """A GET whose body is still to be read (`iter_bytes`), closed when the block ends."""

        def attempt() -> httpx.Response:
            response = self._send(self._build("GET", url, None, None), stream=True)
            try:
                self._raise_for_status(response)
            except BaseException:
                response.close()
                raise
            return response

        response = self._retrying(attempt)
        try:
            yield response
        finally:
            response.close()

    def iter_body(self, response: httpx.Response) -> Iterator[bytes]:
        """A streamed response's body as it comes, decompressed at most `_PIECE_BYTES` at a
        time however much one network read inflates to; stops at the deadline, and at
        `max_response_bytes` as announced, sent or decompressed (an endless body, a gzip
        bomb): nothing is read of a body announced larger.

        Raises:
            TransientError, PermanentError: as `raise_transport_error`; PermanentError for
                a Content-Encoding that cannot be undone (an unknown one, corrupt data),
                or a body past `max_response_bytes`.
        """
        method, url = response.request.method, str(response.url)
        encoding = response.headers.get("content-encoding", "")
        limit = self.max_response_bytes
        try:
            announced = int(response.headers.get("content-length", ""))
        except ValueError:
            announced = 0
        if announced > limit:
            raise self._too_large(response, f"is {announced} bytes, more than")

        def pieces() -> Iterator[bytes]:
            inflater = _Inflater(encoding)
            for data in response.iter_raw():
                self.check_deadline(method, url)
                if response.num_bytes_downloaded > limit:
                    raise self._too_large(response, "is more than")
                yield from inflater.inflate(data)
            yield from inflater.inflate(b"", final=True)

        inflated = 0
        try:
            for piece in pieces():  # the final flush's pieces are counted too
                inflated += len(piece)
                if inflated > limit:
                    raise self._too_large(response, "decompresses to more than")
                yield piece
        except httpx.HTTPError as exc:
            self.raise_transport_error(exc, method, url)
        except (ValueError, zlib.error) as exc:
            raise PermanentError(
                f"{method} {self.shown(url)}: cannot decompress the body "
                f"(Content-Encoding {encoding!r}): {exc}"
            ) from None

    def check_deadline(self, method: str, url: httpx.URL | str) -> None:
        """Raises TransientError, naming the request and the deadline, once it passed."""
        if self.deadline is not None:
            self.deadline.check(f"{method} {self.shown(url)}")

    def raise_transport_error(self, exc: httpx.HTTPError, method: str, url: str) -> NoReturn:
        """Raises the project's error for an httpx failure while sending or reading."""
        self.check_deadline(method, url)  # a timeout cut short by the deadline
        shown = self.shown(url)
        if isinstance(exc, httpx.TimeoutException):
            raise RetryableError(f"{method} {shown}: timed out after {self.timeout:g}s") from exc
        detail = redact(" ".join(str(exc).split()) or type(exc).__name__, self.secrets)
        # httpx reports a Location header it cannot parse as a RemoteProtocolError raised
        # while handling an InvalidURL: no retry makes that redirect usable.
        bad_redirect = isinstance(exc.__context__, httpx.InvalidURL)
        transient = httpx.NetworkError | httpx.RemoteProtocolError | httpx.ProxyError
        if isinstance(exc, transient) and not bad_redirect:
            raise RetryableError(f"{method} {shown}: {detail}") from exc
        raise PermanentError(f"{method} {shown}: {detail}") from exc

    # -- one request ---------------------------------------------------------------

    def _build(
        self, method: str, url: str, params: Mapping[str, Any] | None, body: Any
    ) -> httpx.Request:
        try:
            # Merge, not replace: a query string written in `url` stays.
            target = httpx.URL(url).copy_merge_params(dict(params)) if params else url
            timeout: Any = httpx.USE_CLIENT_DEFAULT
            if self.deadline is not None:  # no single wait may outlast the deadline
                timeout = httpx.Timeout(min(self.timeout, max(self.deadline.left(), 0.001)))
            return self._client.build_request(method, target, json=body, timeout=timeout)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise ConfigError(f"{method} {redact(url, self.secrets)}: not a usable URL") from exc

    def _check_host(self, request: httpx.Request) -> None:
        """Refuse a request (a redirect's too) to a host the policy does not allow."""
        where = f"{request.method} {self.shown(request.url)}"
        self.policy.check_host(request.url.host, where)

    def _keep_secrets_home(self, request: httpx.Request) -> None:
        """Drop secret headers from a request to another origin than the first request's.

        httpx drops Authorization on a redirect to another origin, but not X-Api-Key,
        Cookie and the like; a download redirected to a storage bucket must not carry them.
        """
        origin = _origin(request.url)
        if self._home is None:
            self._home = origin
        elif origin != self._home:
            for name in [n for n in request.headers if is_secret_name(n)]:
                del request.headers[name]

    def _refuse_body_across_origins(self, response: httpx.Response) -> None:
        """Refuse a 307/308 redirect that would send a request body to another origin.

        Those redirects repeat the method and the body (which may hold env: secrets);
        httpx strips credentials on the way, but not the body.
        """
        request = response.request
        location = response.headers.get("location")
        if response.status_code not in (307, 308) or request.method in ("GET", "HEAD"):
            return
        if not location:
            return
        try:
            target = request.url.join(location)
        except httpx.InvalidURL:
            return  # httpx reports the unusable redirect itself
        if _origin(target) != _origin(request.url):
            raise PermanentError(
                f"{request.method} {self.shown(request.url)}: HTTP {response.status_code} "
                f"redirects to {self.shown(target)}, another origin; not sending the request "
                "body there (it may hold secrets): use that URL in the config if it is meant"
            )

    def _send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        self.check_deadline(request.method, request.url)
        self._throttle()
        try:
            return self._client.send(request, stream=stream)
        except httpx.HTTPError as exc:
            self.raise_transport_error(exc, request.method, str(request.url))

    def _read_body(self, response: httpx.Response) -> bytearray:
        """The whole body, refused as soon as it passes `max_response_bytes` (as sent or
        decompressed) or the deadline passes."""
        body = bytearray()
        for piece in self.iter_body(response):
            body += piece
        return body

    def _too_large(self, response: httpx.Response, what: str) -> PermanentError:
        return PermanentError(
            f"{response.request.method} {self.shown(response.url)}: the {self.body_name} "
            f"{what} {byte_size(self.max_response_bytes)} (max_response_bytes); raise "
            f"max_response_bytes if the {self.body_name} really is this large"
        )

    def _throttle(self) -> None:
        """Wait until the rate limit allows the next request (every try counts)."""
        if not self._interval:
            return
        now = time.monotonic()
        if now < self._next_request_at:
            time.sleep(self._next_request_at - now)
            now = self._next_request_at
        self._next_request_at = now + self._interval

    def _raise_for_status(self, response: httpx.Response) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        message = (
            f"{response.request.method} {self.shown(response.url)}: "
            f"HTTP {status} {response.reason_phrase}".rstrip()
        )
        if status in _TRANSIENT_STATUS or status >= 500:
            raise RetryableError(message, retry_after_seconds(response.headers))
        excerpt = self._excerpt(response)
        raise PermanentError(f"{message}: {excerpt}" if excerpt else message)

    def _excerpt(self, response: httpx.Response) -> str:
        """The start of an error response's body, on one line, without secrets.

        Secrets are masked in the whole window read before it is cut to length, and
        when the window ends before the body does, its last characters (where a secret
        may be cut in two, and so not recognised) are dropped first.
        """
        window = bytearray()
        whole = True
        give_up_at = time.monotonic() + min(self.timeout, _EXCERPT_SECONDS)
        try:
            for piece in self.iter_body(response):
                window += piece
                if len(window) >= _EXCERPT_WINDOW_BYTES or time.monotonic() > give_up_at:
                    whole = False
                    break
        except (PluginError, httpx.StreamError):  # an excerpt is what could be read
            whole = False
        text = window[:_EXCERPT_WINDOW_BYTES].decode("utf-8", "replace")
        if not whole:
            text = text[: max(0, len(text) - self._secret_margin)]
        text = printable(" ".join(redact(text, self.secrets).split()))
        if len(text) > _EXCERPT_CHARS:
            text = text[: _EXCERPT_CHARS - 1] + "…"
        return text

    # -- retries -------------------------------------------------------------------

    def _retrying(self, attempt: Callable[[], T]) -> T:
        policy = self.retry
        tries = 0
        out_of_time = False

        def counted() -> T:
            nonlocal tries
            tries += 1
            return attempt()

        enough = tenacity.stop_after_attempt(policy.max_retries + 1)

        def stop(state: tenacity.RetryCallState) -> bool:
            """After the last try, or when the wait before the next passes the deadline."""
            nonlocal out_of_time
            if enough(state):
                return True
            deadline = self.deadline
            out_of_time = deadline is not None and deadline.left() <= (state.upcoming_sleep or 0)
            return out_of_time

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(self._worth_retrying),
            stop=stop,
            wait=self._wait,
            reraise=True,
        )
        try:
            result: T = retrying(counted)
        except RetryableError as exc:
            if out_of_time and self.deadline is not None:
                raise self.deadline.error(exc.message) from exc
            asked = exc.asked
            if asked is not None and asked > policy.max_sleep:
                wait = min(asked, policy.max_retry_wait)
                cut = f"; waiting max_retry_wait ({wait:g}s)" if asked > wait else ""
                raise TransientError(
                    f"{exc.message}; the server asks to retry after {_seconds_text(asked)}, "
                    f"longer than a request waits ({policy.max_sleep:g}s){cut}",
                    retry_after=wait,
                ) from exc
            attempts = f"{tries} attempt" + ("s" if tries != 1 else "")
            raise TransientError(f"{exc.message} (gave up after {attempts})") from exc
        return result

    def _worth_retrying(self, exc: BaseException) -> bool:
        if not isinstance(exc, RetryableError):
            return False
        return exc.asked is None or exc.asked <= self.retry.max_sleep

    def _wait(self, retry_state: tenacity.RetryCallState) -> float:
        """Seconds before the next try: the server's Retry-After, else backoff with jitter."""
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, RetryableError) and exc.asked is not None:
            return exc.asked
        return min(float(self._backoff(retry_state)), self.retry.max_sleep)


def retry_after_seconds(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """The Retry-After header in seconds from now (it may be seconds or an HTTP date),
    between 0 and MAX_WAIT_SECONDS; None when absent or not a number or date.

    `headers` is an httpx.Headers, or a mapping with lower-case names. Whatever the
    server sends (1e12, inf, nan, a date in year 9999) the result is a finite float.
    """
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            seconds = (when - (now or datetime.now(UTC))).total_seconds()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if math.isnan(seconds):
        return None
    return min(max(0.0, seconds), float(MAX_WAIT_SECONDS))


def _seconds_text(seconds: float) -> str:
    return "a day or more" if seconds >= MAX_WAIT_SECONDS else f"{seconds:g}s"


def dot_get(data: Any, path: str) -> tuple[bool, Any]:
    """(found, value) at a dot path such as `data.items` or `pages.0.next`; '' is `data`."""
    if not path:
        return True, data
    for part in path.split("."):
        if isinstance(data, Mapping) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return False, None
    return True, data


@dataclass(frozen=True)
class _Page:
    number: int
    response: httpx.Response
    records: list[dict[str, Any]]


class HttpConnector(ConnectorPlugin):
    type_name = "http"
    description = "Records from a JSON REST API, page by page (httpx), with retries."
    config_fields = (
        ConfigField("url", str, required=True, help="the first page's URL (http or https)"),
        ConfigField("method", str, default="GET", help="GET or POST"),
        ConfigField("headers", dict, help="request headers; Authorization-like ones are secret"),
        ConfigField("params", dict, help="query-string parameters"),
        ConfigField("body", dict, help="JSON body of a POST"),
        ConfigField("token", str, secret=True, help="sent as 'Authorization: Bearer <token>'"),
        ConfigField(
            "records_path", str, default="", help="dot path of the record list; '' = the body"
        ),
        timeout_field("seconds per request"),
        ConfigField(
            "max_requests_per_second",
            float,
            minimum=MIN_RATE,
            help="rate limit for this connector",
        ),
        ConfigField(
            "pagination",
            dict,
            help="{type: none|page|offset|cursor|link|next_url, page_param, start_page, "
            "size_param, page_size, offset_param, limit_param, cursor_param, cursor_path, "
            "next_url_path, max_pages}",
        ),
        incremental_field("{cursor_field, initial_value, cursor_param}: send the saved cursor"),
        ConfigField("max_retries", int, default=4, minimum=0, help="tries again per request"),
        ConfigField(
            "retry_backoff", float, default=1.0, minimum=0, help="first retry wait, seconds"
        ),
        max_retry_wait_field(),
        max_response_bytes_field(
            DEFAULT_MAX_RESPONSE_BYTES, "most bytes one response (page) may have"
        ),
        check_timeout_field(),
    )

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        result = super().validate_config(config)
        name = cls.type_name
        check_http_url(name, "url", result["url"])
        if not is_env_ref(result["method"]):
            result["method"] = result["method"].upper()
            if result["method"] not in ("GET", "POST"):
                raise ConfigError(f"{name} config field 'method' must be GET or POST")
            if result["body"] is not None and result["method"] != "POST":
                raise ConfigError(f"{name} config field 'body' is sent only with method POST")
        check_headers(name, result["headers"])
        token = result["token"]
        if token is not None:
            _check_header_value(f"{name} config field 'token'", token)
        if token is not None and any(
            key.lower() == "authorization" for key in result["headers"] or {}
        ):
            raise ConfigError(f"{name} config: give 'token' or an Authorization header, not both")
        for key, value in (result["params"] or {}).items():
            items = value if isinstance(value, list) else [value]
            if not all(isinstance(v, str | int | float) for v in items):
                raise ConfigError(
                    f"{name} config field 'params.{key}' must be a string, number, "
                    "boolean or a list of them"
                )
            if not all(math.isfinite(v) for v in items if isinstance(v, float)):
                raise ConfigError(f"{name} config field 'params.{key}' must be a finite number")
        if result["body"] is not None:
            try:
                json.dumps(result["body"], allow_nan=False)
            except ValueError:
                raise ConfigError(
                    f"{name} config field 'body' holds NaN or Infinity, which JSON cannot send"
                ) from None
        result["pagination"] = _validate_pagination(name, result["pagination"])
        Incremental.from_config(name, result["incremental"], param=True)
        return result

    @classmethod
    def check_new_config(cls, config: Mapping[str, Any]) -> None:
        check_one_authorization(cls.type_name, config)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = self.config
        self.pagination: dict[str, Any] = config["pagination"]
        self.incremental = Incremental.from_config(
            self.type_name, config["incremental"], param=True
        )
        self.cursor = Cursor(self.incremental, self.state) if self.incremental else None
        self.secrets = secret_values(self.secret_fields(), config, config)

    def _session(self, deadline: Deadline | None = None) -> HttpSession:
        config = self.config
        headers = dict(config["headers"] or {})
        if config["token"]:
            headers["Authorization"] = f"Bearer {config['token']}"
        return HttpSession(
            timeout=config["timeout"],
            headers=headers,
            max_requests_per_second=config["max_requests_per_second"],
            retry=RetryPolicy(
                config["max_retries"], config["retry_backoff"], config["max_retry_wait"]
            ),
            secrets=self.secrets,
            max_response_bytes=config["max_response_bytes"],
            deadline=deadline,
        )

    def check(self) -> CheckResult:
        with self._session(Deadline.after(self.config["check_timeout"])) as session:
            pages = self._pages(session)
            try:
                page = next(pages)
            finally:
                pages.close()
        response = page.response
        return CheckResult(
            True,
            f"{response.request.method} {session.shown(response.url)}: HTTP "
            f"{response.status_code}, {len(page.records)} records on the first page",
            {"status": response.status_code, "records": len(page.records)},
        )

    def read(self) -> Iterator[dict[str, Any]]:
        cursor = self.cursor
        with self._session() as session:
            for page in self._pages(session):
                if cursor is None:
                    yield from page.records
                    continue
                shown = session.shown(page.response.url)
                for index, record in enumerate(page.records):
                    cursor.advance(cursor.value_of(record, f"{shown}: record {index + 1}"))
                    yield record

    def _pages(self, session: HttpSession) -> Generator[_Page, None, None]:
        """The pages in order; stops at the pagination's end, fails past max_pages."""
        config, pagination = self.config, self.pagination
        kind: str = pagination["type"]
        method: str = config["method"]
        url: str = config["url"]
        params: dict[str, Any] = dict(config["params"] or {})
        if self.cursor is not None and self.cursor.start is not None:
            assert self.incremental is not None and self.incremental.cursor_param
            params[self.incremental.cursor_param] = self.cursor.start
        page_size = pagination["page_size"]
        offset = 0
        seen: set[str] = set()
        for number in range(1, pagination["max_pages"] + 1):
            if kind == "page":
                params[pagination["page_param"]] = pagination["start_page"] + number - 1
                if pagination["size_param"] and page_size is not None:
                    params[pagination["size_param"]] = page_size
            elif kind == "offset":
                params[pagination["offset_param"]] = offset
                params[pagination["limit_param"]] = page_size or _DEFAULT_OFFSET_PAGE_SIZE
            response, data = session.request_json(
                method,
                url,
                params=params if number == 1 or kind in _QUERY_PAGED else None,
                body=config["body"],
            )
            page = _Page(number, response, self._records(session, response, data))
            yield page
            if kind == "none":
                return
            if kind in ("page", "offset"):
                if not page.records:
                    return
                offset += len(page.records)
                continue
            if kind == "cursor":
                found, next_cursor = dot_get(data, pagination["cursor_path"])
                if not found or next_cursor in (None, ""):
                    return
                if isinstance(next_cursor, bool) or not isinstance(next_cursor, str | int | float):
                    raise PermanentError(
                        f"{session.shown(response.url)}: '{pagination['cursor_path']}' is "
                        f"{_json_type(next_cursor)}, expected a string or a number"
                    )
                next_key = json.dumps(next_cursor)
                if next_key in seen:
                    raise PermanentError(
                        f"{session.shown(response.url)}: pagination cursor "
                        f"'{pagination['cursor_path']}' repeats a cursor already followed; "
                        "stopping an endless loop"
                    )
                seen.add(next_key)
                params[pagination["cursor_param"]] = next_cursor
                continue
            next_url = self._next_url(session, response, data, kind)
            if next_url is None:
                return
            if next_url in seen:
                raise PermanentError(
                    f"{session.shown(response.url)}: the next page is "
                    f"{session.shown(next_url)} again; stopping an endless loop"
                )
            seen.add(next_url)
            # The next page's URL carries its own query string, cursor included.
            url = next_url
        raise PermanentError(
            f"{session.shown(config['url'])}: pagination did not end after "
            f"{pagination['max_pages']} pages (pagination.max_pages); raise it if the API "
            "really has more, or check the pagination settings"
        )

    def _next_url(
        self, session: HttpSession, response: httpx.Response, data: Any, kind: str
    ) -> str | None:
        """The next page's absolute URL (from the Link header or the body), on the same host."""
        if kind == "link":
            target = response.links.get("next", {}).get("url")
        else:
            found, target = dot_get(data, self.pagination["next_url_path"])
            if found and target is not None and not isinstance(target, str):
                raise PermanentError(
                    f"{session.shown(response.url)}: "
                    f"'{self.pagination['next_url_path']}' is {type(target).__name__}, "
                    "expected a URL"
                )
        if not target:
            return None
        try:
            absolute = response.url.join(target)
        except httpx.InvalidURL as exc:
            raise PermanentError(
                f"{session.shown(response.url)}: the next page "
                f"{redact(target, session.secrets)!r} is not a usable URL ({exc})"
            ) from None
        first = httpx.URL(self.config["url"])
        if _origin(absolute) != _origin(first):
            # Following it would hand this connector's headers (its token) to another host.
            raise PermanentError(
                f"{session.shown(response.url)}: the next page {session.shown(absolute)} is on "
                f"another origin than {session.shown(first)}; not following it"
            )
        return str(absolute)

    def _records(
        self, session: HttpSession, response: httpx.Response, data: Any
    ) -> list[dict[str, Any]]:
        path: str = self.config["records_path"]
        shown = session.shown(response.url)
        found, records = dot_get(data, path)
        if not found:
            raise PermanentError(f"{shown}: the response has no '{path}' (records_path)")
        if records is None:
            return []
        if not isinstance(records, list):
            where = f"'{path}'" if path else "the response body"
            hint = "" if path else "; set records_path to the record list, e.g. data.items"
            raise PermanentError(
                f"{shown}: {where} is {_json_type(records)}, expected a list of records{hint}"
            )
        if not _DICT_ONLY.issuperset(map(type, records)):  # then find the first that is not
            for index, record in enumerate(records):
                if not isinstance(record, dict):
                    raise PermanentError(
                        f"{shown}: record {index + 1} is {_json_type(record)}, expected an object"
                    )
        return records


def _validate_pagination(type_name: str, value: Mapping[str, Any] | None) -> dict[str, Any]:
    """The `pagination` object with defaults; rejects keys its type does not use."""
    result = validate_fields(type_name, _PAGINATION_FIELDS, value or {}, within="pagination")
    kind = result["type"]
    if kind not in _PAGINATION_KEYS:
        raise ConfigError(
            f"{type_name} config field 'pagination.type' must be one of "
            f"{', '.join(PAGINATION_TYPES)}, got {kind!r}"
        )
    allowed, required = _PAGINATION_KEYS[kind]
    given = {k for k, v in (value or {}).items() if v is not None} - {"type", "max_pages"}
    stray = sorted(given - allowed)
    if stray:
        raise ConfigError(
            f"{type_name} config field 'pagination' has {', '.join(stray)}, which "
            f"pagination type '{kind}' does not use"
        )
    missing = sorted(required - given)
    if missing:
        raise ConfigError(
            f"{type_name} config is missing required field 'pagination.{missing[0]}' "
            f"(pagination type '{kind}' needs it)"
        )
    if kind == "page" and result["size_param"] and result["page_size"] is None:
        raise ConfigError(
            f"{type_name} config is missing required field 'pagination.page_size' "
            "(pagination.size_param is set)"
        )
    return result


def check_http_url(type_name: str, field: str, url: str) -> None:
    """Raises ConfigError unless `url` is an http(s) URL with a host and a valid port.

    An `env:NAME` reference passes: the plugin is built from the resolved config at run
    time, and checked again then. Messages name the field, never the URL (it may hold a
    password).
    """
    if is_env_ref(url):
        return
    where = f"{type_name} config field '{field}'"
    if not url.strip():
        raise ConfigError(f"{where} must not be empty")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{where} must start with http:// or https://")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        if "IPv6" in str(exc):
            raise ConfigError(
                f"{where} has an unmatched '[' or ']': an IPv6 host goes in brackets, "
                "e.g. http://[::1]:8080/"
            ) from None
        raise ConfigError(f"{where} has a host that is not valid") from None
    host = parts.hostname
    if not host:
        raise ConfigError(f"{where} has no host, e.g. https://api.example.com/path")
    if any(char.isspace() or not char.isprintable() for char in host):
        raise ConfigError(f"{where} has white space or control characters in its host; remove them")
    Policy.from_environment().check_host(host, where)
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ConfigError(f"{where} has an invalid port: give a number from 1 to 65535")
    try:
        httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ConfigError(f"{where} is not a usable URL: {mask_urls(str(exc))}") from None


def check_one_authorization(type_name: str, config: Mapping[str, Any]) -> None:
    """Raises ConfigError for credentials in the URL beside a token or an Authorization
    header: httpx sends the URL's as `Authorization: Basic`, over the other one, silently.
    A rule for new configs (check_new_config); an `env:NAME` URL is not looked into.
    """
    url = config.get("url")
    if not isinstance(url, str) or is_env_ref(url):
        return
    parsed = httpx.URL(url)  # validate_config has made sure it parses
    if not (parsed.username or parsed.password):  # what makes httpx send Basic
        return
    if config.get("token") is not None:
        other = "a 'token'"
    elif any(key.lower() == "authorization" for key in config.get("headers") or {}):
        other = "an Authorization header"
    else:
        return
    raise ConfigError(f"{type_name} config: give credentials in 'url' or {other}, not both")


class _Inflater:
    """Undoes a Content-Encoding of gzip or deflate a bounded piece at a time.

    httpx's own decoders inflate each network read (up to 64 KiB) whole: up to 66 MB at
    once from a gzip bomb. zlib's `max_length` keeps each piece at `_PIECE_BYTES`.
    """

    def __init__(self, encoding: str) -> None:
        """Raises ValueError for an encoding other than identity, gzip and deflate."""
        codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
        codings = [c for c in codings if c != "identity"]
        if len(codings) > 1 or (codings and codings[0] not in ("gzip", "x-gzip", "deflate")):
            raise ValueError(f"connector-sync accepts only {ACCEPT_ENCODING}")
        coding = codings[0] if codings else "identity"
        # zlib's window bits: 0 for no zlib at all, + 16 for gzip's header and trailer.
        self._wbits = {"identity": 0, "deflate": zlib.MAX_WBITS}.get(coding, 16 + zlib.MAX_WBITS)
        self._started = False
        self._zlib = zlib.decompressobj(self._wbits) if self._wbits else None

    def inflate(self, data: bytes, *, final: bool = False) -> Iterator[bytes]:
        """The decoded pieces of `data`; `final` after the last of the body."""
        if self._zlib is None:
            if data:
                yield data
            return
        while data:
            try:
                piece = self._zlib.decompress(data, _PIECE_BYTES)
            except zlib.error:
                if self._started or self._wbits != zlib.MAX_WBITS:
                    raise
                # Some servers send deflate without its zlib header: raw deflate.
                self._wbits = -zlib.MAX_WBITS
                self._zlib = zlib.decompressobj(self._wbits)
                continue
            self._started = True
            data = self._zlib.unconsumed_tail
            if self._zlib.eof and not data and self._zlib.unused_data:
                data = self._zlib.unused_data  # the next member of a gzip stream
                self._zlib = zlib.decompressobj(self._wbits)
            if piece:
                yield piece
        if final:
            rest = self._zlib.flush()
            if rest:
                yield rest


class _CheckedBackend(httpcore.NetworkBackend):
    """Resolves a host, checks its addresses against the policy, and connects to one of
    those very addresses (a second lookup could answer differently)."""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:  # no such name: as httpx reports a failed connection
            raise httpcore.ConnectError(f"{host}: {exc}") from exc
        addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
        self._policy.check_addresses(host, addresses, f"connecting to {host}")
        failure: httpcore.ConnectError | None = None
        for address in addresses:
            try:
                return self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError as exc:
                failure = exc
        raise failure or httpcore.ConnectError(f"{host}: no address")

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        return self._inner.connect_unix_socket(path, timeout, socket_options)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _checked_transport(policy: Policy) -> httpx.HTTPTransport:
    """httpx's transport for direct connections, connecting through `_CheckedBackend`.

    httpx takes no network backend, so the transport's connection pool is replaced by
    an equal one that has it (same TLS settings and limits as httpx's defaults).
    Requests through a proxy go through httpx's own proxy transports instead: there the
    proxy resolves names, and only the policy's rules on names apply.
    """
    # One TLS context for both pools: making one loads the CA bundle (tens of ms).
    ssl_context = httpx.create_ssl_context()
    transport = httpx.HTTPTransport(verify=ssl_context)
    transport._pool = httpcore.ConnectionPool(
        ssl_context=ssl_context,
        max_connections=100,
        max_keepalive_connections=20,
        keepalive_expiry=5.0,
        network_backend=_CheckedBackend(policy),
    )
    return transport


def check_headers(type_name: str, headers: Mapping[str, Any] | None) -> None:
    """Raises ConfigError for a header httpx cannot send: a name that is not a token, a
    value that is not a string of printable ASCII (an `env:NAME` reference passes).

    Values are never echoed: they may be secret.
    """
    for key, value in (headers or {}).items():
        if not _HEADER_NAME.fullmatch(key):
            raise ConfigError(
                f"{type_name} config field 'headers' has an invalid header name {key!r}: "
                "use letters, digits and - only"
            )
        if not isinstance(value, str):
            raise ConfigError(f"{type_name} config field 'headers.{key}' must be a string")
        _check_header_value(f"{type_name} config field 'headers.{key}'", value)


def _check_header_value(where: str, value: str) -> None:
    """Raises ConfigError, without echoing the value, unless it is printable ASCII (an
    `env:NAME` reference passes)."""
    if not is_env_ref(value) and not _HEADER_VALUE.fullmatch(value):
        raise ConfigError(f"{where} must be ASCII text without line breaks or control characters")


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")
