"""Crash-safe storage of vertices, consensus decisions and public keys.

The store is one SQLite database (``dag.sqlite3`` in the node's data
directory) in WAL mode. ``Store.write`` puts a batch of vertices and the
decisions that accept or reject vertices into one transaction, so a vertex
and its acceptance land together and a batch costs one commit, not one per
vertex.

Durability: a vertex is *reported accepted* only after the ``write`` (or
``record_decisions``) call that accepted it has returned. With the default
``synchronous="NORMAL"`` in WAL mode, SQLite has then written the commit to
the WAL file, so it survives the process being killed (kill -9) at any
moment. It may not survive a power cut or an OS crash, because in this mode
SQLite syncs the WAL only at checkpoints; the database stays consistent but
the last commits may be lost. ``synchronous="FULL"`` syncs on every commit
and closes that gap at the cost of one fsync per batch.

Invariants, enforced on every write:

- A vertex is stored only after all its parents (insertion order is a
  topological order). The genesis of the store's network is the only root.
- A vertex is accepted only if all its parents are accepted, and a decision
  is final: accepted never becomes rejected, or the reverse.

Opening checks the store (``Store.open``): the schema version, the network
and its genesis, that the parents of the most recent vertices are present
and that their accepted vertices have accepted parents, and, for a random
sample of rows, that the stored bytes decode and hash to their id. A failure
raises ``StoreCorrupted`` naming the file and the ways to recover; a damaged
store is never replaced by an empty one silently. ``Store.verify`` checks
every row, and ``rebuild`` copies what is intact into a new file.

A new store is built under a temporary name and renamed into place, so any
existing ``dag.sqlite3`` is an initialized store, and a file without the
schema is damage, not a fresh start.

Public API:
    ``Store.open(path, *, network: str | None = None, create: bool = True,
    synchronous: str = "NORMAL", sample_size: int = 64,
    rng: random.Random | None = None, quick_check: bool = False) -> Store``
    ``.write(vertices=(), accepted_ids=(), rejected_ids=()) -> None``
    ``.put_vertices(vertices) -> None``,
    ``.record_decisions(accepted_ids, rejected_ids=()) -> None``
    ``.get(vertex_id) -> Vertex | None``, ``.has(vertex_id) -> bool``,
    ``.status(vertex_id) -> VertexStatus | None``,
    ``.tail(n: int) -> list[Vertex]``, ``.accepted_ids() -> list[bytes]``,
    ``.accepted_after(cursor: int, limit: int) -> list[tuple[int, bytes]]``,
    ``.processing() -> list[Vertex]``, ``.counts() -> dict[VertexStatus, int]``
    ``.put_public_key(key: PublicKey) -> None``,
    ``.get_public_key(key_id) -> PublicKey | None``,
    ``.public_keys() -> list[PublicKey]``
    ``.verify() -> VerifyReport``, ``.close()``; ``.path``, ``.network``,
    ``.genesis_id``
    ``rebuild(path, *, network: str | None = None) -> RebuildReport``
    ``verify_file(path) -> VerifyReport`` (no open check, for damaged files);
    these three run the code in ``dag.repair``
    ``resolve_path(path) -> Path``, ``DEFAULT_FILENAME``
    Errors: ``StoreError(DagError)``, ``StoreCorrupted(StoreError)``.
"""

from __future__ import annotations

import enum
import os
import random
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Final, Self

from dag import DagError, codec
from dag.keys import InvalidKey, PublicKey
from dag.vertex import Vertex, genesis_vertex

if TYPE_CHECKING:
    from dag.repair import RebuildReport, VerifyReport

DEFAULT_FILENAME: Final = "dag.sqlite3"
SCHEMA_VERSION: Final = 1
# Recent rows whose parents and decisions are checked on every open; the
# full check is ``verify``.
RECENT_CHECK_ROWS: Final = 256

