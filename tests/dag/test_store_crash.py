"""Kill -9 a process that accepts vertices, 50 times; nothing reported is lost."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dag.store import Store, VertexStatus

REPO = Path(__file__).resolve().parents[2]
KILLS = 50
SEED = 20_261_204
# Each child stops by itself after this many batches if it is never killed.
MAX_BATCHES = 5_000


def _read_lines(stream, lines: list[str]) -> None:
    # Only whole lines count: a line cut by the kill was never fully reported.
    for line in stream:
        if line.endswith("\n"):
            lines.append(line.rstrip("\n"))


def _run_and_kill(db: Path, seed: int, delay: float, before_ready: bool) -> list[str]:
    """Start a child, SIGKILL it ``delay`` seconds after start or ready."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.dag.crash_child",
            str(db),
            str(seed),
            str(MAX_BATCHES),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    lines: list[str] = []
    reader = threading.Thread(target=_read_lines, args=(child.stdout, lines))
    reader.start()
    try:
        if not before_ready:
            deadline = time.monotonic() + 20
            while not lines and time.monotonic() < deadline and child.poll() is None:
                time.sleep(0.005)
            assert lines[:1] == ["ready"], f"child did not start: {lines[:3]}"
        time.sleep(delay)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        reader.join(timeout=10)
    return lines


@pytest.mark.slow
def test_kill9_never_loses_accepted_vertices(tmp_path):
    rng = random.Random(SEED)
    db = tmp_path / "dag.sqlite3"
    reported: set[bytes] = set()
    kills_during_writes = 0
    started = time.monotonic()
    for round_number in range(KILLS):
        # One kill in five lands during start-up, including inside the open
        # check and the WAL recovery of the previous crash.
        before_ready = rng.random() < 0.2
        delay = rng.uniform(0.0, 0.05 if before_ready else 0.25)
        lines = _run_and_kill(db, rng.randrange(2**31), delay, before_ready)
        accepted = {bytes.fromhex(line.split()[1]) for line in lines[1:]}
        kills_during_writes += bool(accepted)
        reported |= accepted

        if not db.exists():
            # Killed before the store was first created: nothing reported.
            assert not reported
            continue
        with Store.open(db, sample_size=32, rng=random.Random(round_number)) as store:
            lost = [
                i.hex() for i in reported if store.status(i) != VertexStatus.ACCEPTED
            ]
        assert not lost, f"round {round_number}: {len(lost)} accepted vertices lost"
        assert time.monotonic() - started < 120, "kill loop exceeded its time bound"

    with Store.open(db) as store:
        report = store.verify()
        stored = set(store.accepted_ids())
    assert report.ok, report.problems
    assert reported <= stored
    # The test proves little unless most kills hit a child that was writing.
    assert kills_during_writes >= KILLS // 2
    assert len(reported) > 1_000
