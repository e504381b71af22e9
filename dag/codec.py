"""Canonical msgpack encoding of vertices, payloads and public keys.

One vertex has exactly one byte string and one id. The encoding is a msgpack
map with str keys in the fixed order of ``VERTEX_FIELDS``, integers in their
shortest form, bytes as msgpack bin and text as msgpack str, and no ext types,
floats or nil anywhere outside the payload. Parents and conflict keys are
sorted and unique. A decoder accepts an input only if re-encoding the decoded
value gives back the same bytes, so no second spelling of a vertex exists.

The unsigned bytes are the same map without its last entry, ``signature``.
The vertex id is SHA-256 over the unsigned bytes, so the id names the content
and not one particular signature: ML-DSA signatures are randomized, and two
signatures of one vertex must not give two ids. Because the id does not cover
the signature, a holder of a vertex must verify the signature before trusting
anything known under that id; ``dag.admission`` never caches a signature
failure by id.

Untrusted input is checked against every limit before anything large is
allocated: the length of the whole input first, then msgpack's own per-object
limits (``max_buffer_size``, ``max_bin_len``, ``max_str_len``,
``max_array_len``, ``max_map_len``, ``max_ext_len``), then the shape of the
decoded map. Every malformed input raises ``DecodeError`` and nothing else.

Payloads are typed: ``payload_type`` names the schema and ``payload`` holds its
body as canonical msgpack (maps with str keys in sorted order, at most
``MAX_PAYLOAD_DEPTH`` levels of nesting, no ext types, finite floats).

Public API:
    ``encode_vertex(vertex: Vertex) -> bytes``
    ``decode_vertex(data: bytes) -> Vertex``
    ``encode_unsigned(vertex: Vertex) -> bytes``
    ``encode_payload(value: object) -> bytes``
    ``decode_payload(data: bytes) -> object``
    ``encode_public_key(scheme: str, public_key: bytes) -> bytes``
    ``decode_public_key(data: bytes) -> tuple[str, bytes]``
    ``DecodeError(DagError)``; limits as ``Final`` constants below.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import msgpack

from dag import DagError

if TYPE_CHECKING:
    from dag.vertex import Vertex


class DecodeError(DagError):
    """Raised for bytes that are not one canonical, in-limits encoding."""


VERTEX_VERSION: Final = 1
ID_BYTES: Final = 32
# Hard limits of the wire format. Admission applies tighter, configurable
# limits on parents and payload size and counts those rejections per peer.
MAX_PARENTS: Final = 128
MAX_PAYLOAD_BYTES: Final = 65536
MAX_PAYLOAD_DEPTH: Final = 16
MAX_CONFLICT_KEYS: Final = 16
MAX_CONFLICT_KEY_BYTES: Final = 64
MAX_PAYLOAD_TYPE_CHARS: Final = 64
MAX_SCHEME_CHARS: Final = 16
# ML-DSA-65 signatures are 3309 bytes and ML-DSA-87 ones 4627; this leaves room
# for a future scheme without letting a peer send arbitrary blobs.
MAX_SIGNATURE_BYTES: Final = 8192
MAX_PUBLIC_KEY_BYTES: Final = 4096
# Sum of the field limits above (about 79 KiB) rounded up.
MAX_VERTEX_BYTES: Final = 96 * 1024
MAX_TIMESTAMP_MS: Final = 2**63 - 1

VERTEX_FIELDS: Final = (
    "version",
    "author",
    "parents",
    "timestamp_ms",
    "payload_type",
    "payload",
    "conflict_keys",
    "scheme",
    "signature",
)
PUBLIC_KEY_FIELDS: Final = ("scheme", "public_key")
PAYLOAD_TYPE_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9_./-]*\Z")
SCHEME_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9-]*\Z")

_MAX_PUBLIC_KEY_MESSAGE: Final = MAX_PUBLIC_KEY_BYTES + 64


# -- encoding -------------------------------------------------------------


def _pack(value: object) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def _check_sorted_ids(name: str, values: Sequence[bytes], size: int) -> None:
    for value in values:
        if not isinstance(value, bytes) or len(value) != size:
            raise ValueError(f"{name} entries must be {size}-byte bytes, got {value!r}")
    for left, right in itertools.pairwise(values):
        if left >= right:
            raise ValueError(f"{name} must be sorted and unique")


def check_vertex_fields(vertex: Vertex) -> None:
    """Raise ValueError unless every field of ``vertex`` is within the wire limits.

    The check covers types, lengths, sort order and the text patterns; it does
    not check the signature or whether the scheme is one this node supports.
    """
    if type(vertex.version) is not int or vertex.version != VERTEX_VERSION:
        raise ValueError(f"version must be {VERTEX_VERSION}, got {vertex.version!r}")
    if not isinstance(vertex.author, bytes) or len(vertex.author) != ID_BYTES:
        raise ValueError(f"author must be a {ID_BYTES}-byte key id")
    if not isinstance(vertex.parents, tuple) or len(vertex.parents) > MAX_PARENTS:
        raise ValueError(f"parents must be a tuple of at most {MAX_PARENTS} ids")
    _check_sorted_ids("parents", vertex.parents, ID_BYTES)
    ts = vertex.timestamp_ms
    if type(ts) is not int or not 0 <= ts <= MAX_TIMESTAMP_MS:
        raise ValueError(f"timestamp_ms must be an int in [0, 2**63), got {ts!r}")
    ptype = vertex.payload_type
    if (
        not isinstance(ptype, str)
        or len(ptype) > MAX_PAYLOAD_TYPE_CHARS
        or not PAYLOAD_TYPE_PATTERN.match(ptype)
    ):
        raise ValueError(f"payload_type {ptype!r} must match [a-z0-9][a-z0-9_./-]*")
    if not isinstance(vertex.payload, bytes) or len(vertex.payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload must be bytes of at most {MAX_PAYLOAD_BYTES}")
    keys = vertex.conflict_keys
    if not isinstance(keys, tuple) or len(keys) > MAX_CONFLICT_KEYS:
        raise ValueError(
            f"conflict_keys must be a tuple of at most {MAX_CONFLICT_KEYS}"
        )
    for key in keys:
        if not isinstance(key, bytes) or not 1 <= len(key) <= MAX_CONFLICT_KEY_BYTES:
            raise ValueError(
                f"conflict keys must be 1..{MAX_CONFLICT_KEY_BYTES} bytes, got {key!r}"
            )
    for left, right in itertools.pairwise(keys):
        if left >= right:
            raise ValueError("conflict_keys must be sorted and unique")
    scheme = vertex.scheme
    if (
        not isinstance(scheme, str)
        or len(scheme) > MAX_SCHEME_CHARS
        or not SCHEME_PATTERN.match(scheme)
    ):
        raise ValueError(f"scheme {scheme!r} must match [a-z0-9][a-z0-9-]*")
    sig = vertex.signature
    if not isinstance(sig, bytes) or len(sig) > MAX_SIGNATURE_BYTES:
        raise ValueError(f"signature must be bytes of at most {MAX_SIGNATURE_BYTES}")


def encode_unsigned(vertex: Vertex) -> bytes:
    """Encode every field except the signature; the id and signature cover these."""
    return _pack(
        {
            "version": vertex.version,
            "author": vertex.author,
            "parents": list(vertex.parents),
            "timestamp_ms": vertex.timestamp_ms,
            "payload_type": vertex.payload_type,
            "payload": vertex.payload,
            "conflict_keys": list(vertex.conflict_keys),
            "scheme": vertex.scheme,
        }
    )


def _join_signature(unsigned: bytes, signature: bytes) -> bytes:
    # The unsigned map has 8 entries, so its header is the single byte 0x88;
    # the signed map is the same entries plus one, under header 0x89.
    return b"\x89" + unsigned[1:] + _pack("signature") + _pack(signature)


def encode_vertex(vertex: Vertex) -> bytes:
    """Encode a vertex, signature included, in its one canonical form.

    ``Vertex`` checks its fields when it is constructed, so this cannot fail
    for a vertex built through its constructor.
    """
    return _join_signature(encode_unsigned(vertex), vertex.signature)


# -- decoding -------------------------------------------------------------


def _unpack_one(data: object, *, max_bytes: int, max_array: int, max_map: int) -> Any:
    """Unpack exactly one msgpack object from ``data`` within the given limits."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise DecodeError(f"input is {len(data)} bytes, limit is {max_bytes}")
    if len(data) == 0:
        raise DecodeError("input is empty")
    unpacker = msgpack.Unpacker(
        use_list=False,
        raw=False,
        strict_map_key=True,
        max_buffer_size=max_bytes,
        max_bin_len=max_bytes,
        max_str_len=max_bytes,
        max_array_len=max_array,
        max_map_len=max_map,
        # Ext types are never valid; a length limit of 0 still lets an empty
        # ext through as an ExtType, which the shape checks then reject.
        max_ext_len=0,
    )
    # msgpack raises ValueError subclasses, TypeError, UnicodeDecodeError and
    # its own exception types for bad input; all of them mean malformed bytes.
    try:
        unpacker.feed(data)
        value = unpacker.unpack()
    except Exception as exc:  # noqa: BLE001
        raise DecodeError(f"invalid msgpack: {type(exc).__name__}: {exc}") from None
    if unpacker.tell() != len(data):
        raise DecodeError(f"{len(data) - unpacker.tell()} trailing bytes after object")
    return value


