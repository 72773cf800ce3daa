"""``zq workers``: a supervisor and its actor processes on one host."""

from .loader import load_app

__all__ = ["load_app"]
