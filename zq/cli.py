"""The ``zq`` command line: parse, build a config, call in.

How a command fails (one line, ``zq <command>: <why>``, and an exit status) is decided in
one place for all of them: :mod:`zq._cli_errors`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from . import cli_ops
from ._cli_errors import EXIT_INTERRUPTED, Failed, Group
from .config import DEFAULT_ROUTER
from .protocol import MAX_MESSAGE_SIZE

router_option = click.option("--router", envvar="ZQ_ROUTER", default=DEFAULT_ROUTER,
                             show_default=True, help="The router's address ($ZQ_ROUTER).")
loglevel_option = click.option("-l", "--loglevel", default="INFO", show_default=True,
                               type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR",
                                                  "CRITICAL"], case_sensitive=False))


def daemon_options(command: Any) -> Any:
    """--logfile, --pidfile and --detach, as Celery's worker has them."""
    for option in reversed([
        click.option("--logfile", "-f", "logfile", type=click.Path(dir_okay=False),
                     default=None, help="Log here (every process of it) instead of stderr."),
        click.option("--pidfile", type=click.Path(dir_okay=False), default=None,
                     help="Write the pid here; refuse to start while its process runs."),
        click.option("--detach", "-D", is_flag=True,
                     help="Run in the background (with --logfile, else logs are lost)."),
    ]):
        command = option(command)
    return command


# A router that is up completes a connection in milliseconds: a command that finds none
# within this says so, rather than wait out a request's timeout (10 s).
_ANSWER_WITHIN_S = 1.5


def _client_app(app_path: str | None, router: str) -> Any:
    """The app a client command talks through, once a router answers at its address."""
    import zmq

    from .app import App
    from .client import reach_router
    from .worker import load_app

    if app_path:
        app = load_app(app_path)
        if router != app.settings.router:
            app.conf.update(router=router)
    else:
        app = App(router=router)
    reach_router(zmq.Context.instance(), app.settings.router, app.settings.curve_keys(),
                 _ANSWER_WITHIN_S)
    return app


def _json_arg(value: str, kind: type, what: str) -> Any:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{what} is not JSON: {exc}") from None
    if not isinstance(parsed, kind):
        raise click.BadParameter(f"{what} must be a JSON {kind.__name__}")
    return parsed


def _print(obj: Any) -> None:
    click.echo(json.dumps(obj, default=repr))


@click.group(cls=Group)
@click.version_option(package_name="zq")
def main() -> None:
    """zq: a distributed task queue with Celery's programming model and no broker."""


@main.command()
@click.option("--bind", envvar="ZQ_ROUTER", default=DEFAULT_ROUTER, show_default=True,
              help="Where clients and workers connect ($ZQ_ROUTER, as they read it).")
@click.option("--data-dir", default="zq-data", show_default=True, type=click.Path(),
              help="Journal and results store.")
@click.option("--results", "results_backend", type=click.Choice(["sqlite", "memory"]),
              default="sqlite", show_default=True, help="Where task states are kept.")
@click.option("--result-expires", type=float, default=86400.0, show_default=True,
              help="Seconds a finished task's result is kept.")
@click.option("--max-queue-length", type=int, default=None,
              help="Refuse tasks for a queue holding this many.")
@click.option("--max-message-size", type=int, default=MAX_MESSAGE_SIZE, show_default=True,
              help="Largest task payload accepted, in bytes.")
@click.option("--host-timeout", type=float, default=10.0, show_default=True,
              help="Seconds without a heartbeat before a worker host is declared lost.")
@click.option("--max-redeliveries", type=click.IntRange(min=0), default=3, show_default=True,
              help="Times an acks_late task whose worker died is handed out again before it "
                   "fails (a task's own max_redeliveries option wins).")
@click.option("--journal-fsync", is_flag=True, help="Answer only once the journal is fsynced (group commit): accepted tasks "
                   "survive power loss.")
@click.option("--curve-secret-key", type=click.Path(exists=True, dir_okay=False),
              help="The router's secret key: turns on CURVE.")