def _expect_map(value: Any, fields: tuple[str, ...], what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise DecodeError(f"{what} must be a msgpack map, got {type(value).__name__}")
    if tuple(value) != fields:
        raise DecodeError(f"{what} keys must be exactly {fields} in that order")
    return value


def _expect(value: Any, kind: type, field: str) -> Any:
    # `type(...) is` rejects bool where int is expected.
    if type(value) is not kind:
        raise DecodeError(
            f"{field} must be {kind.__name__}, got {type(value).__name__}"
        )
    return value


def decode_vertex(data: bytes) -> Vertex:
    """Decode untrusted bytes into a vertex, checking every wire limit.

    The signature is not verified here; that needs the author's public key.

    Raises:
        DecodeError: the bytes are not one canonical vertex encoding.
    """
    from dag.vertex import Vertex

    raw = _unpack_one(
        data,
        max_bytes=MAX_VERTEX_BYTES,
        max_array=max(MAX_PARENTS, MAX_CONFLICT_KEYS),
        max_map=len(VERTEX_FIELDS),
    )
    fields = _expect_map(raw, VERTEX_FIELDS, "vertex")
    parents = _expect(fields["parents"], tuple, "parents")
    conflict_keys = _expect(fields["conflict_keys"], tuple, "conflict_keys")
    for parent in parents:
        _expect(parent, bytes, "parent id")
    for key in conflict_keys:
        _expect(key, bytes, "conflict key")
    try:
        vertex = Vertex(
            version=_expect(fields["version"], int, "version"),
            author=_expect(fields["author"], bytes, "author"),
            parents=parents,
            timestamp_ms=_expect(fields["timestamp_ms"], int, "timestamp_ms"),
            payload_type=_expect(fields["payload_type"], str, "payload_type"),
            payload=_expect(fields["payload"], bytes, "payload"),
            conflict_keys=conflict_keys,
            scheme=_expect(fields["scheme"], str, "scheme"),
            signature=_expect(fields["signature"], bytes, "signature"),
        )
        encoded = encode_vertex(vertex)
    except ValueError as exc:
        raise DecodeError(f"invalid vertex: {exc}") from None
    if encoded != data:
        raise DecodeError("vertex is not in canonical form")
    decode_payload(vertex.payload)
    return vertex


# -- payloads ---------------------------------------------------------------


def _check_payload_value(value: object, depth: int) -> None:
    if depth > MAX_PAYLOAD_DEPTH:
        raise ValueError(f"payload nests deeper than {MAX_PAYLOAD_DEPTH} levels")
    if value is None or isinstance(value, (bool, str, bytes)):
        return
    if isinstance(value, int):
        if not -(2**63) <= value < 2**64:
            raise ValueError(f"payload integer {value} does not fit in 64 bits")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"payload float {value} is not finite")
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_payload_value(item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"payload map keys must be str, got {key!r}")  # noqa: TRY004
            _check_payload_value(item, depth + 1)
        return
    raise ValueError(f"payload cannot contain {type(value).__name__}")


