"""SQLite store: batched writes, decisions, open checks, verify and rebuild."""

from __future__ import annotations

import random
import sqlite3

import pytest

from dag import codec
from dag.store import (
    DEFAULT_FILENAME,
    Store,
    StoreCorrupted,
    StoreError,
    VertexStatus,
    rebuild,
)
from dag.vertex import Vertex
from tests.dag.helpers import NETWORK, child, seeded_key

KEY = seeded_key("store")


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path, network=NETWORK) as opened:
        yield opened


def _chain(genesis: Vertex, length: int) -> list[Vertex]:
    chain = [child(KEY, [genesis], 0)]
    for n in range(1, length):
        chain.append(child(KEY, [chain[-1]], n))
    return chain


def test_new_store_holds_accepted_genesis(store, genesis, tmp_path):
    assert store.path == tmp_path / DEFAULT_FILENAME
    assert store.genesis_id == genesis.id
    assert store.get(genesis.id) == genesis
    assert store.status(genesis.id) is VertexStatus.ACCEPTED
    assert store.accepted_ids() == [genesis.id]


def test_store_uses_wal(store):
    conn = sqlite3.connect(store.path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_vertices_and_decisions_in_one_write(store, genesis):
    chain = _chain(genesis, 4)
    store.write(chain, accepted_ids=[v.id for v in chain[:2]])
    assert [store.status(v.id) for v in chain] == [
        VertexStatus.ACCEPTED,
        VertexStatus.ACCEPTED,
        VertexStatus.PROCESSING,
        VertexStatus.PROCESSING,
    ]
    assert store.processing() == chain[2:]
    store.record_decisions([chain[2].id], [chain[3].id])
    assert store.accepted_ids() == [genesis.id] + [v.id for v in chain[:3]]
    assert store.status(chain[3].id) is VertexStatus.REJECTED
    assert store.counts() == {
        VertexStatus.PROCESSING: 0,
        VertexStatus.ACCEPTED: 4,
        VertexStatus.REJECTED: 1,
    }


def test_get_has_tail(store, genesis):
    chain = _chain(genesis, 5)
    store.put_vertices(chain)
    assert store.has(chain[3].id)
    assert not store.has(b"\x00" * 32)
    assert store.get(b"\x00" * 32) is None
    assert store.status(b"\x00" * 32) is None
    assert store.get(chain[2].id) == chain[2]
    assert store.tail(2) == chain[3:]
    assert store.tail(100) == [genesis, *chain]


def test_put_is_idempotent(store, genesis):
    chain = _chain(genesis, 2)
    store.put_vertices(chain)
    store.put_vertices(chain + chain)
    assert store.tail(10) == [genesis, *chain]


def test_missing_parent_rolls_back_batch(store, genesis):
    chain = _chain(genesis, 3)
    with pytest.raises(StoreError, match="not stored"):
        store.write([chain[0], chain[2]], accepted_ids=[chain[0].id])
    assert not store.has(chain[0].id)
    assert store.accepted_ids() == [genesis.id]


def test_accept_before_parent_rejected(store, genesis):
    chain = _chain(genesis, 2)
    store.put_vertices(chain)
    with pytest.raises(StoreError, match="before its parent"):
        store.record_decisions([chain[1].id, chain[0].id])
    assert store.status(chain[0].id) is VertexStatus.PROCESSING


def test_decisions_are_final(store, genesis):
    first, second = _chain(genesis, 1)[0], child(KEY, [genesis], 9)
    store.put_vertices([first, second])
    store.record_decisions([first.id], [second.id])
    with pytest.raises(StoreError, match="cannot reject"):
        store.record_decisions([], [first.id])
    with pytest.raises(StoreError, match="cannot accept"):
        store.record_decisions([second.id])
    with pytest.raises(StoreError, match="not stored"):
        store.record_decisions([b"\x01" * 32])
    # Repeating a decision is harmless.
    store.record_decisions([first.id], [second.id])


def test_public_keys_roundtrip(store):
    keys = [seeded_key("k1").public(), seeded_key("k2", "ml-dsa-65").public()]
    for key in keys:
        store.put_public_key(key)
        store.put_public_key(key)
    assert store.get_public_key(keys[1].key_id) == keys[1]
    assert store.get_public_key(b"\x00" * 32) is None
    assert {k.key_id for k in store.public_keys()} == {k.key_id for k in keys}


def test_reopen_keeps_everything(tmp_path, genesis):
    chain = _chain(genesis, 3)
    with Store.open(tmp_path, network=NETWORK) as store:
        store.write(chain, accepted_ids=[chain[0].id])
    with Store.open(tmp_path) as store:
        assert store.network == NETWORK
        assert store.tail(3) == chain
        assert store.status(chain[0].id) is VertexStatus.ACCEPTED


def test_open_other_network_rejected(tmp_path):
    Store.open(tmp_path, network=NETWORK).close()
    with pytest.raises(StoreError, match="belongs to network"):
        Store.open(tmp_path, network="other")


def test_open_missing_without_create(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        Store.open(tmp_path, network=NETWORK, create=False)
    with pytest.raises(StoreError, match="without a network"):
        Store.open(tmp_path)


def _assert_corrupted(path, match: str) -> None:
    with pytest.raises(StoreCorrupted, match=match) as info:
        Store.open(path, network=NETWORK, sample_size=200)
    message = str(info.value)
    assert str(path) in message
    assert "synaptic-mesh dag verify" in message
    assert "resync" in message


def test_garbage_file_is_corrupted(tmp_path):
    path = tmp_path / DEFAULT_FILENAME
    path.write_bytes(b"this is not sqlite" * 100)
    _assert_corrupted(path, "SQLite")
    assert path.read_bytes().startswith(b"this is not sqlite")


def test_empty_file_is_corrupted_not_fresh(tmp_path):
    path = tmp_path / DEFAULT_FILENAME
    path.write_bytes(b"")
    _assert_corrupted(path, "schema")


def test_wal_without_database_is_corrupted(tmp_path):
    path = tmp_path / DEFAULT_FILENAME
    path.with_name(DEFAULT_FILENAME + "-wal").write_bytes(b"x")
    _assert_corrupted(path, "missing")


def _damage(path, sql: str, params=()) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute(sql, params)
        conn.commit()
    finally:
        conn.close()


def _filled(tmp_path, genesis, length=20) -> tuple[Store, list[Vertex]]:
    chain = _chain(genesis, length)
    store = Store.open(tmp_path, network=NETWORK)
    store.write(chain, accepted_ids=[v.id for v in chain[: length // 2]])
    store.close()
    return store, chain


def test_schema_version_checked(tmp_path, genesis):
    store, _ = _filled(tmp_path, genesis)
    _damage(store.path, "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="upgrade"):
        Store.open(tmp_path)
    _damage(store.path, "DELETE FROM meta WHERE key = 'schema_version'")
    _assert_corrupted(store.path, "schema version")


def test_missing_parent_detected_on_open(tmp_path, genesis):
    store, chain = _filled(tmp_path, genesis)
    _damage(store.path, "DELETE FROM vertices WHERE id = ?", (chain[-3].id,))
    _assert_corrupted(store.path, "missing parent")


def test_unaccepted_ancestor_detected_on_open(tmp_path, genesis):
    store, chain = _filled(tmp_path, genesis)
    _damage(store.path, "UPDATE vertices SET status = 0 WHERE id = ?", (chain[2].id,))
    _assert_corrupted(store.path, "not accepted")


def test_wrong_bytes_detected_by_sample(tmp_path, genesis):
    store, chain = _filled(tmp_path, genesis)
    other = codec.encode_vertex(child(KEY, [genesis], 99))
    _damage(
        store.path, "UPDATE vertices SET data = ? WHERE id = ?", (other, chain[5].id)
    )
    _assert_corrupted(store.path, "hashes to")
    _damage(
        store.path, "UPDATE vertices SET data = ? WHERE id = ?", (b"\xc1", chain[5].id)
    )
    _assert_corrupted(store.path, "does not decode")


def test_genesis_missing_detected(tmp_path, genesis):
    store, _ = _filled(tmp_path, genesis, length=2)
    _damage(store.path, "UPDATE vertices SET status = 0 WHERE id = ?", (genesis.id,))
    _assert_corrupted(store.path, "genesis")


def test_truncated_file_is_corrupted(tmp_path, genesis):
    chain = _chain(genesis, 200)
    with Store.open(tmp_path, network=NETWORK) as store:
        store.write(chain, accepted_ids=[v.id for v in chain])
    data = store.path.read_bytes()
    store.path.write_bytes(data[: len(data) // 3])
    with pytest.raises(StoreCorrupted):
        Store.open(tmp_path, network=NETWORK, sample_size=200, rng=random.Random(1))


def test_verify_reports_every_problem(tmp_path, genesis):
    store, chain = _filled(tmp_path, genesis)
    with Store.open(tmp_path) as opened:
        report = opened.verify()
    assert report.ok
    assert report.vertices == 21
    assert report.counts == {"processing": 10, "accepted": 11, "rejected": 0}
    _damage(store.path, "DELETE FROM vertices WHERE id = ?", (chain[3].id,))
    conn = sqlite3.connect(store.path)
    store_view = Store(conn, store.path, NETWORK, genesis.id)
    report = store_view.verify()
    conn.close()
    assert not report.ok
    assert any("missing parent" in problem for problem in report.problems)


def test_rebuild_keeps_intact_prefix(tmp_path, genesis):
    store, chain = _filled(tmp_path, genesis)
    _damage(
        store.path, "UPDATE vertices SET data = ? WHERE id = ?", (b"\xc1", chain[12].id)
    )
    report = rebuild(tmp_path)
    # Genesis counts as kept and accepted: 13 + 8 are the 21 rows stored.
    assert report.kept == 13
    assert report.dropped == 8
    assert report.accepted == 11
    assert report.damaged_copy.exists()
    with Store.open(tmp_path, sample_size=100) as rebuilt:
        assert rebuilt.verify().ok
        assert rebuilt.tail(100) == [genesis, *chain[:12]]
        assert rebuilt.accepted_ids() == [genesis.id] + [v.id for v in chain[:10]]


def test_create_in_missing_directory_rejected(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        Store.open(tmp_path / "absent" / DEFAULT_FILENAME, network=NETWORK)


def test_create_removes_leftover_temporary_files(tmp_path):
    leftover = tmp_path / f".{DEFAULT_FILENAME}.creating12345"
    leftover.write_bytes(b"half-written")
    Store.open(tmp_path, network=NETWORK).close()
    assert not leftover.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def _overwrite_bytes(path, seed: int, spots: int = 4, width: int = 64) -> None:
    rng = random.Random(seed)
    data = bytearray(path.read_bytes())
    for offset in rng.sample(range(len(data) - width), spots):
        data[offset : offset + width] = rng.randbytes(width)
    path.write_bytes(data)


def test_quick_check_finds_overwritten_pages(tmp_path, genesis):
    chain = _chain(genesis, 1000)
    source = tmp_path / "source"
    source.mkdir()
    with Store.open(source, network=NETWORK) as store:
        store.write(chain, accepted_ids=[v.id for v in chain])
    sqlite3.connect(store.path).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
    for seed in range(8):
        copy = tmp_path / f"copy{seed}"
        copy.mkdir()
        target = copy / DEFAULT_FILENAME
        target.write_bytes(store.path.read_bytes())
        _overwrite_bytes(target, seed)
        with pytest.raises(StoreCorrupted) as info:
            Store.open(copy, network=NETWORK, quick_check=True, rng=random.Random(1))
        assert str(target) in str(info.value)
        assert "--rebuild" in str(info.value)


def test_row_with_non_blob_id_is_corrupted(tmp_path, genesis):
    store, chain = _filled(tmp_path, genesis, length=4)
    _damage(store.path, "UPDATE vertices SET id = 'text' WHERE seq = 2")
    _assert_corrupted(store.path, "damaged id or data column")