_SCHEMA: Final = """
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE vertices (
    seq INTEGER PRIMARY KEY,
    id BLOB NOT NULL UNIQUE,
    data BLOB NOT NULL,
    status INTEGER NOT NULL DEFAULT 0,
    decided_seq INTEGER
);
CREATE INDEX vertices_status ON vertices (status, decided_seq);
CREATE TABLE edges (
    child BLOB NOT NULL,
    parent BLOB NOT NULL,
    PRIMARY KEY (child, parent)
) WITHOUT ROWID;
CREATE INDEX edges_parent ON edges (parent);
CREATE TABLE public_keys (
    key_id BLOB PRIMARY KEY,
    scheme TEXT NOT NULL,
    public_key BLOB NOT NULL
) WITHOUT ROWID;
"""


class StoreError(DagError):
    """Raised when a store operation breaks an invariant or cannot run."""


class StoreCorrupted(StoreError):
    """Raised when the store file is damaged; the message explains the recovery."""

    def __init__(self, path: Path, detail: str) -> None:
        self.path = path
        self.detail = detail
        data_dir = path.parent
        super().__init__(
            f"DAG store {path} is damaged: {detail}. Nothing was changed. "
            f"Run `synaptic-mesh dag verify --data-dir {data_dir}` for a full "
            f"report, then either `synaptic-mesh dag verify --data-dir {data_dir} "
            "--rebuild` to keep the intact vertices (the damaged file is kept "
            f"beside it), or move {path.name} aside so the node starts from the "
            "genesis; in both cases the node resyncs the rest from its peers."
        )


class VertexStatus(enum.StrEnum):
    """Consensus state of a stored vertex."""

    PROCESSING = "processing"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


_STATUS_CODES: Final = {
    VertexStatus.PROCESSING: 0,
    VertexStatus.ACCEPTED: 1,
    VertexStatus.REJECTED: 2,
}
_STATUS_BY_CODE: Final = {code: status for status, code in _STATUS_CODES.items()}
_ACCEPTED: Final = _STATUS_CODES[VertexStatus.ACCEPTED]
_REJECTED: Final = _STATUS_CODES[VertexStatus.REJECTED]
_PROCESSING: Final = _STATUS_CODES[VertexStatus.PROCESSING]


def resolve_path(path: str | os.PathLike[str]) -> Path:
    """Return the database file for a data directory or a file path."""
    path = Path(path)
    return path / DEFAULT_FILENAME if path.is_dir() else path


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    # isolation_level=None: transactions are opened explicitly in `_transaction`.
    # check_same_thread=False lets the trio shell run store calls in a worker
    # thread; the caller must still use one thread at a time.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