def _sorted_maps(value: object) -> object:
    if isinstance(value, dict):
        return {key: _sorted_maps(value[key]) for key in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [_sorted_maps(item) for item in value]
    return value


def encode_payload(value: object) -> bytes:
    """Encode a payload body canonically: map keys sorted, tuples as arrays.

    Raises:
        ValueError: the value has a type msgpack payloads may not contain, is
            nested too deeply, or encodes to more than ``MAX_PAYLOAD_BYTES``.
    """
    _check_payload_value(value, 1)
    data = _pack(_sorted_maps(value))
    if len(data) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload is {len(data)} bytes, limit is {MAX_PAYLOAD_BYTES}")
    return data


def decode_payload(data: bytes) -> Any:
    """Decode a canonical payload body (maps as dicts, arrays as tuples).

    Raises:
        DecodeError: the bytes are malformed, not canonical, or over a limit.
    """
    value = _unpack_one(
        data,
        max_bytes=MAX_PAYLOAD_BYTES,
        max_array=MAX_PAYLOAD_BYTES,
        max_map=MAX_PAYLOAD_BYTES // 2,
    )
    try:
        canonical = encode_payload(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise DecodeError(f"invalid payload: {exc}") from None
    if canonical != data:
        raise DecodeError("payload is not in canonical form")
    return value


# -- public keys --------------------------------------------------------------


def encode_public_key(scheme: str, public_key: bytes) -> bytes:
    """Encode a key announcement: the scheme name and the raw public key."""
    if not isinstance(scheme, str) or not SCHEME_PATTERN.match(scheme):
        raise ValueError(f"scheme {scheme!r} must match [a-z0-9][a-z0-9-]*")
    if not isinstance(public_key, bytes) or len(public_key) > MAX_PUBLIC_KEY_BYTES:
        raise ValueError(f"public key must be bytes of at most {MAX_PUBLIC_KEY_BYTES}")
    return _pack({"scheme": scheme, "public_key": public_key})


def decode_public_key(data: bytes) -> tuple[str, bytes]:
    """Decode a key announcement into ``(scheme, public_key)``.

    The key bytes are not parsed here: ``dag.keys.PublicKey.from_bytes``
    checks their length for the scheme.

    Raises:
        DecodeError: the bytes are not one canonical key announcement.
    """
    raw = _unpack_one(data, max_bytes=_MAX_PUBLIC_KEY_MESSAGE, max_array=0, max_map=2)
    fields = _expect_map(raw, PUBLIC_KEY_FIELDS, "public key")
    scheme = _expect(fields["scheme"], str, "scheme")
    public_key = _expect(fields["public_key"], bytes, "public_key")
    try:
        canonical = encode_public_key(scheme, public_key)
    except ValueError as exc:
        raise DecodeError(f"invalid public key message: {exc}") from None
    if canonical != data:
        raise DecodeError("public key message is not in canonical form")
    return scheme, public_key
