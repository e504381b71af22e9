"""DAG storage and admission bench: our paths against plain baselines.

Every figure is measured side by side with a baseline in the same run:

- store: vertices per second written with acceptance through ``Store.write``
  in batches, against one transaction per vertex (the fsync-per-vertex
  design), each with ``synchronous=NORMAL`` and ``FULL``;
- decode: ``dag.codec.decode_vertex`` (limits, shape and canonical-form
  checks) against a bare ``msgpack.unpackb`` of the same bytes;
- admission: ``Admission.on_vertices`` on a shuffled DAG (signature checks,
  orphan buffering, topological release) against verifying the same
  signatures alone, for Ed25519 and ML-DSA-65;
- duplicates: a second delivery of every vertex, against the first.

The result goes to the ``dag-store`` section of docs/benchmarks.md.

Usage: ``python -m bench.dag_store [--vertices N] [--batch B] [--no-write]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import time

import msgpack

from bench.report import write_section
from dag import codec
from dag.admission import Admission, AdmissionParams, Admitted
from dag.keys import SigningKey
from dag.store import Store
from dag.vertex import Vertex, create_vertex, genesis_vertex, signing_message

NETWORK = "bench"
NOW = 1_700_000_000.0


def _dag(key: SigningKey, size: int, rng: random.Random) -> list[Vertex]:
    """Build a DAG in which each vertex names up to 3 of the last 10 vertices."""
    genesis = genesis_vertex(NETWORK)
    recent = [genesis.id]
    vertices = []
    for n in range(size):
        parents = rng.sample(recent, k=min(len(recent), rng.randint(1, 3)))
        vertex = create_vertex(
            key, parents, "bench.note", {"n": n, "blob": b"x" * 100}, (), 1_000 + n
        )
        vertices.append(vertex)
        recent = (recent + [vertex.id])[-10:]
    return vertices


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def bench_store(vertices: list[Vertex], batch: int, sync: str) -> tuple[float, float]:
    """Return vertices/s for batched writes and for one transaction per vertex."""
    results = []
    for size in (batch, 1):
        with tempfile.TemporaryDirectory() as tmp:
            store = Store.open(tmp, network=NETWORK, synchronous=sync)
            start = time.perf_counter()
            for i in range(0, len(vertices), size):
                chunk = vertices[i : i + size]
                store.write(chunk, accepted_ids=[v.id for v in chunk])
            results.append(_rate(len(vertices), time.perf_counter() - start))
            store.close()
    return results[0], results[1]


def bench_decode(vertices: list[Vertex]) -> tuple[float, float]:
    """Return decodes/s for ``decode_vertex`` and for bare ``msgpack.unpackb``."""
    blobs = [codec.encode_vertex(v) for v in vertices]
    start = time.perf_counter()
    for blob in blobs:
        codec.decode_vertex(blob)
    ours = _rate(len(blobs), time.perf_counter() - start)
    start = time.perf_counter()
    for blob in blobs:
        msgpack.unpackb(blob)
    return ours, _rate(len(blobs), time.perf_counter() - start)


def bench_admission(
    key: SigningKey, vertices: list[Vertex], rng: random.Random
) -> tuple[float, float, float]:
    """Return vertices/s admitted, signatures/s verified alone, duplicates/s."""
    public = key.public()
    genesis = genesis_vertex(NETWORK)
    shuffled = vertices[:]
    rng.shuffle(shuffled)
    # A fully shuffled DAG from one peer leaves up to the whole DAG waiting,
    # so the orphan bounds are raised to its size.
    params = AdmissionParams(
        max_orphans=len(vertices), max_orphans_per_peer=len(vertices)
    )
    core = Admission(params, genesis.id)
    core.add_keys([public])
    start = time.perf_counter()
    admitted = 0
    for i in range(0, len(shuffled), 50):
        actions = core.on_vertices("peer", shuffled[i : i + 50], NOW)
        admitted += sum(isinstance(a, Admitted) for a in actions)
    ours = _rate(len(vertices), time.perf_counter() - start)
    if admitted != len(vertices):
        raise RuntimeError(f"admitted {admitted} of {len(vertices)} vertices")

    messages = [(signing_message(v), v.signature) for v in vertices]
    start = time.perf_counter()
    for message, signature in messages:
        public.verify(message, signature)
    verify_only = _rate(len(vertices), time.perf_counter() - start)

    start = time.perf_counter()
    core.on_vertices("peer", shuffled, NOW)
    duplicates = _rate(len(vertices), time.perf_counter() - start)
    return ours, verify_only, duplicates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vertices", type=int, default=2000, help="DAG size")
    parser.add_argument("--batch", type=int, default=100, help="vertices per commit")
    parser.add_argument("--no-write", action="store_true", help="do not update docs")
    args = parser.parse_args(argv)
    rng = random.Random(1)

    rows = []
    print(f"building DAGs of {args.vertices} vertices", file=sys.stderr)
    keys = {s: SigningKey.from_seed(s, bytes(32)) for s in ("ed25519", "ml-dsa-65")}
    dags = {s: _dag(k, args.vertices, rng) for s, k in keys.items()}

    store_rows = []
    for sync in ("NORMAL", "FULL"):
        print(f"store synchronous={sync}", file=sys.stderr)
        batched, single = bench_store(dags["ml-dsa-65"], args.batch, sync)
        store_rows.append(
            f"| {sync} | {batched:,.0f} | {single:,.0f} | {batched / single:.1f}x |"
        )

    for scheme, dag in dags.items():
        print(f"decode and admission, {scheme}", file=sys.stderr)
        ours, plain = bench_decode(dag)
        admit, verify_only, dup = bench_admission(keys[scheme], dag, rng)
        rows.append(
            f"| {scheme} | {ours:,.0f} | {plain:,.0f} | {ours / plain:.2f} "
            f"| {admit:,.0f} | {verify_only:,.0f} | {admit / verify_only:.2f} "
            f"| {dup:,.0f} |"
        )

    setup = (
        f"`python -m bench.dag_store --vertices {args.vertices} "
        f"--batch {args.batch}` on {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"SQLite in a temporary directory ({tempfile.gettempdir()})."
    )
    store_intro = (
        f"Writes with acceptance, ML-DSA-65 vertices, {args.batch} per "
        "transaction against one transaction per vertex (vertices/s):"
    )
    admission_intro = (
        "Decoding (vertices/s) against bare `msgpack.unpackb`, and admission "
        "of a shuffled DAG (vertices/s) against signature verification alone. "
        "The last column is a second delivery of every vertex:"
    )
    admission_header = (
        "| scheme | decode | unpackb | ratio | admit | verify only | ratio "
        "| duplicates |"
    )
    markdown = "\n".join(
        [
            "## DAG store and admission",
            "",
            setup,
            "",
            store_intro,
            "",
            "| synchronous | batched | per vertex | ratio |",
            "|---|---|---|---|",
            *store_rows,
            "",
            admission_intro,
            "",
            admission_header,
            "|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print(markdown)
    if not args.no_write:
        write_section("dag-store", markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
