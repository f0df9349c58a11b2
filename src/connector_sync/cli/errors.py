"""Turns every failure into one line on stderr and the documented exit code."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence
from typing import Any

import typer
from typer.core import TyperGroup

from connector_sync.exceptions import EXIT_FAILURE, EXIT_USAGE, ConnectorSyncError

PROG = "connector-sync"


#: How the command line names what an operation's BadInput.param names.
_FLAGS = {"name": "NAME", "tenant": "--tenant", "database URL": "--database-url",
          "status": "--status", "schedule": "--schedule", "timezone": "--timezone",
          "notify URL": "--notify URL", "output": "--output"}  # fmt: skip


def _in_cli_terms(exc: ConnectorSyncError) -> str:
    """The message, naming the input the way the command line does (`--tenant`; the
    variable the database URL came from, when it came from one)."""
    param = getattr(exc, "param", None)
    flag = _FLAGS.get(param or "")
    if param == "database URL" and Flags.database_url_from:
        flag = Flags.database_url_from
    if param and flag and exc.message.startswith(param):
        return flag + exc.message[len(param) :]
    return exc.message


class Flags:
    """Process-wide switches set by the global options."""

    debug = False
    #: The environment variable --database-url was read from, if it was.
    database_url_from: str | None = None


def error_line(message: str) -> None:
    sys.stderr.write(f"{PROG}: error: {' '.join(message.split())}\n")


class CommandLine(TyperGroup):
    """Runs the command in non-standalone mode so this class alone decides the exit code."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            result = super().main(
                args=args,
                prog_name=prog_name or PROG,
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
        except ConnectorSyncError as exc:
            if Flags.debug:
                traceback.print_exc()
            error_line(_in_cli_terms(exc))
            sys.exit(exc.exit_code)
        except typer.TyperException as exc:  # usage errors: bad option, bad value
            if type(exc).__name__ == "NoArgsIsHelpError":
                sys.stdout.write(exc.format_message() + "\n")
                sys.exit(0)
            ctx = getattr(exc, "ctx", None)
            path = ctx.command_path if ctx is not None else PROG
            error_line(f"{exc.format_message().rstrip('.')} (see '{path} --help')")
            sys.exit(getattr(exc, "exit_code", EXIT_USAGE))
        except typer.Abort:
            error_line("aborted")
            sys.exit(EXIT_FAILURE)
        except KeyboardInterrupt:
            error_line("interrupted")
            sys.exit(130)
        except Exception as exc:  # a bug: still one line, the traceback with --debug
            if Flags.debug:
                traceback.print_exc()
            error_line(
                f"unexpected {type(exc).__name__}: {_safe_text(exc)} "
                "(run with --debug for the traceback)"
            )
            sys.exit(EXIT_FAILURE)
        sys.exit(result if isinstance(result, int) else 0)


def _safe_text(exc: BaseException) -> str:
    """An unexpected error's text without what could hold data or secrets: for a database
    error the driver's first line (not the statement, parameters or DETAIL/CONTEXT lines),
    and URL passwords and secret query values masked."""
    from connector_sync.secrets import mask_urls

    orig = getattr(exc, "orig", None)  # SQLAlchemy's DBAPIError wraps the driver's error
    text = str(orig) if isinstance(orig, BaseException) and str(orig) else str(exc)
    return mask_urls(text.strip().split("\n", 1)[0])