class Store:
    """An open DAG store; create it with ``Store.open``."""

    def __init__(
        self, conn: sqlite3.Connection, path: Path, network: str, genesis_id: bytes
    ) -> None:
        self._conn = conn
        self.path = path
        self.network = network
        self.genesis_id = genesis_id

    # -- opening -------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        network: str | None = None,
        create: bool = True,
        synchronous: str = "NORMAL",
        sample_size: int = 64,
        rng: random.Random | None = None,
        quick_check: bool = False,
    ) -> Store:
        """Open the store at ``path`` (a data directory or a file), checking it.

        Args:
            path: data directory (the file is ``dag.sqlite3`` in it) or file.
            network: the network name; required to create a store, and an
                existing store of another network raises ``StoreError``.
            create: create the store if the file does not exist.
            synchronous: ``"NORMAL"`` (survives kill -9) or ``"FULL"``
                (also survives power loss); see the module docstring.
            sample_size: rows whose id is recomputed during the open check.
            rng: picks the sampled rows; default seeded from the OS.
            quick_check: also run SQLite's ``PRAGMA quick_check``, which reads
                every page (about 2 ms for 3,000 vertices) and finds damage
                that the sampled rows miss; the daemon turns it on at start.

        Raises:
            StoreCorrupted: the file exists but fails the open check.
            StoreError: the file is missing and ``create`` is false, the
                network differs, or the schema is newer than this program.
        """
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous={synchronous!r} must be NORMAL or FULL")
        path = resolve_path(path)
        if not path.exists():
            wal = path.with_name(path.name + "-wal")
            if wal.exists():
                raise StoreCorrupted(path, f"the file is missing but {wal.name} exists")
            if not create:
                raise StoreError(f"DAG store {path} does not exist")
            if network is None:
                raise StoreError(f"cannot create DAG store {path} without a network")
            if not path.parent.is_dir():
                raise StoreError(
                    f"cannot create DAG store {path}: directory {path.parent} "
                    "does not exist"
                )
            _create(path, network)
        try:
            conn = _connect(path, synchronous)
        except sqlite3.Error as exc:
            raise StoreCorrupted(path, f"SQLite cannot open it ({exc})") from None
        try:
            if quick_check:
                _quick_check(conn, path)
            store = cls._check_open(conn, path, network, sample_size, rng)
        except BaseException:
            conn.close()
            raise
        return store

    @classmethod
    def _check_open(
        cls,
        conn: sqlite3.Connection,
        path: Path,
        network: str | None,
        sample_size: int,
        rng: random.Random | None,
    ) -> Store:
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta"))
        except sqlite3.Error as exc:
            raise StoreCorrupted(path, f"the schema is unreadable ({exc})") from None

        version = meta.get("schema_version")
        if version is None or not version.isdigit():
            raise StoreCorrupted(path, "the schema version is missing")
        if int(version) > SCHEMA_VERSION:
            raise StoreError(
                f"DAG store {path} has schema version {version}; this program "
                f"reads version {SCHEMA_VERSION}, upgrade it"
            )
        if int(version) != SCHEMA_VERSION:
            raise StoreCorrupted(path, f"unknown schema version {version}")

        stored_network = meta.get("network")
        if not stored_network:
            raise StoreCorrupted(path, "the network name is missing")
        if network is not None and network != stored_network:
            raise StoreError(
                f"DAG store {path} belongs to network {stored_network!r}, "
                f"not {network!r}; use another data directory"
            )

        genesis = genesis_vertex(stored_network)
        store = cls(conn, path, stored_network, genesis.id)
        try:
            problems = store._open_problems(sample_size, rng or random.Random())
        except sqlite3.DatabaseError as exc:
            raise StoreCorrupted(path, f"SQLite reports {exc}") from None
        if problems:
            raise StoreCorrupted(path, "; ".join(problems[:3]))
        return store

    def _open_problems(self, sample_size: int, rng: random.Random) -> list[str]:
        problems: list[str] = []
        row = self._conn.execute(
            "SELECT status FROM vertices WHERE id = ?", (self.genesis_id,)
        ).fetchone()
        if row is None or row[0] != _ACCEPTED:
            problems.append("the genesis vertex is missing or not accepted")
        problems.extend(self._recent_problems(RECENT_CHECK_ROWS))
        max_seq = self._conn.execute("SELECT max(seq) FROM vertices").fetchone()[0]
        for _ in range(sample_size if max_seq else 0):
            row = self._conn.execute(
                "SELECT seq, id, data FROM vertices WHERE seq >= ? ORDER BY seq LIMIT 1",
                (rng.randint(1, max_seq),),
            ).fetchone()
            problem = _row_problem(*row)
            if problem:
                problems.append(problem)
                break
        return problems

    def _recent_problems(self, rows: int) -> list[str]:
        """Check that recent vertices have their parents and decided ancestry."""
        recent = "SELECT id, status FROM vertices ORDER BY seq DESC LIMIT ?"
        missing = self._conn.execute(
            f"SELECT r.id, e.parent FROM ({recent}) r JOIN edges e ON e.child = r.id "
            "LEFT JOIN vertices p ON p.id = e.parent WHERE p.id IS NULL LIMIT 1",
            (rows,),
        ).fetchone()
        problems = []
        if missing:
            problems.append(
                f"vertex {missing[0].hex()} has missing parent {missing[1].hex()}"
            )
        undecided = self._conn.execute(
            f"SELECT r.id, e.parent FROM ({recent}) r JOIN edges e ON e.child = r.id "
            "JOIN vertices p ON p.id = e.parent WHERE r.status = ? AND p.status != ? "
            "LIMIT 1",
            (rows, _ACCEPTED, _ACCEPTED),
        ).fetchone()
        if undecided:
            problems.append(
                f"accepted vertex {undecided[0].hex()} has parent "
                f"{undecided[1].hex()} that is not accepted"
            )
        return problems

    def close(self) -> None:
        """Close the database; the WAL is checkpointed by SQLite on close."""
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def write(
        self,
        vertices: Iterable[Vertex] = (),
        accepted_ids: Iterable[bytes] = (),
        rejected_ids: Iterable[bytes] = (),
    ) -> None:
        """Store vertices and record decisions in one transaction.

        Vertices already stored are skipped. Accepted ids are applied in the
        given order, so a batch that accepts a chain lists parents first. When
        this returns, the batch is committed (see the module docstring for
        what survives which crash); on an exception nothing of it is.

        Raises:
            StoreError: a parent is missing, an accepted vertex has a parent
                that is not accepted, a decided id is not stored, or a
                decision contradicts an earlier one.
        """
        vertices = list(vertices)
        accepted_ids = list(accepted_ids)
        rejected_ids = list(rejected_ids)
        with self._transaction() as conn:
            self._insert(conn, vertices)
            self._decide(conn, accepted_ids, rejected_ids)

    def put_vertices(self, vertices: Iterable[Vertex]) -> None:
        """Store vertices (status processing) in one transaction."""
        self.write(vertices=vertices)

    def record_decisions(
        self, accepted_ids: Iterable[bytes], rejected_ids: Iterable[bytes] = ()
    ) -> None:
        """Record consensus decisions in one transaction."""
        self.write(accepted_ids=accepted_ids, rejected_ids=rejected_ids)

    def _insert(self, conn: sqlite3.Connection, vertices: list[Vertex]) -> None:
        batch: set[bytes] = set()
        rows = []
        edges = []
        for vertex in vertices:
            if vertex.id in batch or self._has(conn, vertex.id):
                continue
            if not vertex.parents:
                raise StoreError(
                    f"vertex {vertex.id.hex()} has no parents and is not the "
                    f"genesis of network {self.network!r}"
                )
            for parent in vertex.parents:
                if parent not in batch and not self._has(conn, parent):
                    raise StoreError(
                        f"vertex {vertex.id.hex()} names parent {parent.hex()}, "
                        "which is not stored; store parents first"
                    )
            batch.add(vertex.id)
            rows.append((vertex.id, codec.encode_vertex(vertex)))
            edges.extend((vertex.id, parent) for parent in vertex.parents)
        conn.executemany("INSERT INTO vertices (id, data) VALUES (?, ?)", rows)
        conn.executemany("INSERT INTO edges (child, parent) VALUES (?, ?)", edges)

    @staticmethod
    def _has(conn: sqlite3.Connection, vertex_id: bytes) -> bool:
        found = conn.execute("SELECT 1 FROM vertices WHERE id = ?", (vertex_id,))
        return found.fetchone() is not None

    def _decide(
        self, conn: sqlite3.Connection, accepted: list[bytes], rejected: list[bytes]
    ) -> None:
        if not accepted and not rejected:
            return
        next_seq = conn.execute(
            "SELECT coalesce(max(decided_seq), 0) + 1 FROM vertices"
        ).fetchone()[0]
        for vertex_id in accepted:
            status = self._status_code(conn, vertex_id)
            if status == _ACCEPTED:
                continue
            if status == _REJECTED:
                raise StoreError(f"vertex {vertex_id.hex()} is rejected, cannot accept")
            blocker = conn.execute(
                "SELECT e.parent FROM edges e JOIN vertices p ON p.id = e.parent "
                "WHERE e.child = ? AND p.status != ? LIMIT 1",
                (vertex_id, _ACCEPTED),
            ).fetchone()
            if blocker:
                raise StoreError(
                    f"cannot accept vertex {vertex_id.hex()} before its parent "
                    f"{blocker[0].hex()}"
                )
            conn.execute(
                "UPDATE vertices SET status = ?, decided_seq = ? WHERE id = ?",
                (_ACCEPTED, next_seq, vertex_id),
            )
            next_seq += 1
        for vertex_id in rejected:
            status = self._status_code(conn, vertex_id)
            if status == _REJECTED:
                continue
            if status == _ACCEPTED:
                raise StoreError(f"vertex {vertex_id.hex()} is accepted, cannot reject")
            conn.execute(
                "UPDATE vertices SET status = ?, decided_seq = ? WHERE id = ?",
                (_REJECTED, next_seq, vertex_id),
            )
            next_seq += 1

    @staticmethod
    def _status_code(conn: sqlite3.Connection, vertex_id: bytes) -> int:
        row = conn.execute(
            "SELECT status FROM vertices WHERE id = ?", (vertex_id,)
        ).fetchone()
        if row is None:
            raise StoreError(f"cannot decide vertex {vertex_id.hex()}: not stored")
        return row[0]

    def put_public_key(self, key: PublicKey) -> None:
        """Store an author's public key (a no-op if it is already stored)."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO public_keys (key_id, scheme, public_key) "
                "VALUES (?, ?, ?)",
                (key.key_id, key.scheme, key.key),
            )

    # -- reading ---------------------------------------------------------------------

    def _decode(self, vertex_id: bytes, data: bytes) -> Vertex:
        try:
            vertex = codec.decode_vertex(data)
        except codec.DecodeError as exc:
            raise StoreCorrupted(
                self.path, f"vertex {vertex_id.hex()} does not decode ({exc})"
            ) from None
        if vertex.id != vertex_id:
            raise StoreCorrupted(
                self.path, f"vertex stored as {vertex_id.hex()} hashes to another id"
            )
        return vertex

    def get(self, vertex_id: bytes) -> Vertex | None:
        """Return the stored vertex, or None."""
        row = self._conn.execute(
            "SELECT data FROM vertices WHERE id = ?", (vertex_id,)
        ).fetchone()
        return None if row is None else self._decode(vertex_id, row[0])

    def has(self, vertex_id: bytes) -> bool:
        """Return whether the vertex is stored."""
        return self._has(self._conn, vertex_id)

    def status(self, vertex_id: bytes) -> VertexStatus | None:
        """Return the vertex's consensus state, or None if it is not stored."""
        row = self._conn.execute(
            "SELECT status FROM vertices WHERE id = ?", (vertex_id,)
        ).fetchone()
        return None if row is None else _STATUS_BY_CODE[row[0]]

    def tail(self, n: int) -> list[Vertex]:
        """Return the ``n`` most recently stored vertices, oldest first."""
        rows = self._conn.execute(
            "SELECT id, data FROM vertices ORDER BY seq DESC LIMIT ?", (n,)
        ).fetchall()
        return [self._decode(vertex_id, data) for vertex_id, data in reversed(rows)]

    def accepted_ids(self) -> list[bytes]:
        """Return the ids of accepted vertices in acceptance order, genesis first."""
        rows = self._conn.execute(
            "SELECT id FROM vertices WHERE status = ? ORDER BY decided_seq",
            (_ACCEPTED,),
        )
        return [row[0] for row in rows]

    def accepted_after(self, cursor: int, limit: int) -> list[tuple[int, bytes]]:
        """Return up to `limit` accepted ``(position, id)`` pairs after `cursor`.

        Positions grow in acceptance order, so parents come before children
        and a reader pages through every accepted vertex by passing the last
        position it saw. The genesis has position 0 and is never returned.
        """
        rows = self._conn.execute(
            "SELECT decided_seq, id FROM vertices WHERE status = ? AND decided_seq > ? "
            "ORDER BY decided_seq LIMIT ?",
            (_ACCEPTED, cursor, limit),
        )
        return [(seq, vertex_id) for seq, vertex_id in rows]

    def processing(self) -> list[Vertex]:
        """Return undecided vertices in storage (topological) order.

        The daemon feeds these back to consensus after a restart.
        """
        rows = self._conn.execute(
            "SELECT id, data FROM vertices WHERE status = ? ORDER BY seq",
            (_PROCESSING,),
        ).fetchall()
        return [self._decode(vertex_id, data) for vertex_id, data in rows]

    def counts(self) -> dict[VertexStatus, int]:
        """Return the number of stored vertices in each state."""
        counts = dict.fromkeys(VertexStatus, 0)
        rows = self._conn.execute("SELECT status, count(*) FROM vertices GROUP BY 1")
        for code, count in rows:
            counts[_STATUS_BY_CODE[code]] = count
        return counts

    def get_public_key(self, key_id: bytes) -> PublicKey | None:
        """Return the stored public key with this id, or None."""
        row = self._conn.execute(
            "SELECT scheme, public_key FROM public_keys WHERE key_id = ?", (key_id,)
        ).fetchone()
        return None if row is None else self._parse_key(key_id, *row)

    def public_keys(self) -> list[PublicKey]:
        """Return every stored public key (to preload admission at startup)."""
        rows = self._conn.execute("SELECT key_id, scheme, public_key FROM public_keys")
        return [self._parse_key(*row) for row in rows]

    def _parse_key(self, key_id: bytes, scheme: str, data: bytes) -> PublicKey:
        try:
            key = PublicKey.from_bytes(scheme, data)
        except InvalidKey as exc:
            raise StoreCorrupted(
                self.path, f"stored key {key_id.hex()}: {exc}"
            ) from None
        if key.key_id != key_id:
            raise StoreCorrupted(self.path, f"stored key {key_id.hex()} has another id")
        return key

    # -- checking ----------------------------------------------------------------------

    def verify(self) -> VerifyReport:
        """Check every row: SQLite integrity, ids, edges, ancestry, decisions."""
        from dag.repair import verify_store

        return verify_store(self)