@click.option("--curve-authorized-dir", type=click.Path(exists=True, file_okay=False),
              help="Public keys of the clients and workers allowed in.")
@click.option("--results-ports", default=None, metavar="INGEST,QUERY,PUB",
              help="On tcp: the ports of the results actor (else free ones), e.g. "
                   "5556,5557,5558 for a firewall, a container or a Kubernetes Service.")
@loglevel_option
@daemon_options
def router(bind: str, data_dir: str, results_backend: str, result_expires: float,
           max_queue_length: int | None, max_message_size: int, host_timeout: float,
           max_redeliveries: int, journal_fsync: bool, curve_secret_key: str | None,
           curve_authorized_dir: str | None, results_ports: str | None, loglevel: str,
           logfile: str | None, pidfile: str | None, detach: bool) -> None:
    """Run the router (and its results actor)."""
    from ._daemon import prepare
    from .log import setup_logging
    from .router import RouterConfig
    from .router import main as router_main

    prepare(logfile, pidfile, detach)
    setup_logging(loglevel)
    config = RouterConfig(
        bind=bind, data_dir=Path(data_dir), results_backend=results_backend,
        result_expires_s=result_expires, max_queue_length=max_queue_length,
        max_message_size=max_message_size, host_timeout_s=host_timeout,
        max_redeliveries=max_redeliveries, journal_fsync=journal_fsync, log_level=loglevel.upper(),
        curve_secret_key=curve_secret_key, curve_authorized_dir=curve_authorized_dir,
        results_ports=_ports(results_ports))
    router_main(config)


def _ports(text: str | None) -> tuple[int, int, int] | None:
    if text is None:
        return None
    try:
        ingest, query, pub = (int(part) for part in text.split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not three ports: INGEST,QUERY,PUB",
                                 param_hint="--results-ports") from None
    return ingest, query, pub


@main.command()
@click.option("-A", "--app", "app_path", required=True, help="module or module:attr")
@click.option("-c", "-n", "--concurrency", type=click.IntRange(min=1),
              default=os.cpu_count() or 1, show_default="number of CPUs",
              help="Actor processes to run (-c as in Celery; -n also works).")
@click.option("-Q", "--queues", default="", help="Comma-separated queues to consume.")
@click.option("--prefetch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Tasks each actor process may hold: the one it runs plus those reserved "
                   "for it. 1 is Celery's -Ofair: no task waits behind a long one.")
@click.option("--time-limit", type=float, default=None, help="Hard time limit, seconds.")
@click.option("--soft-time-limit", type=float, default=None, help="Soft time limit, seconds.")
@click.option("--max-tasks-per-child", type=int, default=None)
@click.option("--max-memory-per-child", type=int, default=None, help="KiB resident.")
@click.option("--shutdown-timeout", type=float, default=30.0, show_default=True,
              help="Seconds a warm shutdown waits for running tasks.")
@click.option("--heartbeat-interval", type=float, default=1.0, show_default=True)
@click.option("--autoscale", default=None, metavar="MAX,MIN",
              help="Grow the pool up to MAX actors while all are busy, shrink it to MIN "
                   "when idle (starts with -c actors, within the bounds).")
@click.option("-E", "--task-events", is_flag=True,
              help="Report each task's start, for task-started events (one message more "
                   "per task).")
@click.option("--curve-secret-key", envvar="ZQ_CURVE_SECRET_KEY",
              type=click.Path(exists=True, dir_okay=False), help="This host's secret key.")
@click.option("--curve-server-key", envvar="ZQ_CURVE_SERVER_KEY",
              help="The router's public key (file or z85 text).")
