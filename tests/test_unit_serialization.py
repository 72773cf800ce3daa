"""zq.serialization: round trips and clear errors, no processes."""

from __future__ import annotations

import datetime as dt
import pickle
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zq import ContentDisallowed, DecodeError, SerializationError, serialization

SAFE = serialization.content_types(["msgpack", "json"])
ALL = serialization.content_types(["msgpack", "json", "pickle"])

VALUES = [
    dt.datetime(2024, 5, 17, 12, 30, 15, 123456, tzinfo=dt.timezone.utc),
    dt.datetime(2024, 5, 17, 12, 30, 15, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
    dt.datetime(2024, 5, 17, 12, 30, 15),
    dt.date(2024, 2, 29),
    dt.time(23, 59, 59, 999),
    dt.timedelta(days=2, seconds=3.5),
    b"\x00\x01\xfe\xff",
    (1, (2, (3,)), "x"),
    {1, 2, 3},
    {"a": [1, {"b": (None, True)}], "c": {"d": b"e"}},
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    Decimal("3.14159265358979323846"),
    [],
    {},
    "",
    -(2**63),
]


def round_trip(value, serializer):
    content_type, payload = serialization.dumps(value, serializer)
    return serialization.loads(payload, content_type, SAFE)


@pytest.mark.parametrize("serializer", ["msgpack", "json"])
@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_round_trip_keeps_value_and_type(serializer, value):
    back = round_trip(value, serializer)
    assert back == value
    assert type(back) is type(value)


@pytest.mark.parametrize("serializer", ["msgpack", "json"])
def test_nested_tuples_stay_tuples(serializer):
    back = round_trip({"k": [(1, (2, 3))]}, serializer)
    assert type(back["k"][0]) is tuple and type(back["k"][0][1]) is tuple


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False) | st.text() | st.binary()
    | st.datetimes(timezones=st.just(dt.timezone.utc)),
    lambda children: st.lists(children, max_size=4)
    | st.tuples(children, children)
    | st.dictionaries(st.text(max_size=8).filter(lambda k: k != "__zq__"), children,
                      max_size=4),
    max_leaves=20,
)


@pytest.mark.parametrize("serializer", ["msgpack", "json"])
@settings(database=None, deadline=None)
@given(value=json_values)
def test_any_nested_value_round_trips(serializer, value):
    assert round_trip(value, serializer) == value


def test_json_keeps_non_string_keys_or_refuses_them():
    """JSON has only string keys: an int key must survive or be a clear error, not
    silently come back as a string."""
    value = {1: "one"}
    try:
        back = round_trip(value, "json")
    except SerializationError:
        return
    assert back == value


@pytest.mark.parametrize("value", [{"__zq__": "bytes", "v": "AAE="},
                                   {"__zq__": "custom", "v": 1}])
def test_json_user_dict_shaped_like_a_type_tag_survives(value):
    """json tags types as {"__zq__": name, "v": value}: a user's own dict of that shape
    must come back as itself (or be refused when sent), never as another type."""
    try:
        content_type, payload = serialization.dumps(value, "json")
    except SerializationError:
        return
    assert serialization.loads(payload, content_type, SAFE) == value


def test_serializers_found_by_name_and_content_type():
    assert serialization.get("json") is serialization.get("application/json")
    assert serialization.get("msgpack").content_type == "application/x-msgpack"


def test_unknown_serializer_is_a_clear_error():
    with pytest.raises(SerializationError, match="unknown serializer 'yaml'"):
        serialization.dumps([1], "yaml")


def test_unknown_content_type_is_refused():
    with pytest.raises(ContentDisallowed, match="application/x-yaml"):
        serialization.loads(b"a: 1", "application/x-yaml", SAFE)


def test_unserializable_value_is_a_clear_error():
    with pytest.raises(SerializationError, match="cannot serialize"):
        serialization.dumps(object(), "msgpack")
    with pytest.raises(SerializationError, match="cannot serialize"):
        serialization.dumps(object(), "json")


class _Exploit:
    """Unpickling this creates a file: proof that a payload was (or was not) unpickled."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_pickle_is_refused_before_reading_the_payload(tmp_path):
    marker = tmp_path / "unpickled"
    content_type, payload = serialization.dumps(_Exploit(marker), "pickle")
    with pytest.raises(ContentDisallowed, match="refusing to deserialize"):
        serialization.loads(payload, content_type, SAFE)
    assert not marker.exists()


def test_pickle_accepted_when_opted_in():
    content_type, payload = serialization.dumps({"a": (1, 2)}, "pickle")
    assert serialization.loads(payload, content_type, ALL) == {"a": (1, 2)}


def test_accept_content_may_name_content_types():
    assert serialization.content_types(["application/json"]) == {"application/json"}


@pytest.mark.parametrize("serializer", ["msgpack", "json", "pickle"])
def test_garbage_payload_is_a_decode_error(serializer):
    content_type = serialization.get(serializer).content_type
    with pytest.raises(DecodeError, match=serializer):
        serialization.loads(b"\xc1\xff{not a payload", content_type, ALL)


def test_truncated_msgpack_is_a_decode_error():
    content_type, payload = serialization.dumps({"key": "value" * 10}, "msgpack")
    with pytest.raises(DecodeError):
        serialization.loads(payload[:-5], content_type, SAFE)


def test_unknown_msgpack_extension_is_a_decode_error():
    import msgpack

    payload = msgpack.packb(msgpack.ExtType(99, b"?"))
    with pytest.raises(DecodeError, match="extension"):
        serialization.loads(payload, "application/x-msgpack", SAFE)


def test_unknown_json_tag_is_a_decode_error():
    with pytest.raises(DecodeError, match="tag"):
        serialization.loads(b'{"__zq__": "nope", "v": 1}', "application/json", SAFE)


def test_pickle_payload_of_the_standard_library_is_still_refused():
    payload = pickle.dumps([1, 2, 3])
    with pytest.raises(ContentDisallowed):
        serialization.loads(payload, "application/x-python-serialize", SAFE)
