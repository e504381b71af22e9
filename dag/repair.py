"""Full checks and repair of a DAG store file.

``verify_store`` reads every row of an open store; ``verify_file`` does the
same for a file that may be too damaged to open, and ``rebuild`` copies the
intact part of a damaged store into a new file. ``Store.verify``,
``dag.store.verify_file`` and ``dag.store.rebuild`` call these.

Public API:
    ``verify_store(store: Store) -> VerifyReport``
    ``verify_file(path) -> VerifyReport``
    ``rebuild(path, *, network: str | None = None) -> RebuildReport``
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from dag import codec
from dag.store import (
    _ACCEPTED,
    _REJECTED,
    SCHEMA_VERSION,
    Store,
    StoreError,
    _create,
    _fsync_dir,
    _row_problem,
    resolve_path,
)
from dag.vertex import Vertex, genesis_vertex

_MAX_PROBLEMS: Final = 100


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """Result of a full store check; ``problems`` lists at most 100."""

    path: Path
    ok: bool
    vertices: int
    counts: dict[str, int]
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RebuildReport:
    """Result of ``rebuild``: rows kept and dropped, and where the old file went.

    ``kept`` and ``accepted`` count every vertex of the new store, genesis
    included, so they match what ``verify_file`` reports for it afterwards;
    ``kept + dropped`` is the number of rows the old file held.
    """

    path: Path
    damaged_copy: Path
    kept: int
    dropped: int
    accepted: int


def verify_store(store: Store) -> VerifyReport:
    """Check every row of ``store``: SQLite integrity, ids, edges, ancestry, decisions."""
    problems: list[str] = []
    counts: dict[str, int] = {}
    try:
        for (message,) in store._conn.execute("PRAGMA integrity_check(20)"):
            if message != "ok":
                problems.append(f"SQLite integrity: {message}")
        problems.extend(_row_problems(store))
        counts = {str(status): count for status, count in store.counts().items()}
    except sqlite3.DatabaseError as exc:
        problems.append(f"SQLite reports {exc}")
    return VerifyReport(
        path=store.path,
        ok=not problems,
        vertices=sum(counts.values()),
        counts=counts,
        problems=problems[:_MAX_PROBLEMS],
    )


def _row_problems(store: Store) -> Iterator[str]:
    conn = store._conn
    version = conn.execute(
        "SELECT value FROM meta WHERE key = 'schema_version'"
    ).fetchone()
    if version is None or version[0] != str(SCHEMA_VERSION):
        yield f"schema version is {version and version[0]!r}, not {SCHEMA_VERSION}"
    row = conn.execute(
        "SELECT status FROM vertices WHERE id = ?", (store.genesis_id,)
    ).fetchone()
    if row is None or row[0] != _ACCEPTED:
        yield "the genesis vertex is missing or not accepted"
    found = 0
    for seq, vertex_id, data in conn.execute(
        "SELECT seq, id, data FROM vertices ORDER BY seq"
    ):
        problem = _row_problem(seq, vertex_id, data)
        if problem is None:
            problem = _edge_problem(store, vertex_id, codec.decode_vertex(data))
        if problem:
            yield problem
            found += 1
            if found >= _MAX_PROBLEMS:
                return
    for child, parent in conn.execute(
        "SELECT e.child, e.parent FROM edges e LEFT JOIN vertices p "
        "ON p.id = e.parent WHERE p.id IS NULL LIMIT ?",
        (_MAX_PROBLEMS,),
    ):
        yield f"vertex {child.hex()} has missing parent {parent.hex()}"
    for child, parent in conn.execute(
        "SELECT c.id, p.id FROM vertices c JOIN edges e ON e.child = c.id "
        "JOIN vertices p ON p.id = e.parent WHERE c.status = ? AND p.status != ? "
        "LIMIT ?",
        (_ACCEPTED, _ACCEPTED, _MAX_PROBLEMS),
    ):
        yield f"accepted vertex {child.hex()} has unaccepted parent {parent.hex()}"
    for child, parent in conn.execute(
        "SELECT c.id, p.id FROM vertices c JOIN edges e ON e.child = c.id "
        "JOIN vertices p ON p.id = e.parent WHERE p.seq > c.seq LIMIT ?",
        (_MAX_PROBLEMS,),
    ):
        yield f"vertex {child.hex()} is stored before its parent {parent.hex()}"


def _edge_problem(store: Store, vertex_id: bytes, vertex: Vertex) -> str | None:
    stored = {
        row[0]
        for row in store._conn.execute(
            "SELECT parent FROM edges WHERE child = ?", (vertex_id,)
        )
    }
    if stored != set(vertex.parents):
        return f"vertex {vertex_id.hex()} has edges that differ from its parents"
    return None


def verify_file(path: str | os.PathLike[str]) -> VerifyReport:
    """Check a store file fully, without the open check that would raise.

    A file that SQLite cannot read, or that has no readable network name,
    gives a report listing that problem rather than an exception.

    Raises:
        StoreError: the file does not exist.
    """
    path = resolve_path(path)
    if not path.exists():
        raise StoreError(f"DAG store {path} does not exist")
    empty = VerifyReport(path=path, ok=False, vertices=0, counts={})
    try:
        conn = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        empty.problems.append(f"SQLite cannot open it: {exc}")
        return empty
    try:
        network = _read_network(conn)
        if network is None:
            empty.problems.append("the meta table or the network name is unreadable")
            return empty
        return verify_store(Store(conn, path, network, genesis_vertex(network).id))
    except sqlite3.DatabaseError as exc:
        empty.problems.append(f"SQLite reports {exc}")
        return empty
    finally:
        conn.close()


def rebuild(
    path: str | os.PathLike[str], *, network: str | None = None
) -> RebuildReport:
    """Copy the intact part of a damaged store into a new file and swap it in.

    A row is kept if it decodes, hashes to its id and all its parents were
    kept; rows are read in storage order, which is topological. A decision
    is kept if it is still valid (an acceptance needs accepted parents),
    otherwise the vertex goes back to processing. The old file is renamed to
    ``<name>.damaged-<UTC time>`` beside the new one.

    Raises:
        StoreError: the network is neither given nor readable from the file.
    """
    path = resolve_path(path)
    old = sqlite3.connect(path, isolation_level=None)
    try:
        network = network or _read_network(old)
        if network is None:
            raise StoreError(
                f"cannot read the network name from {path}; pass it explicitly"
            )
        new_path = path.with_name(f".{path.name}.rebuilding{os.getpid()}")
        new_path.unlink(missing_ok=True)
        _create(new_path, network)
        with Store.open(new_path, network=network, sample_size=0) as new:
            kept, dropped, decisions = _copy_rows(old, new)
            accepted = _copy_decisions(new, decisions)
    finally:
        old.close()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    damaged = path.with_name(f"{path.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            os.replace(source, damaged.with_name(damaged.name + suffix))
    os.replace(new_path, path)
    _fsync_dir(path.parent)
    return RebuildReport(path, damaged, kept, dropped, accepted)


def _read_network(conn: sqlite3.Connection) -> str | None:
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'network'").fetchone()
    except sqlite3.DatabaseError:
        return None
    return row[0] if row else None


_Decision = tuple[int, bytes, int, tuple[bytes, ...]]


def _copy_rows(old: sqlite3.Connection, new: Store) -> tuple[int, int, list[_Decision]]:
    """Copy intact rows; return kept and dropped counts and the old decisions.

    The genesis vertex counts as kept because the new store always contains it.
    """
    kept = 1
    dropped = 0
    try:
        (total,) = old.execute("SELECT COUNT(*) FROM vertices").fetchone()
    except sqlite3.DatabaseError:
        total = None
    kept_ids = {new.genesis_id}
    decisions: list[_Decision] = []
    batch: list[Vertex] = []
    try:
        rows = old.execute(
            "SELECT seq, id, data, status, decided_seq FROM vertices ORDER BY seq"
        )
        for seq, vertex_id, data, status, decided_seq in rows:
            if vertex_id == new.genesis_id:
                continue
            if _row_problem(seq, vertex_id, data) is not None:
                dropped += 1
                continue
            vertex = codec.decode_vertex(data)
            if not vertex.parents or not kept_ids.issuperset(vertex.parents):
                dropped += 1
                continue
            kept_ids.add(vertex_id)
            batch.append(vertex)
            kept += 1
            if status in (_ACCEPTED, _REJECTED) and decided_seq is not None:
                decisions.append((decided_seq, vertex_id, status, vertex.parents))
            if len(batch) >= 500:
                new.put_vertices(batch)
                batch.clear()
    except sqlite3.DatabaseError:
        # The scan stops at the first unreadable page; later rows are lost
        # here and come back from peers.
        if total is not None:
            dropped = max(dropped, total - kept)
    new.put_vertices(batch)
    return kept, dropped, decisions


def _copy_decisions(new: Store, decisions: list[_Decision]) -> int:
    """Re-apply old decisions, skipping invalid ones; return accepted, genesis too."""
    accepted_set = {new.genesis_id}
    accepted: list[bytes] = []
    rejected: list[bytes] = []
    for _, vertex_id, status, parents in sorted(decisions):
        if status == _REJECTED:
            rejected.append(vertex_id)
        elif accepted_set.issuperset(parents):
            accepted_set.add(vertex_id)
            accepted.append(vertex_id)
    new.record_decisions(accepted, rejected)
    return 1 + len(accepted)
