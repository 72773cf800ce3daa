"""The dashboard's web application: pages, the API, basic auth, and how it is served."""

from __future__ import annotations

import base64
import binascii
import html
import ipaddress
import logging
import os
import secrets
import socket
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from ..app import App
from ..errors import ConfigurationError
from . import api
from .feed import Feed
from .metrics import Metrics
from .view import View

logger = logging.getLogger("zq.dashboard")

PAGES = {"/": ("overview", "Overview"), "/tasks": ("tasks", "Tasks"),
         "/workers": ("workers", "Workers"), "/queues": ("queues", "Queues")}


@dataclass(frozen=True)
class DashboardConfig:
    router: str
    host: str = "127.0.0.1"
    port: int = 5556
    basic_auth: tuple[str, str] | None = None
    keys_dir: Path | None = None
    max_tasks: int = 10_000
    poll_interval_s: float = 1.5
    # An observer yields the CPU to the router and workers on a busy host: the state
    # stream waits in socket buffers (100,000 changes at the publisher) meanwhile.
    nice: int = 10

    @property
    def local(self) -> bool:
        """Whether it listens on a loopback address only."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_bind(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) or a bare port; port 0 picks a free one."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigurationError(f"--bind {text!r}: give HOST:PORT, such as 127.0.0.1:5556")
    return host, int(port)


def parse_auth(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise ConfigurationError("--basic-auth: give USER:PASSWORD, both not empty")
    return user, password


def client_app(config: DashboardConfig) -> App:
    """The App the dashboard talks through: CURVE keys from ``--keys DIR`` (``client`` and
    ``router``, as ``zq keys generate`` names them), else the App's own settings."""
    settings: dict[str, Any] = {}
    if config.keys_dir is not None:
        secret = config.keys_dir / "client.key_secret"
        server = config.keys_dir / "router.key"
        for path in (secret, server):
            if not path.is_file():
                raise ConfigurationError(f"--keys {config.keys_dir}: {path.name} is missing "
                                         f"(zq keys generate writes it)")
        settings.update(curve_secret_key=str(secret), curve_server_key=str(server))
    return App("zq-dashboard", router=config.router, **settings)


class BasicAuth:
    """Every path asks for the user and password when they are configured."""

    def __init__(self, app: ASGIApp, credentials: tuple[str, str] | None):
        self.app = app
        self.expected = None if credentials is None else \
            base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.expected is None or scope["type"] != "http" or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        response = JSONResponse({"error": "authentication required"}, status_code=401,
                                headers={"WWW-Authenticate": 'Basic realm="zq"'})
        await response(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        assert self.expected is not None
        for key, value in scope.get("headers", []):
            if key == b"authorization":
                scheme, _, given = value.decode("latin-1").partition(" ")
                if scheme.lower() != "basic":
                    return False
                try:
                    base64.b64decode(given, validate=True)
                except (binascii.Error, ValueError):
                    return False
                return secrets.compare_digest(given.strip(), self.expected)
        return False


def _shell() -> str:
    return resources.files(__package__).joinpath("templates/page.html").read_text("utf-8")


def page(name: str, title: str, arg: str = "") -> Any:
    async def render(request: Request) -> Response:
        ctx: api.Context = request.app.state.zq
        text = _shell()
        for key, value in (("page", name), ("title", title), ("arg", arg or
                           request.path_params.get("task_id", "")),
                           ("control", "1" if ctx.control_allowed else "0"),
                           ("why", ctx.why_no_control)):
            text = text.replace("{{" + key + "}}", html.escape(str(value)))
        return HTMLResponse(text, headers={"Cache-Control": "no-store"})
    return render


def build(config: DashboardConfig, app: App | None = None) -> tuple[ASGIApp, Feed]:
    """The ASGI application and the feed behind it (started by the caller)."""
    client = app or client_app(config)
    view = View(config.max_tasks)
    metrics = Metrics(view)
    feed = Feed(client, view, metrics, config.poll_interval_s)
    allowed = config.basic_auth is not None or config.local
    why = "" if allowed else ("the dashboard listens beyond localhost without "
                              "--basic-auth")
    routes: list[BaseRoute] = [Route(path, page(name, title))
                               for path, (name, title) in PAGES.items()]
    routes.append(Route("/task/{task_id}", page("task", "Task")))
    routes += api.ROUTES
    static = resources.files(__package__).joinpath("static")
    routes.append(Mount("/static", StaticFiles(directory=str(static)), name="static"))
    web = Starlette(routes=routes)
    web.state.zq = api.Context(client, view, feed, metrics, allowed, why)
    return BasicAuth(web, config.basic_auth), feed


def run(config: DashboardConfig) -> None:
    """Serve the dashboard until interrupted. The socket is bound here, so that port 0
    picks a free port and the log says which."""
    import uvicorn

    asgi, feed = build(config)
    if not config.local and config.basic_auth is None:
        logger.warning("listening on %s without --basic-auth: anyone who reaches it sees "
                       "every task; control actions are off", config.host)
    sock = _listen(config.host, config.port)
    port = sock.getsockname()[1]
    if config.nice and hasattr(os, "nice"):
        os.nice(config.nice)
    feed.start()
    shown = f"[{config.host}]" if ":" in config.host else config.host
    logger.info("zq dashboard at http://%s:%d/ (router %s)", shown, port, config.router)
    server = uvicorn.Server(uvicorn.Config(asgi, log_level="warning", access_log=False,
                                          timeout_graceful_shutdown=2))
    try:
        server.run(sockets=[sock])
    finally:
        feed.stop()
        sock.close()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock
