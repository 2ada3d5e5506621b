"""One place that turns an exception into the CLI's one-line error.

Every ``warpstore`` command runs inside :class:`ErrorHandlingGroup`; an error
that reaches it is printed as ``warpstore: error: MESSAGE`` on stderr, with no
traceback, and the command exits 1 (or the error's own code, e.g. 127 for a
workflow command that does not exist). A user on a login node or reading a
job's output needs the cause and the fix, not 40 lines of our call stack;
``--debug`` or ``WARPSTORE_DEBUG=1`` brings the traceback back for a bug
report. Commands therefore raise (:class:`~warpstore.exceptions.UserError` or
any deliberate warpstore error) instead of catching and printing themselves.
"""

from __future__ import annotations

import os
from typing import Any

import click

from warpstore.exceptions import UserError, WarpstoreError

__all__ = ["ErrorHandlingGroup", "debug_enabled", "error_line"]

# Optional third-party modules -> the extra that installs them, for the hint.
_EXTRAS = {
    "aiortc": "endpoints",
    "websockets": "endpoints",
    "redis": "redis",
    "zmq": "zmq",
    "mpi4py": "mpi,mpich",
    "numpy": "numpy",
    "ucxx": "ucx",
    "globus_sdk": "globus",
}


def debug_enabled() -> bool:
    return os.environ.get("WARPSTORE_DEBUG", "").lower() not in ("", "0", "false", "no")


def _is_user_error(e: BaseException) -> bool:
    """Errors raised on purpose, whose message already says what went wrong and why."""
    if isinstance(e, (UserError, WarpstoreError)):
        return True
    # the HPC layer's own errors (looked up by name: this module must stay importable
    # without the HPC bundle's dependencies)
    return type(e).__name__ in ("SiteConfigError", "SchedulerError", "LaunchError")


def error_line(e: BaseException) -> tuple[str, int]:
    """The one-line message for ``e`` and the exit status to end with."""
    if isinstance(e, ModuleNotFoundError) and e.name:
        top = e.name.split(".")[0]
        extra = _EXTRAS.get(top)
        hint = f"pip install 'warpstore[{extra}]'" if extra else f"install the {top} package"
        return f"this command needs the Python module {top!r}, which is not installed: {hint}", 1
    if _is_user_error(e):
        return str(e), int(getattr(e, "exit_code", 1))
    if isinstance(e, OSError) and not isinstance(e, ConnectionError):
        # a file we were told to read or write: the message names it
        return str(e), 1
    # A bug, not a user mistake: still no wall of text, but say how to get the details.
    return (
        f"{type(e).__name__}: {e} (an internal error: rerun with --debug or WARPSTORE_DEBUG=1 "
        "for the traceback, and report it)"
    ), 1


class ErrorHandlingGroup(click.Group):
    """A Click group whose commands' errors end as one line (see the module docstring)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as e:
            if debug_enabled():
                raise
            message, code = error_line(e)
            # The first line is the error; a few more (a failed server's last log
            # lines, where the real reason is) follow indented, never a traceback.
            first, *rest = str(message).splitlines() or [""]
            click.echo(f"warpstore: error: {first}", err=True)
            for line in rest:
                click.echo(f"    {line}", err=True)
            ctx.exit(code)
