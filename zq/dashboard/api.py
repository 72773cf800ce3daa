"""The HTTP API: JSON for everything the pages show and do (docs/dashboard.md).

Flower's paths and shapes where Flower has the operation. Every input is checked
(:mod:`zq.dashboard.checks`) before a request goes to the router; a refusal is a 4xx with
``{"error": "..."}``. Control actions are refused (403) unless the dashboard has basic
auth or listens on a loopback address, and a cross-site request is refused always.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .. import states
from ..app import App
from ..errors import PublishError, ZqError
from . import checks
from .checks import BadInput
from .feed import Feed
from .metrics import CONTENT_TYPE, Metrics
from .view import View, shown

_MAX_BODY = 1024 * 1024
# The live stream: how often it looks for changes, and the most rows one message carries
# (past that the page is told that more changed, and reloads its list).
_TICK_S = 0.5
_ROWS_PER_MESSAGE = 200


@dataclass
class Context:
    """What every endpoint uses: the client app, the view and its feed, and the policy."""

    app: App
    view: View
    feed: Feed
    metrics: Metrics
    control_allowed: bool
    why_no_control: str = ""


Handler = Callable[[Request, Context], Awaitable[Any]]


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def endpoint(handler: Handler, *, control: bool = False) -> Callable[[Request], Awaitable[Response]]:
    """A handler's answer as JSON; bad input, refusals and router errors as JSON errors."""
    async def run(request: Request) -> Response:
        ctx: Context = request.app.state.zq
        try:
            if control:
                _check_control(request, ctx)
            answer = await handler(request, ctx)
        except BadInput as exc:
            return error(400, str(exc))
        except Refused as exc:
            return error(exc.status, str(exc))
        except PublishError as exc:
            return error(409, f"the router refused it: {exc}")
        except ZqError as exc:
            return error(503, f"the router did not answer: {exc}")
        if isinstance(answer, Response):
            return answer
        return JSONResponse(answer)
    return run


def _check_control(request: Request, ctx: Context) -> None:
    if not ctx.control_allowed:
        raise Refused(403, f"control actions are off: {ctx.why_no_control}")
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        if urlsplit(origin).netloc != request.headers.get("host"):
            raise Refused(403, f"a request from another site ({origin}) is refused")


