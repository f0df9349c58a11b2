"""Notifications through apprise (Slack, Teams, e-mail, JSON webhooks, ... from one URL
each): health alerts and their clearing, and failed syncs as they happen.

A notify URL holds secrets (tokens, passwords): it is only ever shown as apprise's own
privacy form (`slack://T...A/...`, `json://user:****@host`), and apprise's log lines are
passed on with those secrets masked.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from connector_sync.constants import FAILED
from connector_sync.exceptions import BadInput
from connector_sync.runner import SyncWatcher, describe_error
from connector_sync.secrets import redact

if TYPE_CHECKING:
    from connector_sync.store.base import AlertMessage, Claim, Outcome

log = logging.getLogger("connector_sync.notify")

#: The environment variable `health --notify` and `run --notify` also read (URLs separated
#: by white space).
NOTIFY_ENVVAR = "CONNECTOR_SYNC_NOTIFY"
_URL_PARTS = re.compile(r"[/:@?&=#,]+")
_MIN_SECRET = 3


class Notifier:
    """Sends to every notify URL given; never shows a URL but in its privacy form."""

    def __init__(self, urls: Sequence[str]) -> None:
        import apprise

        #: One apprise object per URL, so a failure can say which URL it was.
        self._services: list[Any] = []
        self.shown: list[str] = []
        self._hidden: set[str] = set()
        _route_apprise_logs()
        for position, url in enumerate(urls, 1):
            # apprise's own complaint would echo the URL: ours below does not.
            service = apprise.Apprise.instantiate(url.strip())
            if service is None:
                scheme = url.partition("://")[0] if "://" in url else ""
                what = f"scheme '{scheme}'" if scheme.isalnum() else "no scheme://"
                raise BadInput(
                    f"notify URL #{position} ({what}) is not one apprise can send to: give a "
                    "URL such as slack://..., mailto://..., json://host/path (see apprise's "
                    "list of services)",
                    param="notify URL",
                )
            one = apprise.Apprise()
            one.add(service)
            self._services.append(one)
            shown = _shown(str(service.url(privacy=True)))  # type: ignore[no-untyped-call]
            self.shown.append(shown)
            self._hidden |= _secret_parts(url, shown)
        self._lock = threading.Lock()

    def mask(self, text: str) -> str:
        """`text` with every secret of the notify URLs masked."""
        return redact(text, self._hidden)

    def send(self, title: str, body: str, severity: str) -> bool:
        """Send one notification to every URL; False if any did not take it (logged)."""
        import apprise

        kind = {
            "critical": apprise.NotifyType.FAILURE,
            "warning": apprise.NotifyType.WARNING,
            "resolved": apprise.NotifyType.SUCCESS,
        }.get(severity, apprise.NotifyType.INFO)
        failed = []
        with self._lock, _apprise_logs_masked(self):
            for position, service in enumerate(self._services, 1):
                if not service.notify(title=title, body=body, notify_type=kind):
                    failed.append(f"#{position} ({self.shown[position - 1]})")
        if failed:
            log.error("notification %r not delivered to notify URL %s", title, ", ".join(failed))
        return not failed


def _shown(private: str) -> str:
    """How a notify URL is shown: apprise's privacy form (tokens and passwords hidden) with
    its path hidden too (a generic webhook's path is often its secret, and apprise shows
    it) and without apprise's own options."""
    parts = urlsplit(private)
    return f"{parts.scheme}://{parts.netloc}" + ("/***" if parts.path.strip("/") else "")


def _secret_parts(url: str, shown: str) -> set[str]:
    """The parts of `url` that apprise's privacy form hides: what must never be shown."""
    visible = set(_URL_PARTS.split(shown))
    return {
        part
        for part in _URL_PARTS.split(url.strip())
        if len(part) >= _MIN_SECRET and part not in visible and "://" not in part
    }


