"""``zq inspect`` and ``zq control``: operating a cluster as Celery's commands do.

Each command asks the router (docs/operations.md), prints its answer as JSON (indented,
or one line with ``--json``) and fails as every ``zq`` command does (zq._cli_errors).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from ._cli_errors import Failed, Group
from .config import DEFAULT_ROUTER

# A router that is up completes a connection in milliseconds (as in zq.cli).
_ANSWER_WITHIN_S = 1.5

_router = click.option("--router", envvar="ZQ_ROUTER", default=DEFAULT_ROUTER,
                       show_default=True, help="The router's address ($ZQ_ROUTER).")
_destination = click.option("-d", "--destination", default=None,
                            help="Comma-separated actor (host/index/generation) or host "
                                 "names; every worker when not given.")
_timeout = click.option("-t", "--timeout", type=float, default=1.0, show_default=True,
                        help="Seconds to wait for the router's answer.")
_json = click.option("-j", "--json", "as_json", is_flag=True,
                     help="Print one line of JSON.")


def connect(router: str) -> Any:
    """A client app, once a router answers at ``router``."""
    import zmq

    from .app import App
    from .client import reach_router

    app = App(router=router)
    reach_router(zmq.Context.instance(), app.settings.router, app.settings.curve_keys(),
                 _ANSWER_WITHIN_S)
    return app


def _names(destination: str | None) -> list[str] | None:
    if destination is None:
        return None
    return [name.strip() for name in destination.split(",") if name.strip()]


def show(answer: Any, as_json: bool) -> None:
    click.echo(json.dumps(answer, default=repr, indent=None if as_json else 2))


# -- zq inspect ----------------------------------------------------------------------------

@click.group(cls=Group)
def inspect() -> None:
    """Ask the router about the workers' work (Celery's inspect)."""


def _inspection(name: str, doc: str) -> None:
    """A command ``zq inspect NAME`` asking the method of the same name."""

    @_json
    @_timeout
    @_destination
    @_router
    def command(router: str, destination: str | None, timeout: float, as_json: bool) -> None:
        app = connect(router)
        answer = getattr(app.control.inspect(_names(destination), timeout), name)()
        if answer is None:
            raise Failed("no worker matches" if destination else "no workers are connected")
        show(answer, as_json)

    command.__doc__ = doc
    inspect.command(name)(command)


for _name, _doc in [
    ("active", "The task each actor runs."),
    ("reserved", "Tasks the actors hold, prefetched, not yet started."),
    ("scheduled", "Tasks waiting for their ETA or countdown (held by the router)."),
    ("revoked", "Revoked task ids (the router's, for every worker)."),
    ("registered", "Task names each actor's app has."),
    ("ping", "The actors the router counts alive."),
    ("stats", "Per actor: pid, uptime, tasks processed, resource use, pool; and the "
              "router's own figures under 'router'."),
    ("active_queues", "The queues each actor takes from."),
    ("conf", "Each host's settings."),
]:
    _inspection(_name, _doc)


@inspect.command("query_task")
@click.argument("ids", nargs=-1, required=True)
@_json
@_timeout
@_destination
@_router
def query_task(ids: tuple[str, ...], router: str, destination: str | None, timeout: float,
               as_json: bool) -> None:
    """Which actor holds each of IDS, running (active) or prefetched (reserved)."""
    app = connect(router)
    show(app.control.inspect(_names(destination), timeout).query_task(*ids) or {}, as_json)


@inspect.command("queued")
@click.argument("queue")
@click.option("-n", "--limit", type=click.IntRange(0, 10_000), default=100,
              show_default=True, help="List at most this many.")
@_json
@_timeout
@_router
def queued(queue: str, limit: int, router: str, timeout: float, as_json: bool) -> None:
    """The tasks waiting in QUEUE, in the order they will be handed out, with ages."""
    show(connect(router).control.inspect(None, timeout).queued(queue, limit), as_json)


@inspect.command("task")
@click.argument("task_id")
@_json
@_timeout
@_router
def task(task_id: str, router: str, timeout: float, as_json: bool) -> None:
    """Where the task is now: queued, scheduled, on an actor, waiting for its chord, or
    finished (then its state, from the results actor)."""
    app = connect(router)
    answer = app.control.inspect(None, timeout).task(task_id)
    if not answer.get("where"):
        result = app.AsyncResult(task_id)
        answer["state"] = result.state
        if result.ready():
            answer["date_done"] = result.date_done
    show(answer, as_json)


# -- zq control ----------------------------------------------------------------------------

@click.group(cls=Group)
def control() -> None:
    """Change how the workers work (Celery's control)."""


def _sent(replies: list[dict[str, Any]], as_json: bool) -> None:
    if not replies:
        raise Failed("no worker matches")
    show(replies, as_json)


def _broadcast(name: str, doc: str, *arguments: Callable[[Any], Any]) -> None:
    """``zq control NAME ARGS``: ``app.control.NAME(*ARGS, destination=...)``."""

    @_json
    @_destination
    @_router
    def command(router: str, destination: str | None, as_json: bool, **args: Any) -> None:
        app = connect(router)
        _sent(getattr(app.control, name)(**args, destination=_names(destination)), as_json)

    command.__doc__ = doc
    for argument in reversed(arguments):
        command = argument(command)
    control.command(name)(command)


_broadcast("add_consumer", "Actors start taking from QUEUE.", click.argument("queue"))
_broadcast("cancel_consumer", "Actors stop taking from QUEUE (what they hold still runs).",
           click.argument("queue"))
_broadcast("shutdown", "Warm shutdown of the hosts (running tasks finish, prefetched ones "
                       "go back).")
_broadcast("pool_grow", "Each host starts N more actors.",
           click.argument("n", type=click.IntRange(0, 10_000), default=1))
_broadcast("pool_shrink", "Each host stops N actors warm, idle ones first.",
           click.argument("n", type=click.IntRange(0, 10_000), default=1))
_broadcast("time_limit", "Soft and hard time limits (seconds) of the tasks named TASK that "
                         "actors start from now on.",
           click.argument("task_name"), click.argument("soft", type=float),
           click.argument("hard", type=float, required=False))


@control.command("autoscale")
@click.argument("bounds", nargs=-1, required=True)
@_json
@_destination
@_router
def autoscale(bounds: tuple[str, ...], router: str, destination: str | None,
              as_json: bool) -> None:
    """Keep each host between MIN and MAX actors: BOUNDS is MAX,MIN (or MAX MIN)."""
    parts = [p for bound in bounds for p in bound.split(",") if p.strip()]
    try:
        most, least = (int(p) for p in parts)
    except ValueError:
        raise click.BadParameter("give MAX,MIN, two integers", param_hint="BOUNDS") from None
    app = connect(router)
    _sent(app.control.autoscale(most, least, destination=_names(destination)), as_json)


@control.command("rate_limit")
@click.argument("task_name")
@click.argument("rate")
@_router
def rate_limit(task_name: str, rate: str, router: str) -> None:
    """Start tasks named TASK_NAME at most at RATE ("10/s", "100/m", "0" for no limit)
    across all workers."""
    connect(router).control.rate_limit(task_name, None if rate in ("0", "") else rate)
    click.echo(f"rate limit of {task_name} set to {rate}")


@control.command("revoke")
@click.argument("ids", nargs=-1, required=True)
@click.option("--terminate", is_flag=True, help="Also kill the process running one.")
@click.option("-s", "--signal", default="SIGTERM", show_default=True)
@_router
def revoke(ids: tuple[str, ...], terminate: bool, signal: str, router: str) -> None:
    """Revoke tasks IDS: waiting ones never run."""
    connect(router).control.revoke(list(ids), terminate=terminate, signal=signal)
    click.echo(f"revoked {len(ids)} task(s)")


@control.command("terminate")
@click.argument("ids", nargs=-1, required=True)
@click.option("-s", "--signal", default="SIGTERM", show_default=True)
@_router
def terminate(ids: tuple[str, ...], signal: str, router: str) -> None:
    """Revoke tasks IDS and kill the processes running them."""
    connect(router).control.terminate(list(ids), signal=signal)
    click.echo(f"terminated {len(ids)} task(s)")


@control.command("purge")
@click.option("-Q", "--queue", default=None, help="Only this queue.")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@_router
def purge(queue: str | None, force: bool, router: str) -> None:
    """Drop the tasks waiting in the queues (they end REVOKED)."""
    app = connect(router)
    if not force:
        queued = app.control.stats().get("queued", {})
        waiting = queued.get(queue, 0) if queue else sum(queued.values())
        where = f"queue {queue}" if queue else "every queue"
        if not click.confirm(f"Drop the {waiting} task(s) waiting in {where}? There is "
                             f"no undo", default=False):
            raise Failed("nothing purged")
    click.echo(f"purged {app.control.purge(queue)} task(s)")