async def _params(request: Request) -> dict[str, Any]:
    """Query parameters, with a JSON object or form body over them."""
    params: dict[str, Any] = dict(request.query_params)
    if request.method != "POST":
        return params
    body = await request.body()
    if len(body) > _MAX_BODY:
        raise Refused(413, f"the body is larger than {_MAX_BODY} bytes")
    if not body.strip():
        return params
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind == "application/x-www-form-urlencoded":
        form = await request.form()
        params.update({k: v for k, v in form.items() if isinstance(v, str)})
        return params
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(f"the body is not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise BadInput("the body must be a JSON object")
    params.update(parsed)
    return params


def _when(value: Any, field: str) -> float | None:
    """A time given as seconds since the epoch or as ISO 8601."""
    if value in (None, ""):
        return None
    try:
        number = float(value)
        if math.isfinite(number):
            return number
    except (TypeError, ValueError):
        pass
    try:
        parsed = dt.datetime.fromisoformat(str(value))
    except ValueError:
        raise BadInput(f"{field} must be a time (epoch seconds or ISO 8601), "
                       f"not {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.astimezone()
    return parsed.timestamp()


# -- tasks -------------------------------------------------------------------------------------

async def tasks(request: Request, ctx: Context) -> Any:
    p = request.query_params
    found, matched = ctx.view.find(
        state=checks.state(p["state"]) if p.get("state") else None,
        name=checks.task_name(p["taskname"]) if p.get("taskname") else None,
        worker=p.get("workername") or None,
        queue=checks.queue(p["queue"]) if p.get("queue") else None,
        search=p.get("search") or None,
        since=_when(p.get("received_start"), "received_start"),
        until=_when(p.get("received_end"), "received_end"),
        offset=checks.integer(p.get("offset", 0), "offset", 0, 1_000_000),
        limit=checks.integer(p.get("limit", 100), "limit", 1, 10_000))
    if p.get("format") == "list":
        return {"tasks": found, "total": matched}
    return {row["uuid"]: row for row in found}


async def task_info(request: Request, ctx: Context) -> Any:
    task_id = checks.task_id(request.path_params["task_id"])
    return await _task(ctx, task_id)


async def _task(ctx: Context, task_id: str) -> dict[str, Any]:
    def ask() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        where = ctx.app.control.inspect(timeout=2.0).task(task_id)
        meta = [] if ctx.view.task(task_id) else ctx.app.results_client().get([task_id], 5.0)
        return where, meta
    where, meta = await ctx.feed.call(ask)
    row = ctx.view.task(task_id)
    if row is None:
        state = meta[0].get("state") if meta else states.PENDING
        if state == states.PENDING and not where.get("where"):
            raise Refused(404, f"unknown task {task_id}")
        row = _from_results(task_id, meta[0] if meta else {}, ctx)
    row["held"] = where.get("where") or []
    row["revoked"] = bool(where.get("revoked"))
    return row


def _from_results(task_id: str, meta: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """A task the view does not keep, as the results actor has it."""
    probe = View(max_tasks=1)
    if meta.get("state"):
        probe.apply(meta, float(meta.get("ts") or 0.0))
    row = probe.task(task_id) or {"uuid": task_id, "id": task_id, "state": states.PENDING}
    return row


async def task_result(request: Request, ctx: Context) -> Any:
    task_id = checks.task_id(request.path_params["task_id"])
    row = await _task(ctx, task_id)
    out = {"task-id": task_id, "state": row["state"], "result": row.get("result")}
    if row["state"] in (states.FAILURE, states.RETRY, states.REVOKED):
        out["result"] = row.get("exception")
        out["traceback"] = row.get("traceback")
    return out


async def revoke(request: Request, ctx: Context) -> Any:
    task_id = checks.task_id(request.path_params["task_id"])
    p = await _params(request)
    terminate = checks.flag(p.get("terminate"), "terminate")
    signal = checks.signal(p.get("signal") or "SIGTERM")
    await ctx.feed.call(lambda: ctx.app.control.revoke(task_id, terminate=terminate,
                                                       signal=signal))
    verb = "Revoked and terminated" if terminate else "Revoked"
    return {"message": f"{verb} '{task_id}'"}


async def terminate(request: Request, ctx: Context) -> Any:
    task_id = checks.task_id(request.path_params["task_id"])
    p = await _params(request)
    signal = checks.signal(p.get("signal") or "SIGKILL")
    await ctx.feed.call(lambda: ctx.app.control.terminate(task_id, signal=signal))
    return {"message": f"Terminated '{task_id}'"}


async def async_apply(request: Request, ctx: Context) -> Any:
    name = checks.task_name(request.path_params["name"])
    p = await _params(request)
    args = p.get("args", [])
    kwargs = p.get("kwargs", {})
    if not isinstance(args, list):
        raise BadInput("args must be a JSON list")
    if not isinstance(kwargs, dict):
        raise BadInput("kwargs must be a JSON object")
    options: dict[str, Any] = {}
    if p.get("countdown") is not None:
        options["countdown"] = checks.seconds(p["countdown"], "countdown")
    if p.get("eta") is not None:
        options["eta"] = dt.datetime.fromtimestamp(_when(p["eta"], "eta") or 0.0,
                                                   dt.timezone.utc)
    if p.get("expires") is not None:
        options["expires"] = checks.seconds(p["expires"], "expires")
    if p.get("queue") is not None:
        options["queue"] = checks.queue(p["queue"])
    if p.get("priority") is not None:
        options["priority"] = checks.integer(p["priority"], "priority", 0, 9)
    unknown = set(p) - {"args", "kwargs", "countdown", "eta", "expires", "queue", "priority"}
    if unknown:
        raise BadInput(f"unknown options: {', '.join(sorted(unknown))}")

    def send() -> str:
        result = ctx.app.send_task(name, args, kwargs, confirm=True, publish_timeout_s=5.0,
                                   **options)
        return result.id
    task_id = await ctx.feed.call(send)
    ctx.view.note_sent(task_id, name, args, kwargs, options.get("queue"))
    return {"task-id": task_id, "state": states.PENDING}


async def rate_limit(request: Request, ctx: Context) -> Any:
    name = checks.task_name(request.path_params["name"])
    p = await _params(request)
    rate = checks.rate(p.get("ratelimit", p.get("rate_limit")))
    await ctx.feed.call(lambda: ctx.app.control.rate_limit(name, rate))
    return {"message": f"new rate limit set successfully: {name} {rate}"}


async def time_limit(request: Request, ctx: Context) -> Any:
    name = checks.task_name(request.path_params["name"])
    p = await _params(request)
    soft = checks.optional_seconds(p.get("soft"), "soft")
    hard = checks.optional_seconds(p.get("hard"), "hard")
    if soft is not None and hard is not None and soft > hard:
        raise BadInput("the soft limit must not be past the hard one")
    destination = _worker(ctx, p["workername"]) if p.get("workername") else None
    replies = await ctx.feed.call(lambda: ctx.app.control.time_limit(
        name, soft, hard, destination=destination))
    return {"message": f"time limits set for {name}", "replies": replies}


# -- workers ----------------------------------------------------------------------------------

async def workers(request: Request, ctx: Context) -> Any:
    p = request.query_params
    if checks.flag(p.get("refresh"), "refresh"):
        poll = await ctx.feed.call(lambda: ctx.feed.ask(slow=True))
        ctx.view.apply_poll(poll, _now())
    seen = ctx.view.workers()
    actors = seen["actors"]
    if p.get("workername"):
        wanted = p["workername"]
        actors = {n: a for n, a in actors.items() if n == wanted or a.get("host") == wanted}
    if checks.flag(p.get("status"), "status"):
        return {name: True for name in actors}
    return actors


async def hosts(request: Request, ctx: Context) -> Any:
    seen = ctx.view.workers()
    return {"hosts": seen["hosts"], "actors": seen["actors"], "registered": seen["registered"]}


def _worker(ctx: Context, name: Any) -> str:
    """An actor or host name the router knows (as last polled)."""
    if not isinstance(name, str) or not 0 < len(name) <= 300:
        raise BadInput(f"not a worker name: {name!r}")
    seen = ctx.view.workers()
    if name not in seen["actors"] and name not in {h["name"] for h in seen["hosts"]}:
        raise Refused(404, f"no worker named {name!r}")
    return name


def _worker_op(op: str) -> Handler:
    async def handler(request: Request, ctx: Context) -> Any:
        name = _worker(ctx, request.path_params["name"])
        p = await _params(request)
        control = ctx.app.control
        call: Callable[[], Any]
        if op == "grow":
            n = checks.integer(p.get("n", 1), "n", 1, 64)
            call = lambda: control.pool_grow(n, destination=[name])  # noqa: E731
        elif op == "shrink":
            n = checks.integer(p.get("n", 1), "n", 1, 64)
            call = lambda: control.pool_shrink(n, destination=[name])  # noqa: E731
        elif op == "autoscale":
            most = checks.integer(p.get("max"), "max", 1, 1024)
            least = checks.integer(p.get("min"), "min", 0, most)
            call = lambda: control.autoscale(most, least, destination=[name])  # noqa: E731
        elif op in ("add-consumer", "cancel-consumer"):
            queue = checks.queue(p.get("queue"))
            method = control.add_consumer if op == "add-consumer" else control.cancel_consumer
            call = lambda: method(queue, destination=[name])  # noqa: E731
        else:  # shutdown
            call = lambda: control.shutdown(destination=[name])  # noqa: E731
        replies = await ctx.feed.call(call)
        return {"message": f"{op} sent to {name}", "replies": replies}
    return handler


# -- queues ------------------------------------------------------------------------------------

async def queues_length(request: Request, ctx: Context) -> Any:
    with ctx.view.lock:
        found = [{"name": q["name"], "messages": q["depth"]} for q in ctx.view.queues.values()]
    return {"active_queues": found}


async def queues(request: Request, ctx: Context) -> Any:
    with ctx.view.lock:
        return {"queues": [dict(q) for q in ctx.view.queues.values()]}


async def queue_waiting(request: Request, ctx: Context) -> Any:
    name = checks.queue(request.path_params["name"])
    n = checks.integer(request.query_params.get("n", 20), "n", 1, 1000)
    answer = await ctx.feed.call(
        lambda: ctx.app.control.inspect(timeout=2.0).queued(name, n))
    return answer or {"queue": name, "size": 0, "tasks": []}


async def purge(request: Request, ctx: Context) -> Any:
    name = checks.queue(request.path_params["name"])
    p = await _params(request)
    if not checks.flag(p.get("confirm"), "confirm"):
        raise BadInput("purging drops every task waiting in the queue: send confirm=true")
    purged = await ctx.feed.call(lambda: ctx.app.control.purge(name))
    return {"message": f"purged {purged} tasks from {name}", "purged": purged}


# -- the overview, the live stream, metrics -----------------------------------------------

async def overview(request: Request, ctx: Context) -> Any:
    now = _now()
    return {"summary": ctx.view.summary(now), "series": ctx.view.series(now),
            "router": ctx.view.router, "control_allowed": ctx.control_allowed}


async def events(request: Request, ctx: Context) -> Any:
    """Server-sent events: changed tasks every half second, and the poll's sequence (the
    pages fetch workers and queues again when it moves)."""
    view = ctx.view

    async def stream() -> AsyncIterator[str]:
        seq = view.seq
        last_poll = -1
        yield "retry: 2000\n\n"
        while True:
            rows, seq_now, more = view.changed_since(seq, _ROWS_PER_MESSAGE)
            message: dict[str, Any] = {}
            if rows:
                message.update(tasks=rows, more=more)
            seq = seq_now
            if rows or view.poll_seq != last_poll:
                last_poll = view.poll_seq
                message["summary"] = view.summary(_now())
            if message:
                yield f"data: {json.dumps(message, default=shown)}\n\n"
            else:
                yield ": idle\n\n"
            await asyncio.sleep(_TICK_S)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def metrics(request: Request, ctx: Context) -> Any:
    return Response(ctx.metrics.text(), media_type=CONTENT_TYPE)


async def healthz(request: Request, ctx: Context) -> Any:
    summary = ctx.view.summary(_now())
    status = 200 if summary["router_up"] else 503
    return JSONResponse({"router_up": summary["router_up"],
                         "results_up": summary["results_up"]}, status_code=status)


def _now() -> float:
    import time
    return time.time()


ROUTES = [
    Route("/api/tasks", endpoint(tasks)),
    Route("/api/task/info/{task_id}", endpoint(task_info)),
    Route("/api/task/result/{task_id}", endpoint(task_result)),
    Route("/api/task/revoke/{task_id}", endpoint(revoke, control=True), methods=["POST"]),
    Route("/api/task/terminate/{task_id}", endpoint(terminate, control=True), methods=["POST"]),
    Route("/api/task/async-apply/{name}", endpoint(async_apply, control=True),
          methods=["POST"]),
    Route("/api/task/send-task/{name}", endpoint(async_apply, control=True), methods=["POST"]),
    Route("/api/task/rate-limit/{name}", endpoint(rate_limit, control=True), methods=["POST"]),
    Route("/api/task/timeout/{name}", endpoint(time_limit, control=True), methods=["POST"]),
    Route("/api/workers", endpoint(workers)),
    Route("/api/hosts", endpoint(hosts)),
    *[Route(f"/api/worker/{path}/{{name:path}}", endpoint(_worker_op(op), control=True),
            methods=["POST"])
      for path, op in (("shutdown", "shutdown"), ("pool/grow", "grow"),
                       ("pool/shrink", "shrink"), ("pool/autoscale", "autoscale"),
                       ("queue/add-consumer", "add-consumer"),
                       ("queue/cancel-consumer", "cancel-consumer"))],
    Route("/api/queues/length", endpoint(queues_length)),
    Route("/api/queues", endpoint(queues)),
    Route("/api/queues/waiting/{name}", endpoint(queue_waiting)),
    Route("/api/queues/purge/{name}", endpoint(purge, control=True), methods=["POST"]),
    Route("/api/overview", endpoint(overview)),
    Route("/api/events", endpoint(events)),
    Route("/metrics", endpoint(metrics)),
    Route("/healthz", endpoint(healthz)),
]
