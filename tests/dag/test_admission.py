"""Admission core: rejection reasons, orphans, key and parent fetch, order."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dag import admission as admission_module
from dag import codec
from dag.admission import (
    Admission,
    AdmissionParams,
    Admitted,
    Reason,
    Rejected,
    RequestKey,
    RequestVertices,
    StoreKey,
)
from dag.keys import SigningKey
from dag.vertex import Vertex, create_vertex
from tests.dag.helpers import child, seeded_key

NOW = 1_700_000_000.0
ALICE = seeded_key("alice")
BOB = seeded_key("bob", "ml-dsa-65")


def _admission(genesis: Vertex, keys=(ALICE, BOB), **params) -> Admission:
    core = Admission(AdmissionParams(**params), genesis.id)
    core.add_keys(k.public() for k in keys)
    return core


def _admitted(actions) -> list[bytes]:
    return [a.vertex.id for a in actions if isinstance(a, Admitted)]


def _rejected(actions) -> list[tuple[bytes | None, Reason]]:
    return [(a.vertex_id, a.reason) for a in actions if isinstance(a, Rejected)]


def _forge_id(vertex: Vertex, new_id: bytes) -> Vertex:
    # Ids are content hashes; only a forged id can name itself or form a cycle.
    object.__setattr__(vertex, "id", new_id)
    return vertex


def test_child_of_genesis_admitted(genesis):
    core = _admission(genesis)
    vertex = child(ALICE, [genesis], 1)
    actions = core.on_vertex("p1", vertex, NOW)
    assert actions == [Admitted(vertex, "p1")]
    assert core.is_known(vertex.id)


def test_mldsa_vertex_admitted(genesis):
    core = _admission(genesis)
    vertex = child(BOB, [genesis], 1)
    assert _admitted(core.on_vertex("p1", vertex, NOW)) == [vertex.id]


def test_duplicate_is_ignored_and_counted(genesis, monkeypatch):
    core = _admission(genesis)
    vertex = child(ALICE, [genesis], 1)
    core.on_vertex("p1", vertex, NOW)
    calls = []
    monkeypatch.setattr(
        admission_module, "verify_signature", lambda *a: calls.append(a) or True
    )
    assert core.on_vertex("p2", vertex, NOW) == []
    assert calls == []
    assert core.stats().duplicates == 1


def _tampered(vertex: Vertex) -> Vertex:
    sig = bytearray(vertex.signature)
    sig[5] ^= 0x40
    return dataclasses.replace(vertex, signature=bytes(sig))


@pytest.mark.parametrize("key", [ALICE, BOB], ids=["ed25519", "ml-dsa-65"])
def test_bad_signature_rejected_not_cached(genesis, key):
    core = _admission(genesis)
    vertex = child(key, [genesis], 1)
    bad = _tampered(vertex)
    assert _rejected(core.on_vertex("evil", bad, NOW)) == [
        (vertex.id, Reason.BAD_SIGNATURE)
    ]
    # The forger sent the id first, but the valid copy must still get in.
    assert _admitted(core.on_vertex("good", vertex, NOW)) == [vertex.id]
    assert core.rejection_counts("evil") == {Reason.BAD_SIGNATURE: 1}
    assert core.rejection_counts("good") == {}


def test_signature_of_wrong_length_rejected(genesis):
    core = _admission(genesis)
    vertex = child(ALICE, [genesis], 1)
    for signature in (b"", vertex.signature + b"\x00", vertex.signature[:-1]):
        bad = dataclasses.replace(vertex, signature=signature)
        assert _rejected(core.on_vertex("evil", bad, NOW)) == [
            (vertex.id, Reason.BAD_SIGNATURE)
        ]


def test_signature_by_other_key_rejected(genesis):
    core = _admission(genesis)
    vertex = child(ALICE, [genesis], 1)
    other = seeded_key("mallory")
    core.add_keys([other.public()])
    forged = dataclasses.replace(vertex, signature=other.sign(b"anything"))
    assert _rejected(core.on_vertex("evil", forged, NOW)) == [
        (vertex.id, Reason.BAD_SIGNATURE)
    ]


def test_unknown_scheme_rejected_and_cached(genesis, monkeypatch):
    core = _admission(genesis)
    vertex = dataclasses.replace(child(ALICE, [genesis], 1), scheme="rsa-4096")
    for _ in range(2):
        assert _rejected(core.on_vertex("p", vertex, NOW)) == [
            (vertex.id, Reason.UNKNOWN_SCHEME)
        ]
    assert core.rejection_counts("p") == {Reason.UNKNOWN_SCHEME: 2}


def test_future_timestamp_rejected(genesis):
    core = _admission(genesis, max_clock_skew_ms=5_000)
    now_ms = int(NOW * 1000)
    ok = child(ALICE, [genesis], 1, timestamp_ms=now_ms + 5_000)
    late = child(ALICE, [genesis], 2, timestamp_ms=now_ms + 5_001)
    assert _admitted(core.on_vertex("p", ok, NOW)) == [ok.id]
    assert _rejected(core.on_vertex("p", late, NOW)) == [
        (late.id, Reason.FUTURE_TIMESTAMP)
    ]
    # The same vertex is fine once the clock catches up, so it is not cached.
    assert _admitted(core.on_vertex("p", late, NOW + 1)) == [late.id]


def test_stale_timestamp_rejected_but_old_history_admitted(genesis):
    day_ms = 86_400_000
    core = _admission(genesis, max_age_ms=365 * day_ms)
    now_ms = int(NOW * 1000)
    # A month-old vertex, as a restarted node fetches while it catches up.
    old = child(ALICE, [genesis], 1, timestamp_ms=now_ms - 30 * day_ms)
    epoch = child(ALICE, [genesis], 2, timestamp_ms=0)
    assert _admitted(core.on_vertex("p", old, NOW)) == [old.id]
    assert _rejected(core.on_vertex("p", epoch, NOW)) == [
        (epoch.id, Reason.STALE_TIMESTAMP)
    ]
    assert core.rejection_counts("p") == {Reason.STALE_TIMESTAMP: 1}


def test_too_many_parents_rejected(genesis):
    core = _admission(genesis, max_parents=2)
    parents = [child(ALICE, [genesis], n) for n in range(3)]
    core.on_vertices("p", parents, NOW)
    two = child(ALICE, parents[:2], 10)
    three = child(ALICE, parents, 11)
    assert _admitted(core.on_vertex("p", two, NOW)) == [two.id]
    assert _rejected(core.on_vertex("p", three, NOW)) == [
        (three.id, Reason.TOO_MANY_PARENTS)
    ]


def test_oversized_payload_rejected(genesis):
    core = _admission(genesis, max_payload_bytes=100)
    big = child(ALICE, [genesis], 1, payload={"blob": b"x" * 200})
    assert _rejected(core.on_vertex("p", big, NOW)) == [
        (big.id, Reason.OVERSIZED_PAYLOAD)
    ]


def test_parentless_vertex_rejected(genesis):
    core = _admission(genesis)
    root = dataclasses.replace(genesis, payload=codec.encode_payload({"n": "x"}))
    root = dataclasses.replace(root, scheme="ed25519")
    assert _rejected(core.on_vertex("p", root, NOW)) == [(root.id, Reason.NO_PARENTS)]


def test_genesis_from_peer_is_duplicate(genesis):
    core = _admission(genesis)
    assert core.on_vertex("p", genesis, NOW) == []


def test_self_reference_rejected(genesis):
    core = _admission(genesis)
    vertex = child(ALICE, [genesis], 1)
    _forge_id(vertex, genesis.id)
    fresh = core.on_vertex("p", vertex, NOW)
    # The forged id equals the genesis id, which is known: a duplicate.
    assert fresh == []
    parent_id = b"\x07" * 32
    looped = _forge_id(
        create_vertex(ALICE, [genesis.id, parent_id], "test.note", {}, (), 1), parent_id
    )
    assert _rejected(core.on_vertex("p", looped, NOW)) == [
        (parent_id, Reason.SELF_REFERENCE)
    ]


def test_cycle_rejected(genesis):
    core = _admission(genesis)
    fake_id = b"\x09" * 32
    first = create_vertex(ALICE, [fake_id], "test.note", {"n": 1}, (), 1)
    actions = core.on_vertex("p", first, NOW)
    assert actions == [RequestVertices("p", (fake_id,))]
    # `second` names `first` as parent and claims the id `first` waits for.
    second = _forge_id(
        create_vertex(ALICE, [first.id], "test.note", {"n": 2}, (), 2), fake_id
    )
    rejected = _rejected(core.on_vertex("p", second, NOW))
    assert (fake_id, Reason.CYCLE) in rejected
    assert (first.id, Reason.PARENT_REJECTED) in rejected
    assert core.stats().orphans == 0


def test_malformed_bytes_counted(genesis):
    core = _admission(genesis)
    actions = core.on_vertex_bytes("evil", b"\x93\x01\x02", NOW)
    assert actions == [Rejected("evil", None, Reason.MALFORMED)]
    vertex = child(ALICE, [genesis], 1)
    good = core.on_vertex_bytes("p", codec.encode_vertex(vertex), NOW)
    assert _admitted(good) == [vertex.id]


def test_orphan_waits_then_admitted_in_order(genesis):
    core = _admission(genesis)
    parent = child(ALICE, [genesis], 1)
    middle = child(ALICE, [parent], 2)
    last = child(ALICE, [middle, parent], 3)
    assert core.on_vertex("p", last, NOW) == [
        RequestVertices("p", tuple(sorted([middle.id, parent.id])))
    ]
    # `middle` is buffered now, so only `parent` is still wanted.
    assert core.on_vertex("p", middle, NOW) == []
    actions = core.on_vertex("p", parent, NOW)
    assert _admitted(actions) == [parent.id, middle.id, last.id]
    assert core.stats().orphans == 0
    assert core.stats().pending_fetches == 0


def _random_dag(rng: random.Random, size: int, genesis: Vertex) -> list[Vertex]:
    vertices = [genesis]
    for n in range(size):
        parents = rng.sample(vertices, k=min(len(vertices), rng.randint(1, 3)))
        vertices.append(child(ALICE, parents, n))
    return vertices[1:]


@pytest.mark.parametrize("seed", range(5))
def test_random_delivery_admits_topologically(genesis, seed):
    rng = random.Random(seed)
    dag = _random_dag(rng, 60, genesis)
    shuffled = dag[:]
    rng.shuffle(shuffled)
    core = _admission(genesis)
    order: list[bytes] = []
    for vertex in shuffled:
        order.extend(_admitted(core.on_vertex(f"p{rng.randint(0, 3)}", vertex, NOW)))
    assert sorted(order) == sorted(v.id for v in dag)
    position = {vertex_id: i for i, vertex_id in enumerate(order)}
    for vertex in dag:
        for parent in vertex.parents:
            if parent != genesis.id:
                assert position[parent] < position[vertex.id]


def test_batch_in_reverse_needs_no_requests(genesis):
    dag = _random_dag(random.Random(7), 30, genesis)
    core = _admission(genesis)
    actions = core.on_vertices("p", list(reversed(dag)), NOW)
    assert not [a for a in actions if isinstance(a, RequestVertices)]
    assert len(_admitted(actions)) == 30


def test_orphan_buffer_bounded_per_peer_and_total(genesis):
    core = _admission(genesis, max_orphans=5, max_orphans_per_peer=3)
    orphans = [
        create_vertex(ALICE, [bytes([n]) * 32], "test.note", {}, (), 1)
        for n in range(1, 8)
    ]
    for vertex in orphans[:3]:
        assert not _rejected(core.on_vertex("a", vertex, NOW))
    assert _rejected(core.on_vertex("a", orphans[3], NOW)) == [
        (orphans[3].id, Reason.ORPHAN_LIMIT)
    ]
    for vertex in orphans[4:6]:
        assert not _rejected(core.on_vertex("b", vertex, NOW))
    assert _rejected(core.on_vertex("c", orphans[6], NOW)) == [
        (orphans[6].id, Reason.ORPHAN_LIMIT)
    ]
    assert core.stats().orphans == 5


def test_orphans_expire_with_descendants(genesis):
    core = _admission(genesis, orphan_ttl=10.0)
    missing = child(ALICE, [genesis], 1)
    waiting = child(ALICE, [missing], 2)
    grandchild = child(ALICE, [waiting], 3)
    core.on_vertex("a", waiting, NOW)
    core.on_vertex("b", grandchild, NOW + 5)
    assert core.next_deadline() == NOW + 2.0
    assert _rejected(core.on_tick(NOW + 9.9)) == []
    rejected = _rejected(core.on_tick(NOW + 10.0))
    assert rejected == [
        (waiting.id, Reason.ORPHAN_EXPIRED),
        (grandchild.id, Reason.ORPHAN_EXPIRED),
    ]
    assert core.rejection_counts("b") == {Reason.ORPHAN_EXPIRED: 1}
    assert core.stats().orphans == 0
    assert core.stats().pending_fetches == 0
    assert core.next_deadline() == float("inf")
    # The expired vertices are not blacklisted: they can still be admitted.
    actions = core.on_vertices("a", [grandchild, waiting, missing], NOW + 11)
    assert len(_admitted(actions)) == 3


def test_parent_requests_bounded_and_rotate_peers(genesis):
    core = _admission(genesis, max_fetch_attempts=3, fetch_interval=1.0)
    missing = child(ALICE, [genesis], 1)
    first = child(ALICE, [missing], 2)
    second = child(ALICE, [missing], 3)
    requests = core.on_vertex("a", first, NOW)
    assert core.on_vertex("b", second, NOW) == []
    for step in range(1, 20):
        requests.extend(core.on_tick(NOW + step * 0.5))
    assert requests == [
        RequestVertices("a", (missing.id,)),
        RequestVertices("b", (missing.id,)),
        RequestVertices("a", (missing.id,)),
    ]


def test_requests_split_by_size(genesis):
    core = _admission(genesis, max_ids_per_request=2)
    parents = [bytes([n]) * 32 for n in range(1, 6)]
    vertex = create_vertex(ALICE, parents, "test.note", {}, (), 1)
    requests = core.on_vertex("p", vertex, NOW)
    assert [len(r.ids) for r in requests] == [2, 2, 1]


def test_unknown_key_fetched_then_verified(genesis):
    carol = seeded_key("carol", "ml-dsa-65")
    core = _admission(genesis)
    first = child(carol, [genesis], 1)
    second = child(carol, [first], 2)
    assert core.on_vertex("p", second, NOW) == [RequestKey("p", carol.key_id)]
    assert core.on_vertex("q", first, NOW) == []
    assert core.stats().waiting_for_key == 2
    actions = core.on_public_key("q", carol.scheme, carol.public_key, NOW)
    assert _admitted(actions) == [first.id, second.id]
    assert [a for a in actions if isinstance(a, StoreKey)] == [StoreKey(carol.public())]
    assert core.stats().pending_fetches == 0


def test_key_requests_bounded(genesis):
    carol = seeded_key("carol")
    core = _admission(genesis, max_fetch_attempts=2, fetch_interval=1.0)
    requests = core.on_vertex("p", child(carol, [genesis], 1), NOW)
    for step in range(1, 10):
        requests.extend(core.on_tick(NOW + step))
    assert requests == [RequestKey("p", carol.key_id)] * 2


def test_forged_copy_keeps_valid_copy(genesis):
    carol = seeded_key("carol")
    core = _admission(genesis)
    vertex = child(carol, [genesis], 1)
    core.on_vertex("evil", _tampered(vertex), NOW)
    core.on_vertex("good", vertex, NOW)
    actions = core.on_public_key("good", carol.scheme, carol.public_key, NOW)
    assert _admitted(actions) == [vertex.id]


def test_waiting_vertex_with_bad_signature_dropped(genesis):
    carol = seeded_key("carol")
    core = _admission(genesis)
    vertex = _tampered(child(carol, [genesis], 1))
    core.on_vertex("evil", vertex, NOW)
    actions = core.on_public_key("good", carol.scheme, carol.public_key, NOW)
    assert _rejected(actions) == [(vertex.id, Reason.BAD_SIGNATURE)]
    assert core.rejection_counts("evil") == {Reason.BAD_SIGNATURE: 1}
    assert core.stats().orphans == 0


@pytest.mark.parametrize("size", [0, 1, 31, 33, 1951, 1953, 5000])
def test_malformed_key_of_any_length_rejected(genesis, size):
    core = _admission(genesis)
    scheme = "ml-dsa-65" if size > 64 else "ed25519"
    actions = core.on_public_key("evil", scheme, b"\x05" * size, NOW)
    assert actions == [Rejected("evil", None, Reason.MALFORMED_KEY)]


def test_key_of_unknown_scheme_rejected(genesis):
    core = _admission(genesis)
    actions = core.on_public_key("evil", "rsa", b"\x05" * 32, NOW)
    assert actions == [Rejected("evil", None, Reason.UNKNOWN_SCHEME)]
    bad = core.on_public_key_bytes("evil", b"\xc1", NOW)
    assert bad == [Rejected("evil", None, Reason.MALFORMED)]


def test_key_of_wrong_author_does_not_release(genesis):
    carol = seeded_key("carol")
    dave = seeded_key("dave")
    core = _admission(genesis)
    vertex = child(carol, [genesis], 1)
    core.on_vertex("p", vertex, NOW)
    # Dave's key hashes to Dave's id, so Carol's vertex keeps waiting.
    assert core.on_public_key("evil", dave.scheme, dave.public_key, NOW) == []
    assert core.stats().waiting_for_key == 1


def test_rejected_parent_rejects_waiting_children(genesis):
    core = _admission(genesis, max_payload_bytes=50)
    bad_parent = child(ALICE, [genesis], 1, payload={"blob": b"x" * 100})
    kid = child(ALICE, [bad_parent], 2)
    core.on_vertex("p", kid, NOW)
    rejected = _rejected(core.on_vertex("q", bad_parent, NOW))
    assert rejected == [
        (bad_parent.id, Reason.OVERSIZED_PAYLOAD),
        (kid.id, Reason.PARENT_REJECTED),
    ]
    grandchild = child(ALICE, [kid], 3)
    assert _rejected(core.on_vertex("p", grandchild, NOW)) == [
        (grandchild.id, Reason.PARENT_REJECTED)
    ]


def test_mark_known_releases_children(genesis):
    core = _admission(genesis, known_capacity=2)
    chain = [child(ALICE, [genesis], 0)]
    for n in range(1, 4):
        chain.append(child(ALICE, [chain[-1]], n))
    core.on_vertices("p", chain[:3], NOW)
    # Capacity 2: chain[0] is evicted, chain[1] and chain[2] are remembered.
    assert not core.is_known(chain[0].id)
    late = child(ALICE, [chain[0], chain[3]], 9)
    core.on_vertex("p", chain[3], NOW)
    requests = core.on_vertex("p", late, NOW)
    assert requests == [RequestVertices("p", (chain[0].id,))]
    assert _admitted(core.mark_known([chain[0].id])) == [late.id]


def test_new_key_stored_once(genesis):
    carol = seeded_key("carol")
    core = _admission(genesis)
    core.on_public_key("p", carol.scheme, carol.public_key, NOW)
    first = core.on_vertex("p", child(carol, [genesis], 1), NOW)
    second = core.on_vertex("p", child(carol, [genesis], 2), NOW)
    assert [a for a in first if isinstance(a, StoreKey)] == [StoreKey(carol.public())]
    assert not [a for a in second if isinstance(a, StoreKey)]


def test_rejection_tracking_bounded_in_peers(genesis):
    core = _admission(genesis, max_tracked_peers=2)
    for peer in ("a", "b", "c"):
        core.on_vertex_bytes(peer, b"", NOW)
    assert core.rejection_counts("a") == {}
    assert core.rejection_counts("c") == {Reason.MALFORMED: 1}
    assert core.rejection_totals() == {Reason.MALFORMED: 3}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_parents", 0),
        ("max_parents", codec.MAX_PARENTS + 1),
        ("max_payload_bytes", codec.MAX_PAYLOAD_BYTES + 1),
        ("max_orphans_per_peer", 20_000),
        ("orphan_ttl", 0.0),
        ("fetch_interval", float("nan")),
        ("max_fetch_attempts", 0),
        ("max_clock_skew_ms", -1),
    ],
)
def test_params_validate(field, value):
    with pytest.raises(ValueError, match=field):
        AdmissionParams(**{field: value}).validate()


def test_generated_key_roundtrip_through_admission(genesis):
    key = SigningKey.generate("ed25519")
    core = _admission(genesis, keys=())
    vertex = child(key, [genesis], 1)
    core.on_vertex("p", vertex, NOW)
    message = codec.encode_public_key(key.scheme, key.public_key)
    assert _admitted(core.on_public_key_bytes("p", message, NOW)) == [vertex.id]


_DAG_CACHE: dict[int, list[Vertex]] = {}


def _cached_dag(genesis: Vertex, seed: int) -> list[Vertex]:
    # Signing dominates the run time, so each seed's DAG is built once.
    if seed not in _DAG_CACHE:
        rng = random.Random(seed)
        carol = seeded_key("carol")
        vertices = [genesis]
        for n in range(25):
            parents = rng.sample(vertices, k=min(len(vertices), rng.randint(1, 3)))
            author = carol if rng.random() < 0.3 else ALICE
            vertices.append(child(author, parents, n))
        _DAG_CACHE[seed] = vertices[1:]
    return _DAG_CACHE[seed]


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=7),
    order_seed=st.integers(min_value=0, max_value=2**32),
    batch=st.integers(min_value=1, max_value=8),
)
def test_any_delivery_order_admits_all_once(genesis, seed, order_seed, batch):
    dag = _cached_dag(genesis, seed)
    rng = random.Random(order_seed)
    # Every vertex arrives once or twice, in any order, from any of 3 peers.
    deliveries = dag + rng.sample(dag, k=len(dag) // 3)
    rng.shuffle(deliveries)
    carol = seeded_key("carol")
    key_at = rng.randint(0, len(deliveries))
    core = _admission(genesis)
    order: list[bytes] = []
    for start in range(0, len(deliveries), batch):
        if start <= key_at < start + batch:
            order += _admitted(
                core.on_public_key("p0", carol.scheme, carol.public_key, NOW)
            )
        chunk = deliveries[start : start + batch]
        actions = core.on_vertices(f"p{rng.randint(0, 2)}", chunk, NOW)
        assert not _rejected(actions)
        order += _admitted(actions)
    order += _admitted(core.on_public_key("p0", carol.scheme, carol.public_key, NOW))

    assert sorted(order) == sorted(v.id for v in dag)
    position = {vertex_id: i for i, vertex_id in enumerate(order)}
    for vertex in dag:
        for parent in vertex.parents:
            if parent != genesis.id:
                assert position[parent] < position[vertex.id]
    stats = core.stats()
    assert stats.orphans == 0
    assert stats.pending_fetches == 0


def test_buffered_parent_is_not_requested_again(genesis):
    carol = seeded_key("carol")
    core = _admission(genesis, fetch_interval=1.0)
    parent = child(carol, [genesis], 1)
    kid = child(ALICE, [parent], 2)
    assert core.on_vertex("p", kid, NOW) == [RequestVertices("p", (parent.id,))]
    # The parent arrives but waits for its author's key.
    assert core.on_vertex("p", parent, NOW) == [RequestKey("p", carol.key_id)]
    repeats = core.on_tick(NOW + 5)
    assert repeats == [RequestKey("p", carol.key_id)]
    actions = core.on_public_key("p", carol.scheme, carol.public_key, NOW + 6)
    assert _admitted(actions) == [parent.id, kid.id]
