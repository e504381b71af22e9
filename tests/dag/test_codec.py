"""Canonical encoding and hostile-input decoding of vertices and payloads."""

from __future__ import annotations

import struct
import tracemalloc

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dag import DagError, codec
from dag.codec import DecodeError, decode_vertex, encode_vertex
from dag.vertex import Vertex
from tests.dag.helpers import child, seeded_key

KEY = seeded_key("codec")


def _sample(genesis: Vertex) -> Vertex:
    return child(
        KEY,
        [genesis],
        7,
        payload={"model": "xor", "weights": [0.5, -1.25], "blob": b"\x00\x01"},
        conflict_keys=(b"task/1", b"task/2"),
    )


def _fields(vertex: Vertex) -> dict:
    return {
        "version": vertex.version,
        "author": vertex.author,
        "parents": list(vertex.parents),
        "timestamp_ms": vertex.timestamp_ms,
        "payload_type": vertex.payload_type,
        "payload": vertex.payload,
        "conflict_keys": list(vertex.conflict_keys),
        "scheme": vertex.scheme,
        "signature": vertex.signature,
    }


def _pack(fields: dict) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)


def test_roundtrip_gives_same_vertex_and_id(genesis):
    vertex = _sample(genesis)
    data = encode_vertex(vertex)
    decoded = decode_vertex(data)
    assert decoded == vertex
    assert decoded.id == vertex.id
    assert encode_vertex(decoded) == data


def test_encoding_is_plain_msgpack_in_field_order(genesis):
    vertex = _sample(genesis)
    assert _pack(_fields(vertex)) == encode_vertex(vertex)


def test_id_ignores_signature(genesis):
    # ML-DSA signs with fresh randomness, so re-signing must keep the id.
    key = seeded_key("randomized", "ml-dsa-65")
    first = child(key, [genesis], 1)
    second = child(key, [genesis], 1)
    assert first.signature != second.signature
    assert first.id == second.id


def test_genesis_roundtrip(genesis):
    assert decode_vertex(encode_vertex(genesis)) == genesis


def _mutated(genesis: Vertex, field: str, value: object) -> bytes:
    fields = _fields(_sample(genesis))
    fields[field] = value
    return _pack(fields)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("version", 2),
        ("version", True),
        ("author", b"\x01" * 31),
        ("author", "text"),
        ("parents", [b"\x02" * 32, b"\x01" * 32]),
        ("parents", [b"\x01" * 32, b"\x01" * 32]),
        ("parents", [b"\x01" * 33]),
        ("parents", [b"\x01" * 32] * 129),
        ("timestamp_ms", -1),
        ("timestamp_ms", 1.5),
        ("timestamp_ms", None),
        ("payload_type", "Upper"),
        ("payload_type", ""),
        ("payload_type", "x" * 65),
        ("payload", "not bytes"),
        ("payload", b"\xc1"),
        ("payload", _pack({"b": 1, "a": 2})),
        ("conflict_keys", [b"b", b"a"]),
        ("conflict_keys", [b""]),
        ("conflict_keys", [b"k" * 65]),
        ("scheme", "ML-DSA"),
        ("signature", b"s" * 8193),
        ("signature", [b"s"]),
    ],
)
def test_invalid_field_rejected(genesis, field, value):
    with pytest.raises(DecodeError):
        decode_vertex(_mutated(genesis, field, value))


def test_reordered_keys_rejected(genesis):
    fields = _fields(_sample(genesis))
    reordered = dict(reversed(list(fields.items())))
    with pytest.raises(DecodeError, match="order"):
        decode_vertex(_pack(reordered))


def test_extra_and_missing_keys_rejected(genesis):
    fields = _fields(_sample(genesis))
    with pytest.raises(DecodeError):
        decode_vertex(_pack({**fields, "extra": 1}))
    del fields["signature"]
    with pytest.raises(DecodeError):
        decode_vertex(_pack(fields))


def test_non_minimal_integer_rejected(genesis):
    data = encode_vertex(_sample(genesis))
    # Re-spell the small timestamp (a positive fixint or uint16) as uint64.
    ts = _sample(genesis).timestamp_ms
    short = msgpack.packb(ts)
    long = b"\xcf" + struct.pack(">Q", ts)
    assert short in data
    with pytest.raises(DecodeError, match="canonical"):
        decode_vertex(data.replace(b"timestamp_ms" + short, b"timestamp_ms" + long))


def test_bin_spelled_as_str_rejected(genesis):
    fields = _fields(genesis)
    data = msgpack.packb(fields, use_bin_type=False)
    with pytest.raises(DecodeError):
        decode_vertex(data)


def test_trailing_bytes_rejected(genesis):
    with pytest.raises(DecodeError, match="trailing"):
        decode_vertex(encode_vertex(genesis) + b"\x00")


def test_ext_types_rejected(genesis):
    fields = _fields(genesis)
    fields["timestamp_ms"] = msgpack.ExtType(1, b"")
    with pytest.raises(DecodeError):
        decode_vertex(_pack(fields))
    fields["timestamp_ms"] = msgpack.ExtType(1, b"abcd")
    with pytest.raises(DecodeError):
        decode_vertex(_pack(fields))


