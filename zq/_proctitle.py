"""Process titles that say what each zq process is (`ps`, `top`), where the optional
``setproctitle`` package is installed (``pip install zq[proctitle]``); otherwise a spawned
child shows as ``python -c from multiprocessing.spawn ...``."""

from __future__ import annotations

import importlib
from typing import Any


def set_title(title: str) -> None:
    try:
        module: Any = importlib.import_module("setproctitle")
    except ImportError:  # the extra is not installed: titles stay as they are
        return
    module.setproctitle(title)
