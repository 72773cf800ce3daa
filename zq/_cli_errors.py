"""How a ``zq`` command fails: one line on stderr, ``zq <command>: <why>``, and a status.

Every command of the ``zq`` group is a :class:`Command`, whose ``invoke`` turns what a
user can act on (zq's own errors, an address or a file that cannot be used, Ctrl-C) into
that line and an exit status; anything else is a bug in zq and keeps its traceback.
Click's own usage errors keep click's form, which shows the usage beside the error.
"""

from __future__ import annotations

from typing import Any

import click
import zmq

from .errors import ConfigurationError, ZqError

# Exit statuses of every command (``zq router`` adds its own for a failed journal).
EXIT_FAILED = 1  # the command ran and failed: a task failed, no router answered
EXIT_USAGE = 2  # it cannot run as given: an option, address, setting or data dir
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as a shell reports a command it stopped


class Failed(click.ClickException):
    """A command's own failure: its one line, and its exit status."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED):
        super().__init__(message)
        self.exit_code = exit_code


def explain(exc: BaseException) -> tuple[str, int] | None:
    """The line and exit status for ``exc``; None for what is not the user's to fix."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", EXIT_INTERRUPTED
    if isinstance(exc, click.UsageError):
        return None
    if isinstance(exc, click.ClickException):
        return exc.format_message(), exc.exit_code
    if isinstance(exc, ConfigurationError):
        return str(exc), EXIT_USAGE
    if isinstance(exc, ZqError):
        return (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__), EXIT_FAILED
    if isinstance(exc, zmq.ZMQError):
        return str(exc), EXIT_FAILED
    if isinstance(exc, OSError) and exc.errno is not None:
        return _os_error(exc), EXIT_FAILED
    return None


def _os_error(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    if exc.filename is not None:
        text += f": {exc.filename}"
        if exc.filename2 is not None:
            text += f" -> {exc.filename2}"
    return text


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _name(ctx: click.Context) -> str:
    """``zq inspect stats``, whatever name the program was started by."""
    names: list[str] = []
    while ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(["zq", *reversed(names)])


class Command(click.Command):
    """A command whose failures are one line and an exit status (see :func:`explain`)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (Exception, KeyboardInterrupt) as exc:
            explained = explain(exc)
            if explained is None:
                raise
            message, code = explained
            click.echo(f"{_name(ctx)}: {_one_line(message)}", err=True)
            ctx.exit(code)


class Group(click.Group):
    """A group whose commands, and groups, fail as :class:`Command` does."""

    command_class = Command
    group_class = type
