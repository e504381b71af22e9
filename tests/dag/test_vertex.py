"""Vertex construction, signing and the per-network genesis."""

from __future__ import annotations

import dataclasses

import pytest

from dag.codec import VERTEX_VERSION
from dag.vertex import (
    Vertex,
    create_vertex,
    genesis_vertex,
    is_genesis,
    verify_signature,
)
from tests.dag.helpers import child, seeded_key


def test_create_sorts_parents_and_keys(genesis, ed_key):
    first = child(ed_key, [genesis], 1)
    second = child(ed_key, [genesis], 2)
    vertex = create_vertex(
        ed_key,
        [second.id, first.id, second.id],
        "test.note",
        {"x": 1},
        ["b", b"a", "b"],
        5,
    )
    assert vertex.parents == tuple(sorted([first.id, second.id]))
    assert vertex.conflict_keys == (b"a", b"b")
    assert vertex.version == VERTEX_VERSION
    assert vertex.author == ed_key.key_id


@pytest.mark.parametrize("key_fixture", ["ed_key", "mldsa_key"])
def test_signature_verifies_with_author_key(request, genesis, key_fixture):
    key = request.getfixturevalue(key_fixture)
    vertex = child(key, [genesis], 1)
    assert verify_signature(vertex, key.public())


def test_signature_fails_after_any_field_change(genesis, ed_key):
    vertex = child(ed_key, [genesis], 1, conflict_keys=(b"k",))
    changes = {
        "timestamp_ms": vertex.timestamp_ms + 1,
        "payload_type": "test.other",
        "payload": b"\x01",
        "conflict_keys": (b"j",),
        "parents": (b"\x00" * 32,),
    }
    for name, value in changes.items():
        changed = dataclasses.replace(vertex, **{name: value})
        assert changed.id != vertex.id, name
        assert not verify_signature(changed, ed_key.public()), name


def test_signature_from_other_key_fails(genesis, ed_key):
    other = seeded_key("mallory")
    vertex = child(ed_key, [genesis], 1)
    forged = dataclasses.replace(vertex, signature=other.sign(b"x"))
    assert not verify_signature(forged, ed_key.public())
    assert not verify_signature(vertex, other.public())


def test_create_requires_parents(ed_key):
    with pytest.raises(ValueError, match="parent"):
        create_vertex(ed_key, [], "test.note", {}, (), 1)


def test_create_rejects_non_canonical_payload_bytes(genesis, ed_key):
    with pytest.raises(ValueError, match="canonical"):
        create_vertex(ed_key, [genesis.id], "test.note", b"\xc1", (), 1)


def test_constructor_checks_limits(genesis):
    with pytest.raises(ValueError, match="author"):
        dataclasses.replace(genesis, author=b"short")
    with pytest.raises(ValueError, match="payload_type"):
        dataclasses.replace(genesis, payload_type="Bad Type")


def test_genesis_is_deterministic_per_network():
    assert genesis_vertex("alpha").id == genesis_vertex("alpha").id
    assert genesis_vertex("alpha").id != genesis_vertex("beta").id
    assert genesis_vertex("alpha").parents == ()
    assert is_genesis(genesis_vertex("alpha"), "alpha")
    assert not is_genesis(genesis_vertex("alpha"), "beta")


def test_genesis_rejects_bad_network_name():
    for name in ("", "n" * 65):
        with pytest.raises(ValueError, match="network name"):
            genesis_vertex(name)


def test_vertex_is_hashable_and_frozen(genesis):
    assert {genesis: 1}[genesis] == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        genesis.timestamp_ms = 5  # type: ignore[misc]
    assert isinstance(genesis, Vertex)
