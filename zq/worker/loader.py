"""Finding the App a worker runs, as Celery's ``-A`` names it."""

from __future__ import annotations

import importlib
import sys
from typing import Any

from ..app import App
from ..errors import ConfigurationError


def load_app(path: str) -> App:
    """The App named by ``module`` or ``module:attr``, as Celery's ``-A`` takes it.

    With a bare module, its ``app`` attribute is used, else the one App instance it holds.
    """
    if "" not in sys.path:
        sys.path.insert(0, "")
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import app module {module_name!r}: {exc}") from exc
    if attr:
        obj: Any = module
        for part in attr.split("."):
            obj = getattr(obj, part, None)
        if not isinstance(obj, App):
            raise ConfigurationError(f"{path!r} is not a zq App")
        return obj
    candidate = getattr(module, "app", None)
    if isinstance(candidate, App):
        return candidate
    apps = [v for v in vars(module).values() if isinstance(v, App)]
    if len(apps) != 1:
        raise ConfigurationError(f"module {module_name!r} has {len(apps)} App instances; "
                                 f"name one as {module_name}:attr")
    return apps[0]
