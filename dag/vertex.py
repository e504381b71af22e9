"""Signed DAG vertices, their ids, signing and the per-network genesis.

A vertex carries a format version, the author's key id, its parents (sorted,
unique, at least one except for the genesis), a timestamp in integer
milliseconds, a typed payload, the conflict keys it competes on (vertices that
share a key conflict) and a signature. The wire form and the id are defined in
``dag.codec``: the id is SHA-256 over the unsigned canonical bytes.

A signature covers ``SIGNATURE_DOMAIN + encode_unsigned(vertex)``. The domain
prefix keeps a vertex signature from being valid for any other message the same
key might sign.

Every node of a network derives the same genesis from the network name alone
(``genesis_vertex``). It has no parents and no signature (scheme ``none``);
nodes recognise it by id, never by its signature, and every other vertex
descends from it. Because ids chain back to the genesis, a vertex of one network
can never be admitted on another.

Public API:
    ``Vertex`` (frozen; fields below, ``.id``: 32 bytes)
    ``create_vertex(key: SigningKey, parents: Iterable[bytes], payload_type: str,
    payload: object, conflict_keys: Iterable[bytes | str], timestamp_ms: int)
    -> Vertex``
    ``genesis_vertex(network: str) -> Vertex``
    ``signing_message(vertex: Vertex) -> bytes``
    ``verify_signature(vertex: Vertex, public_key: PublicKey) -> bool``
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from dag import codec
from dag.keys import PublicKey, SigningKey

SIGNATURE_DOMAIN: Final = b"synaptic-mesh vertex v1\x00"
GENESIS_SCHEME: Final = "none"
GENESIS_PAYLOAD_TYPE: Final = "genesis"
_GENESIS_AUTHOR_TAG: Final = b"synaptic-mesh genesis author\x00"
MAX_NETWORK_NAME_CHARS: Final = 64


@dataclass(frozen=True, slots=True)
class Vertex:
    """One vertex of the DAG; ``id`` is derived and never passed in.

    Construction checks every field against the wire limits in ``dag.codec``
    and raises ValueError for a field out of limits, so any ``Vertex`` can be
    encoded. It does not check the signature.
    """

    version: int
    author: bytes
    parents: tuple[bytes, ...]
    timestamp_ms: int
    payload_type: str
    payload: bytes
    conflict_keys: tuple[bytes, ...]
    scheme: str
    signature: bytes
    id: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        codec.check_vertex_fields(self)
        digest = hashlib.sha256(codec.encode_unsigned(self)).digest()
        object.__setattr__(self, "id", digest)

    def __repr__(self) -> str:
        return (
            f"Vertex(id={self.id.hex()[:16]}, type={self.payload_type!r}, "
            f"parents={len(self.parents)}, author={self.author.hex()[:16]})"
        )


def signing_message(vertex: Vertex) -> bytes:
    """Return the bytes a vertex signature signs."""
    return SIGNATURE_DOMAIN + codec.encode_unsigned(vertex)


def verify_signature(vertex: Vertex, public_key: PublicKey) -> bool:
    """Return whether ``vertex`` is signed by ``public_key``; never raises.

    The key must be the author's: a matching signature from another key with
    the same scheme is still rejected.
    """
    if public_key.key_id != vertex.author or public_key.scheme != vertex.scheme:
        return False
    return public_key.verify(signing_message(vertex), vertex.signature)


def _payload_body(payload: object) -> bytes:
    if isinstance(payload, bytes):
        # Bytes are taken as an already encoded body and must be canonical.
        try:
            codec.decode_payload(payload)
        except codec.DecodeError as exc:
            raise ValueError(f"payload bytes are not a canonical body: {exc}") from None
        return payload
    return codec.encode_payload(payload)


def create_vertex(
    key: SigningKey,
    parents: Iterable[bytes],
    payload_type: str,
    payload: object,
    conflict_keys: Iterable[bytes | str],
    timestamp_ms: int,
) -> Vertex:
    """Build and sign a vertex.

    Args:
        key: the author's signing key; its key id becomes ``author``.
        parents: ids of the parents, in any order, duplicates allowed.
        payload_type: name of the payload schema, e.g. ``"task.claim"``.
        payload: a value for ``codec.encode_payload`` (dict, list, ...), or
            bytes that already hold a canonical payload body.
        conflict_keys: keys this vertex competes on; str keys are UTF-8 encoded.
        timestamp_ms: the author's clock, in milliseconds since the Unix epoch.

    Raises:
        ValueError: no parents, or a field outside the wire limits.
    """
    parent_ids = tuple(sorted(set(parents)))
    if not parent_ids:
        raise ValueError(
            "a vertex needs at least one parent; only the genesis has none"
        )
    keys = {k.encode() if isinstance(k, str) else k for k in conflict_keys}
    unsigned = Vertex(
        version=codec.VERTEX_VERSION,
        author=key.key_id,
        parents=parent_ids,
        timestamp_ms=timestamp_ms,
        payload_type=payload_type,
        payload=_payload_body(payload),
        conflict_keys=tuple(sorted(keys)),
        scheme=key.scheme,
        signature=b"",
    )
    signature = key.sign(signing_message(unsigned))
    return Vertex(
        version=unsigned.version,
        author=unsigned.author,
        parents=unsigned.parents,
        timestamp_ms=unsigned.timestamp_ms,
        payload_type=unsigned.payload_type,
        payload=unsigned.payload,
        conflict_keys=unsigned.conflict_keys,
        scheme=unsigned.scheme,
        signature=signature,
    )


@functools.lru_cache(maxsize=16)
def genesis_vertex(network: str) -> Vertex:
    """Return the genesis vertex of ``network``, the same on every node.

    Raises:
        ValueError: the network name is empty or longer than 64 characters.
    """
    if not isinstance(network, str) or not 0 < len(network) <= MAX_NETWORK_NAME_CHARS:
        raise ValueError(
            f"network name must be 1..{MAX_NETWORK_NAME_CHARS} characters, "
            f"got {network!r}"
        )
    author = hashlib.sha256(_GENESIS_AUTHOR_TAG + network.encode()).digest()
    return Vertex(
        version=codec.VERTEX_VERSION,
        author=author,
        parents=(),
        timestamp_ms=0,
        payload_type=GENESIS_PAYLOAD_TYPE,
        payload=codec.encode_payload({"network": network}),
        conflict_keys=(),
        scheme=GENESIS_SCHEME,
        signature=b"",
    )


def is_genesis(vertex: Vertex, network: str) -> bool:
    """Return whether ``vertex`` is the genesis of ``network``."""
    return vertex.id == genesis_vertex(network).id