def verify_file(path: str | os.PathLike[str]) -> VerifyReport:
    """Check a store file fully without opening it; see ``dag.repair``."""
    from dag.repair import verify_file as verify

    return verify(path)


def rebuild(
    path: str | os.PathLike[str], *, network: str | None = None
) -> RebuildReport:
    """Copy the intact part of a damaged store into a new file; see ``dag.repair``."""
    from dag.repair import rebuild as rebuild_store

    return rebuild_store(path, network=network)


def _quick_check(conn: sqlite3.Connection, path: Path) -> None:
    try:
        rows = conn.execute("PRAGMA quick_check(3)").fetchall()
    except sqlite3.DatabaseError as exc:
        raise StoreCorrupted(path, f"SQLite reports {exc}") from None
    if rows != [("ok",)]:
        detail = "; ".join(str(row[0]) for row in rows)
        raise StoreCorrupted(path, f"SQLite quick_check reports {detail}")


def _row_problem(seq: int, vertex_id: bytes, data: bytes) -> str | None:
    """Return what is wrong with one stored row, or None if it is intact."""
    # Damaged pages can turn a NOT NULL BLOB into NULL, an integer or text.
    if not isinstance(vertex_id, bytes) or not isinstance(data, bytes):
        return f"row {seq} has a damaged id or data column"
    try:
        vertex = codec.decode_vertex(data)
    except codec.DecodeError as exc:
        return f"row {seq} (vertex {vertex_id.hex()}) does not decode: {exc}"
    if vertex.id != vertex_id:
        return (
            f"row {seq} is stored as {vertex_id.hex()} but hashes to {vertex.id.hex()}"
        )
    return None


def _create(path: Path, network: str) -> None:
    """Build a new store under a temporary name and rename it into place."""
    genesis = genesis_vertex(network)
    # A crash during an earlier creation can leave temporary files; they
    # never hold accepted data, because nothing is accepted before the rename.
    for leftover in path.parent.glob(f".{path.name}.creating*"):
        leftover.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.creating{os.getpid()}")
    conn = _connect(tmp, "FULL")
    try:
        conn.execute("BEGIN IMMEDIATE")
        # executescript() would commit first, so run the statements one by one.
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [
                ("schema_version", str(SCHEMA_VERSION)),
                ("network", network),
                ("genesis_id", genesis.id.hex()),
                ("created_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
            ],
        )
        conn.execute(
            "INSERT INTO vertices (id, data, status, decided_seq) VALUES (?, ?, ?, 0)",
            (genesis.id, codec.encode_vertex(genesis), _ACCEPTED),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
