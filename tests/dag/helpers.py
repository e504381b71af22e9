"""Deterministic keys and a vertex builder shared by the dag tests."""

from __future__ import annotations

import hashlib

from dag.keys import SigningKey
from dag.vertex import Vertex, create_vertex

NETWORK = "test-net"


def seeded_key(name: str, scheme: str = "ed25519") -> SigningKey:
    """Return a key whose seed is derived from ``name``, the same in every run."""
    return SigningKey.from_seed(scheme, hashlib.sha256(name.encode()).digest())


def child(
    key: SigningKey,
    parents: list[Vertex],
    n: int = 0,
    *,
    payload_type: str = "test.note",
    payload: object = None,
    conflict_keys: tuple[bytes, ...] = (),
    timestamp_ms: int | None = None,
) -> Vertex:
    """Return a vertex signed by ``key`` on top of ``parents``."""
    return create_vertex(
        key,
        [p.id for p in parents],
        payload_type,
        {"n": n} if payload is None else payload,
        conflict_keys,
        1_000 + n if timestamp_ms is None else timestamp_ms,
    )
