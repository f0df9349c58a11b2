"""Who may call /api: the bearer secret (fail closed), and where `--no-auth` is allowed."""

from __future__ import annotations

import hmac
import ipaddress
import logging
from pathlib import Path

from connector_sync.exceptions import BadInput

log = logging.getLogger("connector_sync.server")

#: The environment variable a hosted cron (Vercel Cron) sends as `Authorization: Bearer`.
SECRET_ENVVAR = "CRON_SECRET"
#: Shorter secrets work (tests use one letter) but are worth a warning: Vercel asks for 16+.
RECOMMENDED_SECRET_LENGTH = 16


def load_secret(secret_file: Path | None, environment_value: str | None) -> bytes:
    """The secret from --secret-file, else from CRON_SECRET, as the bytes a client sends.

    Leading and trailing whitespace (a file's final newline) is not part of it.

    Raises:
        BadInput: neither is given, or what is given is empty, unreadable or not UTF-8.
    """
    if secret_file is not None:
        source = f"--secret-file {secret_file}"
        try:
            text = secret_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise BadInput(f"{source}: cannot read it: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise BadInput(f"{source} is not UTF-8 text: write the secret as text") from None
    elif environment_value is not None:
        source, text = SECRET_ENVVAR, environment_value
    else:
        raise BadInput(
            f"serve needs a secret: set {SECRET_ENVVAR} or give --secret-file PATH "
            "(callers send it as 'Authorization: Bearer <secret>'); --no-auth is allowed only "
            "on a loopback address"
        )
    secret = text.strip()
    if not secret:
        raise BadInput(f"{source} is empty: put a random string of 16 or more characters in it")
    if any(ch in secret for ch in "\r\n"):
        raise BadInput(f"{source} holds a line break inside: a header cannot carry it")
    if len(secret) < RECOMMENDED_SECRET_LENGTH:
        log.warning(
            "the secret from %s is shorter than %d characters: anyone who guesses it can "
            "trigger runs",
            source,
            RECOMMENDED_SECRET_LENGTH,
        )
    return secret.encode("utf-8")


def bearer_matches(authorization: str | None, secret: bytes) -> bool:
    """Whether an Authorization header value is `Bearer <secret>`, compared in constant
    time (the scheme's case does not matter, RFC 9110)."""
    if authorization is None:
        return False
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    # Starlette decodes header bytes as latin-1: encoding back gives the bytes sent.
    try:
        sent = token.strip().encode("latin-1")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(sent, secret)


def is_loopback(address: str) -> bool:
    """Whether a bound address (an IP, from getsockname) is reachable only from this host."""
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False
