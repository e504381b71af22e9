"""Consensus simulator bench: safety over many seeds, liveness, and speed.

Three parts, each written to the ``consensus`` section of docs/benchmarks.md:

1. Safety: many seeds of 100 nodes, 20% of them Byzantine (stubborn and
   equivocating runs alternate), many double-spends. Any disagreement between
   two honest nodes is a failure. Seeds run in a process pool.
2. Liveness boundary: n = k = 20 with alpha 15. Five silent nodes leave exactly
   alpha voters in every poll, so every honest node must finalize in exactly
   beta polls. Six silent nodes leave 14, so nothing may ever finalize.
3. Speed: wall and CPU time of the simulator for 100, 300 and 1,000 nodes with
   1,000 vertices, against the 60 s target for 1,000 x 1,000.

Run ``python -m bench.consensus_sim --help`` for the options; ``--quick``
gives a smoke run that leaves docs/benchmarks.md alone. ``--parts speed``
reruns only the timings and replaces only the speed table in the docs, so the
safety and liveness figures already there are kept. Other partial runs only
print their results.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import sys
import time

from bench.report import BENCHMARKS_MD, write_section
from dag.consensus import AvalancheParams
from dag.sim import SimParams, simulate

TARGET_SECONDS = 60.0
# Virtual seconds per safety run. Finality takes about 0.7 s here, so a run
# that has not finished by then is stalled on a conflict, not slow.
SAFETY_MAX_TIME = 5.0
BOUNDARY = AvalancheParams(k=20, alpha_preference=15, alpha_confidence=15, beta=20)
PARTS = ("speed", "boundary", "safety")
SPEED_HEADING = "### Speed: nodes x "


def safety_params(seed: int) -> SimParams:
    # Short runs with many conflicts: the question is whether any two honest
    # nodes ever finalize different sides, not how long stragglers take.
    return SimParams(
        nodes=100,
        vertices=8,
        conflict_rate=0.5,
        byzantine=0.2,
        byzantine_mode="stubborn" if seed % 2 == 0 else "equivocate",
        max_time=SAFETY_MAX_TIME,
    )


def _safety_run(seed: int) -> tuple[int, str, int, bool, int]:
    params = safety_params(seed)
    result = simulate(params, seed)
    return (
        seed,
        params.byzantine_mode,
        result.disagreements,
        result.finished,
        result.accepted,
    )


def run_safety(seeds: int, workers: int) -> dict:
    started = time.monotonic()
    rows = []
    with multiprocessing.Pool(workers) as pool:
        for done, row in enumerate(pool.imap_unordered(_safety_run, range(seeds)), 1):
            rows.append(row)
            if done % 50 == 0 or done == seeds:
                bad = sum(r[2] for r in rows)
                print(
                    f"safety: {done}/{seeds} seeds, {bad} disagreements, "
                    f"{time.monotonic() - started:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
    summary = {"seeds": seeds, "wall": time.monotonic() - started, "modes": {}}
    for mode in ("stubborn", "equivocate"):
        mine = [r for r in rows if r[1] == mode]
        summary["modes"][mode] = {
            "runs": len(mine),
            "disagreements": sum(r[2] for r in mine),
            "finished": sum(r[3] for r in mine),
        }
    return summary


def run_boundary() -> list[dict]:
    rows = []
    for silent, max_time in ((5, 60.0), (6, 600.0)):
        params = SimParams(
            nodes=20,
            vertices=1,
            byzantine=silent / 20,
            byzantine_mode="silent",
            jitter_ms=0.0,
            max_time=max_time,
            consensus=BOUNDARY,
        )
        result = simulate(params, 1)
        rows.append({"silent": silent, "max_time": max_time, "result": result})
        print(f"boundary: {silent} silent done", file=sys.stderr, flush=True)
    return rows


def run_speed(sizes: list[int], vertices: int, interval_ms: float) -> list[dict]:
    rows = []
    for nodes in sizes:
        params = SimParams(
            nodes=nodes, vertices=vertices, issue_interval_ms=interval_ms
        )
        started = time.monotonic()

        def progress(
            virtual: float, decided: int, expected: int, nodes=nodes, started=started
        ) -> None:
            print(
                f"speed {nodes}x{vertices}: {virtual:.2f} s virtual, "
                f"{decided}/{expected} decisions, {time.monotonic() - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )

        load_before = os.getloadavg()[0]
        cpu = time.process_time()
        result = simulate(params, 1, progress=progress)
        cpu = time.process_time() - cpu
        wall = time.monotonic() - started
        rows.append(
            {
                "nodes": nodes,
                "vertices": vertices,
                "wall": wall,
                "cpu": cpu,
                "load": (load_before + os.getloadavg()[0]) / 2,
                "result": result,
            }
        )
        print(
            f"speed {nodes}x{vertices}: {wall:.1f} s wall, {cpu:.1f} s CPU",
            file=sys.stderr,
            flush=True,
        )
    return rows


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def render(args, safety: dict, boundary: list[dict], speed: list[dict]) -> str:
    return render_head(args, safety, boundary) + "\n\n" + render_speed(args, speed)


def render_head(args, safety: dict, boundary: list[dict]) -> str:
    lines = [
        "## Consensus simulator",
        "",
        (
            f"`python -m bench.consensus_sim --seeds {args.seeds} --workers "
            f"{args.workers}` on {platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}. The machine is shared with other jobs, so "
            "wall times vary with its load; CPU time is this process's own."
        ),
        "",
        "### Safety: 100 nodes, 20% Byzantine",
        "",
        (
            "Each seed runs 100 nodes with avalanchego's parameters (k=20, alphas 15, "
            "beta 20), 8 vertices of which about half double-spend a recent one, "
            "50 ms latency with 10 ms jitter, and 20 Byzantine nodes, stubborn on even "
            "seeds and equivocating on odd ones, for at most "
            f"{SAFETY_MAX_TIME:.0f} virtual seconds."
        ),
        "",
        (
            f"| Byzantine mode | runs | disagreements | finished within "
            f"{SAFETY_MAX_TIME:.0f} s |"
        ),
        "|---|---|---|---|",
    ]
    for mode, row in safety["modes"].items():
        lines.append(
            f"| {mode} | {row['runs']} | **{row['disagreements']}** | "
            f"{row['finished']} |"
        )
    total = sum(row["disagreements"] for row in safety["modes"].values())
    verdict = "met" if total == 0 else "missed"
    lines += [
        "",
        (
            f"Target 0 disagreements over {safety['seeds']} seeds: **{verdict}** "
            f"({safety['wall']:.0f} s wall over {args.workers} processes). Unfinished "
            "runs are liveness, not safety. Stubborn nodes never vote for the "
            "majority, so with 20 of 100 of them a poll of 20 reaches 15 votes "
            "only about 80% of the time (a binomial estimate), and 20 successes "
            "in a row take hundreds of polls, tens of virtual seconds."
        ),
        "",
        "### Liveness boundary: n = k = 20, alpha 15, beta 20",
        "",
        (
            "| silent nodes | finished | accepted | polls from add to accept (min / max) "
            "| virtual time | polls sent per vertex |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for row in boundary:
        result = row["result"]
        polls = (
            "never"
            if result.polls_to_finality_min is None
            else f"{result.polls_to_finality_min} / {result.polls_to_finality_max}"
        )
        lines.append(
            f"| {row['silent']} | {'yes' if result.finished else 'no'} | "
            f"{result.accepted} | {polls} | {result.virtual_time:.1f} s | "
            f"{result.polls_per_vertex:.0f} |"
        )
    five, six = boundary[0]["result"], boundary[1]["result"]
    exact = five.polls_to_finality_min == five.polls_to_finality_max == BOUNDARY.beta
    lines += [
        "",
        (
            f"Five silent: every honest node finalizes in exactly beta polls: "
            f"**{'met' if exact and five.finished else 'missed'}**. Six silent: "
            f"nothing finalizes in {boundary[1]['max_time']:.0f} virtual seconds: "
            f"**{'met' if six.accepted == 0 else 'missed'}**, and repoll backoff keeps "
            "the stuck nodes to about one poll per 10 s."
        ),
    ]
    return "\n".join(lines)


def render_speed(args, speed: list[dict]) -> str:
    command = ""
    if set(args.parts.split(",")) == {"speed"}:
        command = (
            f" Measured on its own with `python -m bench.consensus_sim --parts speed "
            f"--sizes {args.sizes}`."
        )
    lines = [
        f"{SPEED_HEADING}{speed[0]['vertices'] if speed else 0} vertices",
        "",
        (
            f"Vertices are issued every {args.interval_ms:g} ms by random honest nodes, "
            "50 ms latency with 10 ms jitter, avalanchego's parameters, seed 1."
            + command
        ),
        "",
        (
            "| nodes | wall s | CPU s | load avg | events | finished | p50 ms | p99 ms "
            "| polls / vertex | messages / vertex |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in speed:
        result = row["result"]
        lines.append(
            f"| {row['nodes']:,} | {row['wall']:.1f} | {row['cpu']:.1f} | "
            f"{row['load']:.1f} | {result.events:,} | "
            f"{'yes' if result.finished else 'no'} | {_ms(result.latency_p50_ms)} | "
            f"{_ms(result.latency_p99_ms)} | {result.polls_per_vertex:.0f} | "
            f"{result.messages_per_vertex:,.0f} |"
        )
    big = [row for row in speed if row["nodes"] == 1000]
    if big:
        row = big[0]
        lines += [
            "",
            (
                f"Target 1,000 x 1,000 in {TARGET_SECONDS:.0f} s: wall "
                f"{row['wall']:.0f} s (**{row['wall'] / TARGET_SECONDS:.2f}x** the "
                f"target, **{'met' if row['wall'] <= TARGET_SECONDS else 'missed'}**), "
                f"CPU {row['cpu']:.0f} s ({row['cpu'] / TARGET_SECONDS:.2f}x)."
            ),
        ]
    return "\n".join(lines)


def replace_speed(speed_markdown: str) -> str:
    """Return the docs' consensus section with only its speed table replaced.

    Raises:
        SystemExit: if the docs have no consensus section with a speed table
            to keep the other figures from.
    """
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else ""
    begin, end = "<!-- begin consensus -->", "<!-- end consensus -->"
    if begin not in text or end not in text:
        raise SystemExit(
            f"consensus section not found in {BENCHMARKS_MD}: run all parts first"
        )
    section = text.split(begin, 1)[1].split(end, 1)[0]
    if SPEED_HEADING not in section:
        raise SystemExit(
            f"speed table not found in the consensus section of {BENCHMARKS_MD}: "
            "run all parts first"
        )
    head = section.split(SPEED_HEADING, 1)[0].strip()
    return head + "\n\n" + speed_markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=1000, help="safety seeds")
    parser.add_argument("--workers", type=int, default=2, help="processes for seeds")
    parser.add_argument(
        "--sizes",
        default="100,300,1000",
        help="node counts for the speed runs, comma-separated",
    )
    parser.add_argument("--vertices", type=int, default=1000)
    parser.add_argument(
        "--interval-ms", type=float, default=5.0, help="virtual ms between vertices"
    )
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help=(
            "comma-separated parts to run, of " + ", ".join(PARTS) + "; speed alone "
            "updates only the speed table in the docs, other subsets only print"
        ),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="20 seeds and 100 nodes only, printed instead of written to the docs",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.sizes, args.vertices = 20, "100", 200
    sizes = [int(size) for size in args.sizes.split(",") if size]
    parts = set(args.parts.split(","))
    if not parts or not parts <= set(PARTS):
        parser.error(f"--parts takes a comma-separated subset of {', '.join(PARTS)}")
    # Speed first: it is the part most sensitive to other jobs on the machine,
    # and the safety pool's own processes would compete with it.
    speed = (
        run_speed(sizes, args.vertices, args.interval_ms) if "speed" in parts else []
    )
    boundary = run_boundary() if "boundary" in parts else []
    safety = run_safety(args.seeds, args.workers) if "safety" in parts else None
    if parts == set(PARTS):
        markdown = render(args, safety, boundary, speed)
        if not args.quick:
            write_section("consensus", markdown)
    elif parts == {"speed"}:
        markdown = render_speed(args, speed)
        if not args.quick:
            write_section("consensus", replace_speed(markdown))
    else:
        lines = []
        if safety is not None:
            for mode, row in safety["modes"].items():
                lines.append(
                    f"safety {mode}: {row['runs']} runs, {row['disagreements']} "
                    f"disagreements, {row['finished']} finished"
                )
            lines.append(f"safety: {safety['wall']:.0f} s wall")
        for row in boundary:
            result = row["result"]
            lines.append(
                f"boundary {row['silent']} silent: finished {result.finished}, "
                f"accepted {result.accepted}, polls to finality "
                f"{result.polls_to_finality_min} / {result.polls_to_finality_max}"
            )
        if speed:
            lines += ["", render_speed(args, speed)]
        markdown = "\n".join(lines)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
