"""Run the atheris decoder fuzzer for a bounded number of inputs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dag import codec
from tests.dag.helpers import child, seeded_key

pytest.importorskip("atheris", reason="atheris is not installed (optional fuzzer)")

REPO = Path(__file__).resolve().parents[2]
RUNS = 30_000


@pytest.mark.slow
def test_atheris_decoders_raise_only_decode_error(tmp_path, genesis):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    # Valid encodings as seeds, so mutations reach the checks past the header.
    ml = seeded_key("atheris", "ml-dsa-65")
    seeds = {
        "genesis": codec.encode_vertex(genesis),
        "ed25519": codec.encode_vertex(child(seeded_key("a"), [genesis], 1)),
        "mldsa": codec.encode_vertex(child(ml, [genesis], 2, conflict_keys=(b"k",))),
        "payload": codec.encode_payload({"a": [1, 2.5, b"x", None], "b": {"c": True}}),
        "key": codec.encode_public_key("ed25519", b"\x01" * 32),
    }
    for name, data in seeds.items():
        (corpus / name).write_bytes(data)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.dag.fuzz_codec",
            f"-runs={RUNS}",
            "-max_len=8192",
            "-rss_limit_mb=1024",
            "-max_total_time=60",
            "-seed=1",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    tail = result.stderr[-3000:]
    assert result.returncode == 0, tail
    assert "Done" in tail