@router_option
@loglevel_option
@daemon_options
def workers(app_path: str, concurrency: int, queues: str, prefetch: int,
            time_limit: float | None, soft_time_limit: float | None,
            max_tasks_per_child: int | None, max_memory_per_child: int | None,
            shutdown_timeout: float, heartbeat_interval: float, autoscale: str | None,
            task_events: bool,
            curve_secret_key: str | None, curve_server_key: str | None, router: str,
            loglevel: str, logfile: str | None, pidfile: str | None, detach: bool) -> None:
    """Run a supervisor with N actor processes on this host."""
    from ._daemon import prepare
    from .log import setup_logging
    from .worker import WorkerConfig
    from .worker import main as supervisor_main

    prepare(logfile, pidfile, detach)
    setup_logging(loglevel)
    bounds = _bounds(autoscale)
    if bounds is not None:  # start within the bounds
        concurrency = min(max(concurrency, bounds[1]), bounds[0])
    config = WorkerConfig(
        app=app_path, router=router, concurrency=concurrency,
        queues=tuple(q.strip() for q in queues.split(",") if q.strip()), prefetch=prefetch,
        log_level=loglevel.upper(), heartbeat_interval_s=heartbeat_interval,
        shutdown_timeout_s=shutdown_timeout, time_limit_s=time_limit,
        soft_time_limit_s=soft_time_limit, max_tasks_per_child=max_tasks_per_child,
        max_memory_per_child_kb=max_memory_per_child, curve_secret_key=curve_secret_key,
        curve_server_key=curve_server_key, autoscale=bounds, task_events=task_events)
    sys.exit(supervisor_main(config))


