"""Testnet bench: mesh formation, task latency, finality, saturation, memory.

Runs ``node.testnet.run_testnet`` on 5 and 10 daemons (separate processes on
127.0.0.1) and writes the figures to the ``testnet`` section of
docs/benchmarks.md. The anchor, measured in the same run, is the same model
run in this process on one row at a time. The mesh's task latency is reported
as a multiple of it: the cost of signing, gossip, consensus on the claim and
the result vertex around one forward pass.

Targets on the development machine: vertex finality p99 under 1 s on 10
nodes, task latency p99 under 2 s, resident memory under 150 MB per idle node.

Usage: python -m bench.testnet_bench [--nodes 5 10] [--tasks 100]
       [--saturation-tasks 200] [--concurrency 16] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np

from bench.report import write_section
from node.testnet import (
    TestnetParams,
    TestnetReport,
    load_dataset,
    run_testnet,
    train_model,
)

FINALITY_P99_TARGET_S = 1.0
TASK_P99_TARGET_S = 2.0
IDLE_RSS_TARGET_MB = 150.0


def local_anchor(params: TestnetParams) -> dict[str, float]:
    """Time the trained model on single rows in this process."""
    import neural

    data = load_dataset(params)
    text, _ = train_model(data, params, lambda message: None)
    net = neural.loads(text)
    rows = np.asarray(data.test_inputs, dtype=np.float64)
    started = time.perf_counter()
    repeats = 5
    for _ in range(repeats):
        for row in rows:
            net.run(row)
    seconds = (time.perf_counter() - started) / (repeats * len(rows))
    return {"row_s": seconds, "rows_per_s": 1.0 / seconds}


def _fmt_ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:.0f}"


def _verdict(value: float | None, target: float) -> str:
    if value is None:
        return "n/a"
    return "met" if value < target else "MISSED"


def render(reports: list[TestnetReport], anchor: dict[str, float], args) -> str:
    """Return the markdown section for `reports`."""
    lines = [
        "## Testnet (`bench/testnet_bench.py`)",
        "",
        (
            f"Daemons as separate processes on 127.0.0.1, {platform.machine()} "
            f"({platform.python_implementation()} {platform.python_version()}), "
            f"{args.tasks} digits test rows as tasks ({args.concurrency} in flight), "
            f"then {args.saturation_tasks} tasks with {args.saturation_concurrency} "
            "in flight for the saturation rate. Quantiles are nearest-rank over the "
            "tasks of the first phase. Finality is measured on every node for the "
            "vertices it signed (tasks, claims, results, registrations), from "
            "signing to acceptance, up to the end of the first phase."
        ),
        "",
        (
            "| nodes | mesh formed s | first vertex final s | task p50 ms | task p99 ms "
            "| finality p50 ms | finality p99 ms | tasks/s at saturation "
            "| idle RSS per node MB (max) | after tasks MB (max) | accuracy | checks |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for report in reports:
        f = report.figures()
        saturation = f["saturation_tasks_per_s"]
        lines.append(
            f"| {report.nodes} | {f['mesh_formed_s']} | {f['first_vertex_final_s']} "
            f"| {_fmt_ms(f['task_latency_p50_s'])} | {_fmt_ms(f['task_latency_p99_s'])} "
            f"| {_fmt_ms(f['finality_p50_s'])} | {_fmt_ms(f['finality_p99_s'])} "
            f"| {'n/a' if saturation is None else f'{saturation:.1f}'} "
            f"| {f['rss_idle_mb_max']} | {f['rss_busy_mb_max']} "
            f"| {report.accuracy:.1%} | {'pass' if report.ok else 'FAIL'} |"
        )
    lines += [
        "",
        (
            f"Anchor: the same network run locally on one row takes "
            f"{anchor['row_s'] * 1e6:.0f} µs ({anchor['rows_per_s']:.0f} rows/s)."
        ),
        "",
        (
            "| nodes | task p50 / local row | finality p99 target < 1 s "
            "| task p99 target < 2 s | idle RSS target < 150 MB |"
        ),
        "|---|---|---|---|---|",
    ]
    for report in reports:
        f = report.figures()
        ratio = (
            f"{f['task_latency_p50_s'] / anchor['row_s']:.0f}x"
            if f["task_latency_p50_s"]
            else "n/a"
        )
        lines.append(
            f"| {report.nodes} | {ratio} "
            f"| {_verdict(f['finality_p99_s'], FINALITY_P99_TARGET_S)} "
            f"| {_verdict(f['task_latency_p99_s'], TASK_P99_TARGET_S)} "
            f"| {_verdict(f['rss_idle_mb_max'], IDLE_RSS_TARGET_MB)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--saturation-tasks", type=int, default=200)
    parser.add_argument("--saturation-concurrency", type=int, default=16)
    parser.add_argument("--json", help="also write the raw reports to this file")
    parser.add_argument(
        "--no-write", action="store_true", help="print the section, leave the docs"
    )
    args = parser.parse_args(argv)

    started = time.monotonic()

    def progress(message: str) -> None:
        print(
            f"[{time.monotonic() - started:6.1f}s] {message}",
            file=sys.stderr,
            flush=True,
        )

    base = TestnetParams()
    anchor = local_anchor(base)
    progress(f"local anchor: {anchor['row_s'] * 1e6:.0f} µs per row")
    reports = []
    for nodes in args.nodes:
        params = TestnetParams(
            nodes=nodes,
            tasks=args.tasks,
            concurrency=args.concurrency,
            saturation_tasks=args.saturation_tasks,
            saturation_concurrency=args.saturation_concurrency,
        )
        progress(f"testnet with {nodes} nodes")
        report = run_testnet(params, progress)
        print(report.format_text(), file=sys.stderr)
        reports.append(report)
    markdown = render(reports, anchor, args)
    print(markdown)
    if args.json:
        with open(args.json, "w") as file:
            json.dump([r.to_json() for r in reports], file, indent=2)
    if not args.no_write:
        write_section("testnet", markdown)
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