class _MaskingHandler(logging.Handler):
    """Passes apprise's log records on to ours, the notify URLs' secrets masked; outside a
    send (no notifier to mask with) drops them: apprise's complaints about a URL echo it."""

    notifier: Notifier | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.notifier is not None:
            log.log(record.levelno, "apprise: %s", self.notifier.mask(record.getMessage()))


_HANDLER = _MaskingHandler(logging.WARNING)


def _route_apprise_logs() -> None:
    logger = logging.getLogger("apprise")
    logger.propagate = False  # never Python's last-resort handler: it would not mask
    if _HANDLER not in logger.handlers:
        logger.addHandler(_HANDLER)


@contextmanager
def _apprise_logs_masked(notifier: Notifier) -> Iterator[None]:
    """While it is open, apprise's warnings reach our log with the secrets masked."""
    _HANDLER.notifier = notifier
    try:
        yield
    finally:
        _HANDLER.notifier = None


# -- what is sent -------------------------------------------------------------------------


def _subject(message: AlertMessage) -> str:
    if message.connector_id is None:
        return "all connectors"
    return f"{message.connector_name} (id {message.connector_id})"


def alert_notifications(
    messages: Sequence[AlertMessage], scope: str
) -> list[tuple[str, str, str, list[AlertMessage]]]:
    """The notifications for a health run's messages: one for the problems (new or
    escalated), one for the clearings; each (title, body, severity, messages)."""
    where = "" if scope == "*" else f" (tenant {scope})"
    problems = [m for m in messages if m.kind == "problem"]
    resolved = [m for m in messages if m.kind == "resolved"]
    found: list[tuple[str, str, str, list[AlertMessage]]] = []
    if problems:
        worst = "critical" if any(m.severity == "critical" for m in problems) else "warning"
        first = problems[0]
        title = (
            f"connector-sync {first.severity}: {first.problem} on {_subject(first)}"
            if len(problems) == 1
            else f"connector-sync {worst}: {len(problems)} problems"
        )
        body = "\n".join(
            f"[{m.severity}] {m.problem} on {_subject(m)}: {m.detail}" for m in problems
        )
        found.append((title + where, f"{body}\n\nfrom 'connector-sync health' on {_host()}",
                      worst, problems))  # fmt: skip
    if resolved:
        title = (
            f"connector-sync resolved: {resolved[0].problem} on {_subject(resolved[0])}"
            if len(resolved) == 1
            else f"connector-sync resolved: {len(resolved)} problems"
        )
        body = "\n".join(
            f"resolved: {m.problem} on {_subject(m)} (open since "
            f"{m.opened_at:%Y-%m-%d %H:%M:%SZ}; last seen: {m.detail})"
            for m in resolved
        )
        found.append((title + where, body, "resolved", resolved))
    return found


def _host() -> str:
    return socket.gethostname()


class FailureNotifier(SyncWatcher):
    """`run --notify`: a notification for each sync that fails, as it fails."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    def finished(
        self, claim: Claim, status: str, error: str | None, outcome: Outcome | None
    ) -> None:
        if status != FAILED:
            return
        state = ""
        if outcome is not None:
            state = f" ({outcome.consecutive_failures} in a row"
            state += (
                f"; parked in ERROR: fix it, then 'connector-sync enable {claim.name}')"
                if outcome.connector_status == "ERROR"
                else ")"
            )
        severity = "critical" if outcome and outcome.connector_status == "ERROR" else "warning"
        try:
            self.notifier.send(
                f"connector-sync: sync of {claim.name} failed{state}",
                f"sync {claim.sync_id} of {claim.name} (id {claim.connector_id}, tenant "
                f"{claim.tenant}) on {claim.worker} failed: {error}",
                severity,
            )
        except Exception as exc:  # a notification must never fail the run
            error_text = self.notifier.mask(describe_error(exc))
            log.error("could not notify of the failure of %s: %s", claim.name, error_text)
