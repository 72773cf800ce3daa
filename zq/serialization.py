"""Serializers for task arguments and results, by name and by content type.

msgpack is the default; json and pickle are registered too. Each serializer keeps
datetimes, dates, tuples, sets and bytes intact through a round trip. pickle is only ever
used when it is in the receiving side's ``accept_content``: ``loads`` checks the content
type before reading a byte of the payload.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import pickle
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgpack

from .errors import ContentDisallowed, DecodeError, SerializationError


@dataclass(frozen=True)
class Serializer:
    name: str
    content_type: str
    dumps: Callable[[Any], bytes]
    loads: Callable[[bytes], Any]


# msgpack extension codes. Tuples and sets are packed as their items so nesting works.
_EXT_DATETIME = 1
_EXT_TUPLE = 2
_EXT_SET = 3
_EXT_DATE = 4
_EXT_TIME = 5
_EXT_UUID = 6
_EXT_DECIMAL = 7
_EXT_TIMEDELTA = 8


def _msgpack_default(obj: Any) -> msgpack.ExtType:
    if isinstance(obj, dt.datetime):
        return msgpack.ExtType(_EXT_DATETIME, obj.isoformat().encode())
    if isinstance(obj, dt.date):
        return msgpack.ExtType(_EXT_DATE, obj.isoformat().encode())
    if isinstance(obj, dt.time):
        return msgpack.ExtType(_EXT_TIME, obj.isoformat().encode())
    if isinstance(obj, dt.timedelta):
        return msgpack.ExtType(_EXT_TIMEDELTA, _pack(obj.total_seconds()))
    if isinstance(obj, tuple):
        return msgpack.ExtType(_EXT_TUPLE, _pack(list(obj)))
    if isinstance(obj, (set, frozenset)):
        return msgpack.ExtType(_EXT_SET, _pack(list(obj)))
    if isinstance(obj, uuid.UUID):
        return msgpack.ExtType(_EXT_UUID, obj.bytes)
    if isinstance(obj, Decimal):
        return msgpack.ExtType(_EXT_DECIMAL, str(obj).encode())
    # strict_types sends subclasses of builtins here (OrderedDict, str and int enums).
    bases: tuple[Callable[[Any], Any], ...] = (dict, list, str, bytes, float, int)
    for base in bases:
        if isinstance(obj, base) and not isinstance(obj, bool):  # type: ignore[arg-type]
            return base(obj)
    raise TypeError(f"cannot serialize object of type {type(obj).__name__}")


def _msgpack_ext_hook(code: int, data: bytes) -> Any:
    if code == _EXT_DATETIME:
        return dt.datetime.fromisoformat(data.decode())
    if code == _EXT_TUPLE:
        return tuple(_unpack(data))
    if code == _EXT_SET:
        return set(_unpack(data))
    if code == _EXT_DATE:
        return dt.date.fromisoformat(data.decode())
    if code == _EXT_TIME:
        return dt.time.fromisoformat(data.decode())
    if code == _EXT_TIMEDELTA:
        return dt.timedelta(seconds=_unpack(data))
    if code == _EXT_UUID:
        return uuid.UUID(bytes=data)
    if code == _EXT_DECIMAL:
        return Decimal(data.decode())
    raise DecodeError(f"unknown msgpack extension type {code}")


def _pack(obj: Any) -> bytes:
    # strict_types so that tuples reach _msgpack_default instead of becoming lists.
    packed: bytes = msgpack.packb(obj, default=_msgpack_default, use_bin_type=True,
                                  strict_types=True)
    return packed


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, ext_hook=_msgpack_ext_hook, raw=False,
                           strict_map_key=False, use_list=True)


_JSON_TAG = "__zq__"


class _JSONEncoder(json.JSONEncoder):
    def encode(self, o: Any) -> str:
        return super().encode(_json_tag(o))

    def default(self, o: Any) -> Any:
        if isinstance(o, dt.datetime):
            return {_JSON_TAG: "datetime", "v": o.isoformat()}
        if isinstance(o, dt.date):
            return {_JSON_TAG: "date", "v": o.isoformat()}
        if isinstance(o, dt.time):
            return {_JSON_TAG: "time", "v": o.isoformat()}
        if isinstance(o, dt.timedelta):
            return {_JSON_TAG: "timedelta", "v": o.total_seconds()}
        if isinstance(o, (bytes, bytearray)):
            return {_JSON_TAG: "bytes", "v": base64.b64encode(o).decode()}
        if isinstance(o, (set, frozenset)):
            return {_JSON_TAG: "set", "v": [_json_tag(x) for x in o]}
        if isinstance(o, uuid.UUID):
            return {_JSON_TAG: "uuid", "v": str(o)}
        if isinstance(o, Decimal):
            return {_JSON_TAG: "decimal", "v": str(o)}
        raise TypeError(f"cannot serialize object of type {type(o).__name__}")


def _json_tag(o: Any) -> Any:
    # json turns tuples into lists before default() sees them: tag them on the way in.
    if isinstance(o, tuple):
        return {_JSON_TAG: "tuple", "v": [_json_tag(x) for x in o]}
    if isinstance(o, list):
        return [_json_tag(x) for x in o]
    if isinstance(o, dict):
        for key in o.keys():
            if not isinstance(key, str):
                raise TypeError(f"json keeps only string keys, not {type(key).__name__} "
                                f"{key!r} (msgpack keeps them)")
        if _JSON_TAG in o:
            # A user's dict that looks like a tag travels as pairs, which no hook rewrites.
            return {_JSON_TAG: "dict", "v": [[k, _json_tag(v)] for k, v in o.items()]}
        return {k: _json_tag(v) for k, v in o.items()}
    return o


_JSON_DECODERS: dict[str, Callable[[Any], Any]] = {
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "timedelta": lambda v: dt.timedelta(seconds=v),
    "bytes": base64.b64decode,
    "set": set,
    "tuple": tuple,
    "uuid": uuid.UUID,
    "decimal": Decimal,
    "dict": lambda pairs: {k: v for k, v in pairs},
}


def _json_object_hook(obj: dict[str, Any]) -> Any:
    tag = obj.get(_JSON_TAG)
    if tag is None or len(obj) != 2:
        return obj
    try:
        return _JSON_DECODERS[tag](obj["v"])
    except KeyError:
        raise DecodeError(f"unknown json type tag {tag!r}") from None


def _json_dumps(obj: Any) -> bytes:
    return json.dumps(obj, cls=_JSONEncoder, separators=(",", ":")).encode()


def _json_loads(data: bytes) -> Any:
    return json.loads(data, object_hook=_json_object_hook)


def _pickle_loads(data: bytes) -> Any:
    return pickle.loads(data)  # noqa: S301 - only reached when accept_content allows pickle


_REGISTRY: dict[str, Serializer] = {}
_BY_CONTENT_TYPE: dict[str, Serializer] = {}


def register(serializer: Serializer) -> None:
    """Make a serializer known by its name and its content type."""
    _REGISTRY[serializer.name] = serializer
    _BY_CONTENT_TYPE[serializer.content_type] = serializer


register(Serializer("msgpack", "application/x-msgpack", _pack, _unpack))
register(Serializer("json", "application/json", _json_dumps, _json_loads))
register(Serializer("pickle", "application/x-python-serialize",
                    lambda o: pickle.dumps(o, protocol=pickle.HIGHEST_PROTOCOL), _pickle_loads))


def get(name_or_content_type: str) -> Serializer:
    """Look a serializer up by name (``"json"``) or content type (``"application/json"``)."""
    serializer = _REGISTRY.get(name_or_content_type) or _BY_CONTENT_TYPE.get(name_or_content_type)
    if serializer is None:
        known = ", ".join(sorted(_REGISTRY))
        raise ContentDisallowed(f"unknown serializer {name_or_content_type!r} (known: {known})")
    return serializer


def content_types(accept: Iterable[str]) -> frozenset[str]:
    """The content types of an ``accept_content`` list, which may name serializers or types."""
    return frozenset(get(name).content_type for name in accept)


def dumps(obj: Any, serializer: str) -> tuple[str, bytes]:
    """Serialize ``obj``; returns ``(content_type, payload)``."""
    s = get(serializer)
    try:
        return s.content_type, s.dumps(obj)
    except (TypeError, ValueError, OverflowError, pickle.PicklingError) as exc:
        raise SerializationError(f"cannot serialize with {s.name}: {exc}") from exc


def loads(payload: bytes, content_type: str, accept: frozenset[str]) -> Any:
    """Deserialize ``payload``, refusing any content type not in ``accept`` before reading it."""
    if content_type not in accept:
        raise ContentDisallowed(f"refusing to deserialize content of type {content_type!r} "
                                f"(accepted: {', '.join(sorted(accept))})")
    s = get(content_type)
    try:
        return s.loads(payload)
    except SerializationError:
        raise
    except Exception as exc:  # any parser error is the payload's fault, never ours
        raise DecodeError(f"cannot deserialize {s.name} payload: {exc}") from exc
