"""``zq dashboard``: a live web dashboard, an HTTP API and Prometheus metrics.

It is a client like any other: it follows every task state change on the results actor's
stream and polls the router's inspect answers, keeps the recent past in memory
(``view``), and serves pages, JSON (``api``) and ``/metrics`` (``metrics``) with
Starlette and uvicorn, which the ``dashboard`` extra installs (docs/dashboard.md).
"""

from __future__ import annotations

from .app import DashboardConfig, build, parse_auth, parse_bind, run

__all__ = ["DashboardConfig", "build", "parse_auth", "parse_bind", "run"]
