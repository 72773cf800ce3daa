"""The canvas: signatures, and the workflows built of them (chain, group, chord, map).

``signature.py`` holds the dict every canvas object is; ``chain.py``, ``group.py`` (group
and chord) and ``helpers.py`` (map, starmap, chunks) the shapes built of signatures.
"""

from . import follow
from .chain import chain
from .follow import FollowUp
from .group import chord, group
from .helpers import chunks, register_builtins, xmap, xstarmap
from .signature import CanvasApp, Signature, maybe_signature, signature

__all__ = ["CanvasApp", "FollowUp", "Signature", "follow", "chain", "chord", "chunks", "group", "maybe_signature",
           "register_builtins", "signature", "xmap", "xstarmap"]
