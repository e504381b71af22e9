"""Child process for the kill -9 test: accept vertices until killed.

Run as ``python -m tests.dag.crash_child DB SEED MAX_BATCHES``. It prints
``ready`` once the store is open, then, after each committed batch, one line
``accepted <id hex>`` per vertex that the batch accepted. A line is printed
only after ``Store.write`` has returned, so every printed id was reported
accepted in the sense of the store's durability contract.
"""

from __future__ import annotations

import random
import sys

from dag.store import Store
from dag.vertex import create_vertex
from tests.dag.helpers import seeded_key

NETWORK = "crash-test"


def main(argv: list[str]) -> int:
    db, seed, max_batches = argv[0], int(argv[1]), int(argv[2])
    rng = random.Random(seed)
    key = seeded_key(f"crash-{seed}")
    store = Store.open(db, network=NETWORK)
    out = sys.stdout
    out.write("ready\n")
    out.flush()

    # Vertices stored but not yet accepted by an earlier run are accepted first.
    pending = [v.id for v in store.processing()]
    accepted_tips = store.accepted_ids()[-8:]
    counter = rng.randrange(2**40)
    for _ in range(max_batches):
        new = []
        for _ in range(rng.randint(1, 20)):
            parents = rng.sample(accepted_tips, k=min(len(accepted_tips), 2))
            counter += 1
            timestamp_ms = rng.randrange(1, 2_000_000_000_000)
            new.append(
                create_vertex(
                    key, parents, "test.crash", {"n": counter}, (), timestamp_ms
                )
            )
        # Half of the new vertices are accepted in the transaction that
        # stores them, the rest in the next batch.
        half = len(new) // 2
        accept = pending + [v.id for v in new[:half]]
        store.write(vertices=new, accepted_ids=accept)
        out.write("".join(f"accepted {i.hex()}\n" for i in accept))
        out.flush()
        pending = [v.id for v in new[half:]]
        accepted_tips = (accepted_tips + accept)[-8:]
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
