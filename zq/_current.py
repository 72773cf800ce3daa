"""The App in use: where a result or signature made without an App finds one.

A leaf: it imports no other module of zq, so any module may ask it. The App registers
itself here when it is made, and registers how to make a default one when ``zq.app`` is
imported, as Celery's default app comes into being on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# The slot holds whatever the App module puts in it; each module that asks for it says
# what it needs of it with a Protocol of its own (zq.canvas.CanvasApp, zq.result.ResultsApp).
_app: Any = None
_make_default: Callable[[], Any] | None = None


def set_current_app(app: Any) -> None:
    """Make ``app`` the one used where no App is given (the last App made is)."""
    global _app
    _app = app


def set_default_factory(make: Callable[[], Any]) -> None:
    """How to make an App when one is asked for before any was made."""
    global _make_default
    _make_default = make


def current_app() -> Any:
    """The App in use: the last one made, else a default one made now."""
    if _app is None:
        if _make_default is None:
            raise RuntimeError("no zq App was made, and zq.app is not imported")
        set_current_app(_make_default())
    assert _app is not None
    return _app