def _bounds(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        most, least = (int(part) for part in text.split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not MAX,MIN", param_hint="--autoscale") from None
    return most, least


@main.command()
@click.argument("name")
@click.option("--args", "args_json", default="[]", help="JSON list of positional arguments.")
@click.option("--kwargs", "kwargs_json", default="{}", help="JSON object of keyword arguments.")
@click.option("--countdown", type=float, default=None)
@click.option("--queue", default=None,
              help="The queue to send it to (else the app's routes, else its default queue).")
@click.option("--wait", is_flag=True, help="Wait for the result and print it.")
@click.option("--timeout", type=float, default=None, help="Seconds to wait with --wait.")
@click.option("-A", "--app", "app_path", default=None,
              help="module or module:attr: the app whose routes and settings apply.")
@router_option
def call(name: str, args_json: str, kwargs_json: str, countdown: float | None,
         queue: str | None, wait: bool, timeout: float | None, app_path: str | None,
         router: str) -> None:
    """Send the task NAME; print its id, or with --wait its result."""
    from ._waiting import wait as wait_for
    from .routing import TaskRoutes

    args = _json_arg(args_json, list, "--args")
    kwargs = _json_arg(kwargs_json, dict, "--kwargs")
    app = _client_app(app_path, router)
    result = app.send_task(name, args, kwargs, countdown=countdown, queue=queue)
    if not wait:
        click.echo(result.id)
        return
    # Where the task waits, to say so if nothing takes from there (None: the router's
    # bindings decide, and then it is not known here).
    waits_in = TaskRoutes(app.settings).route(name, app.tasks.get(name), queue=queue).queue
    advice = ("is the name right? pass -A APP to route it as its app does, or --queue"
              if app_path is None else f"is the name right, and a worker consuming "
                                       f"{waits_in!r} running?")
    try:
        value = wait_for(result, app.control, waits_in, timeout, advice)
    except KeyboardInterrupt:
        raise Failed(f"interrupted; task {result.id} was sent and may still run: "
                     f"`zq result {result.id}` shows it", EXIT_INTERRUPTED) from None
    if isinstance(value, BaseException):
        raise Failed(f"task {name}[{result.id}] failed: {type(value).__name__}: {value}")
    _print(value)


@main.command()
@click.argument("task_id")
@click.option("--wait", is_flag=True, help="Wait until the task is ready.")
@click.option("--timeout", type=float, default=None)
@router_option
def result(task_id: str, wait: bool, timeout: float | None, router: str) -> None:
    """Print a task's state and result."""
    app = _client_app(None, router)
    res = app.AsyncResult(task_id)
    if wait:
        res.get(timeout=timeout, propagate=False)
    state = res.state
    info = res.info
    out = {"id": task_id, "state": state,
           "result": f"{type(info).__name__}: {info}" if isinstance(info, BaseException)
           else info}
    if res.traceback:
        out["traceback"] = res.traceback
    _print(out)


@main.command()
@click.argument("task_ids", nargs=-1)
@click.option("--timeout", type=float, default=None, help="Stop after this many seconds.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per change (with the raw Unix timestamp, ts).")
@router_option
def watch(task_ids: tuple[str, ...], timeout: float | None, as_json: bool,
          router: str) -> None:
    """Print task state changes live, one line each, in local time (all tasks, or
    TASK_IDS)."""
    from .watch import describe

    app = _client_app(None, router)
    for event in app.watch(list(task_ids) or None, timeout_s=timeout):
        if not as_json:
            click.echo(describe(event))
        else:
            line = {k: event.get(k) for k in ("seq", "id", "name", "state", "retries", "ts")
                    if k in event}
            if "exc" in event:
                line["exc"] = f"{event['exc'].get('type')}: {event['exc'].get('message')}"
            elif event.get("info") is not None:
                line["info"] = event["info"]
            _print(line)
        sys.stdout.flush()


@main.command()
@router_option
def top(router: str) -> None:
    """A live monitor: workers and what they run, queues, tasks/s, recent failures
    (needs the top extra: pip install zq[top])."""
    try:
        from .top import run
    except ImportError as exc:
        raise Failed(f"zq top needs textual ({exc}): pip install 'zq[top]'") from None
    run(_client_app(None, router))


@main.group()
def keys() -> None:
    """CURVE key pairs."""


@keys.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--name", "names", multiple=True, default=("router", "client"),
              show_default=True, help="A key pair to make (repeatable).")
@click.option("--force", is_flag=True, help="Replace key pairs that exist already.")
def generate(directory: str, names: tuple[str, ...], force: bool) -> None:
    """Write NAME.key (public) and NAME.key_secret (mode 0600) for each NAME under
    DIRECTORY; existing keys are kept unless --force."""
    from .security import generate as generate_keys

    for public, secret in generate_keys(directory, names, force=force):
        click.echo(f"{public}\n{secret}")


@main.command()
@router_option
@click.option("--bind", default="127.0.0.1:5556", show_default=True, metavar="HOST:PORT",
              help="Where the dashboard listens (control actions need localhost or auth).")
@click.option("--basic-auth", default=None, metavar="USER:PASSWORD",
              envvar="ZQ_DASHBOARD_AUTH", help="Ask every request for these ($ZQ_DASHBOARD_AUTH).")
@click.option("--keys", "keys_dir", type=click.Path(exists=True, file_okay=False),
              default=None, help="CURVE keys: client.key_secret and router.key in DIR.")
@click.option("--max-tasks", type=click.IntRange(min=100), default=10_000, show_default=True,
              help="Recent tasks kept in memory.")
@click.option("--nice", type=click.IntRange(0, 19), default=10, show_default=True,
              help="CPU niceness: the dashboard yields to the router and workers.")
@loglevel_option
def dashboard(router: str, bind: str, basic_auth: str | None, keys_dir: str | None,
              max_tasks: int, nice: int, loglevel: str) -> None:
    """Serve a live web dashboard, an HTTP API and Prometheus metrics (docs/dashboard.md)."""
    try:
        from .dashboard import DashboardConfig, parse_auth, parse_bind, run
    except ImportError as exc:
        raise Failed(f"needs the dashboard extra: pip install 'zq[dashboard]' ({exc})",
                     2) from None
    from .log import setup_logging

    setup_logging(loglevel)
    host, port = parse_bind(bind)
    run(DashboardConfig(router=router, host=host, port=port, basic_auth=parse_auth(basic_auth),
                        keys_dir=Path(keys_dir) if keys_dir else None, max_tasks=max_tasks,
                        nice=nice))


# Celery's inspect and control groups; ``zq purge`` is ``zq control purge``.
main.add_command(cli_ops.inspect)
main.add_command(cli_ops.control)
main.add_command(cli_ops.purge, "purge")