def test_oversized_input_rejected_before_parsing():
    with pytest.raises(DecodeError, match="limit"):
        decode_vertex(b"\x00" * (codec.MAX_VERTEX_BYTES + 1))


def test_non_bytes_input_rejected():
    with pytest.raises(DecodeError):
        decode_vertex("text")  # type: ignore[arg-type]


def test_decode_error_is_dag_error():
    assert issubclass(DecodeError, DagError)


# Headers that claim far more data than follows; a decoder that allocates
# from the claimed length would need gigabytes.
LENGTH_BOMBS = [
    b"\xdb\xff\xff\xff\xff",  # str 32
    b"\xc6\xff\xff\xff\xff",  # bin 32
    b"\xdd\xff\xff\xff\xff",  # array 32
    b"\xdf\xff\xff\xff\xff",  # map 32
    b"\xc9\xff\xff\xff\xff\x01",  # ext 32
    b"\x89" + b"\xdd\x7f\xff\xff\xff" * 10,
    b"\x91" * 90_000,  # nesting far beyond any valid depth
    b"\x81\xa1a" * 30_000,
]


@pytest.mark.parametrize("data", LENGTH_BOMBS, ids=range(len(LENGTH_BOMBS)))
def test_length_bombs_use_little_memory(data):
    tracemalloc.start()
    try:
        for decode in (decode_vertex, codec.decode_payload, codec.decode_public_key):
            with pytest.raises(DecodeError):
                decode(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024


# -- fuzzing ----------------------------------------------------------------

FUZZ = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _decode_or_error(data: bytes) -> None:
    try:
        vertex = decode_vertex(data)
    except DecodeError:
        return
    # Anything accepted must be the one canonical spelling.
    assert encode_vertex(vertex) == data


@FUZZ
@given(st.binary(max_size=4096))
def test_fuzz_random_bytes_raise_only_decode_error(data):
    _decode_or_error(data)


MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(["flip", "set", "delete", "insert", "truncate"]),
        st.integers(min_value=0, max_value=10_000),
        st.binary(min_size=1, max_size=8),
    ),
    min_size=1,
    max_size=6,
)


def _mutate(data: bytes, ops: list[tuple[str, int, bytes]]) -> bytes:
    buf = bytearray(data)
    for op, pos, blob in ops:
        pos %= len(buf) + 1
        if op == "flip" and pos < len(buf):
            buf[pos] ^= blob[0] or 1
        elif op == "set" and pos < len(buf):
            buf[pos] = blob[0]
        elif op == "delete":
            del buf[pos : pos + len(blob)]
        elif op == "insert":
            buf[pos:pos] = blob
        elif op == "truncate":
            del buf[pos:]
        if not buf:
            buf.append(0)
    return bytes(buf)


@pytest.fixture(scope="module")
def valid_encodings(genesis) -> list[bytes]:
    ml = seeded_key("fuzz-ml", "ml-dsa-65")
    first = _sample(genesis)
    return [
        encode_vertex(genesis),
        encode_vertex(first),
        encode_vertex(child(ml, [genesis, first], 3, conflict_keys=(b"c",))),
    ]


@FUZZ
@given(st.integers(min_value=0, max_value=2), MUTATIONS)
def test_fuzz_mutated_vertices_raise_only_decode_error(valid_encodings, which, ops):
    _decode_or_error(_mutate(valid_encodings[which], ops))


PAYLOAD_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


def _as_decoded(value: object) -> object:
    if isinstance(value, list):
        return tuple(_as_decoded(item) for item in value)
    if isinstance(value, dict):
        return {key: _as_decoded(item) for key, item in value.items()}
    return value


@FUZZ
@given(PAYLOAD_VALUES)
def test_payload_roundtrip(value):
    data = codec.encode_payload(value)
    assert codec.decode_payload(data) == _as_decoded(value)
    assert codec.encode_payload(codec.decode_payload(data)) == data


@FUZZ
@given(st.binary(max_size=2048))
def test_fuzz_payload_and_key_decoders(data):
    for decode in (codec.decode_payload, codec.decode_public_key):
        try:
            decode(data)
        except DecodeError:
            pass


def test_payload_depth_limit():
    value: object = 1
    for _ in range(codec.MAX_PAYLOAD_DEPTH - 1):
        value = [value]
    codec.decode_payload(codec.encode_payload(value))
    with pytest.raises(ValueError, match="deeper"):
        codec.encode_payload([value])
    with pytest.raises(DecodeError, match="deeper"):
        codec.decode_payload(msgpack.packb([value]))


def test_payload_rejects_unsorted_keys_and_nan():
    with pytest.raises(DecodeError, match="canonical"):
        codec.decode_payload(msgpack.packb({"b": 1, "a": 2}))
    with pytest.raises(DecodeError):
        codec.decode_payload(msgpack.packb(float("nan")))
    with pytest.raises(ValueError):
        codec.encode_payload({1: "int key"})


def test_public_key_message_roundtrip():
    data = codec.encode_public_key("ed25519", KEY.public_key)
    assert codec.decode_public_key(data) == ("ed25519", KEY.public_key)
    with pytest.raises(DecodeError):
        codec.decode_public_key(msgpack.packb({"public_key": b"", "scheme": "x"}))
