"""``synaptic-mesh dag verify`` on intact, damaged and missing stores."""

from __future__ import annotations

import argparse
import json
import sqlite3

import pytest

from dag.store import DEFAULT_FILENAME, Store
from node.commands import dag as dag_command
from tests.dag.helpers import NETWORK, child, seeded_key

KEY = seeded_key("cli")


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="synaptic-mesh")
    dag_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def chain(genesis):
    vertices = [child(KEY, [genesis], 0)]
    for n in range(1, 10):
        vertices.append(child(KEY, [vertices[-1]], n))
    return vertices


@pytest.fixture
def data_dir(tmp_path, chain):
    with Store.open(tmp_path, network=NETWORK) as store:
        store.write(chain, accepted_ids=[v.id for v in chain[:6]])
    return tmp_path


def test_verify_intact_store(data_dir, capsys):
    assert _run(["dag", "verify", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "ok, 11 vertices" in out
    assert "accepted=7" in out


def test_verify_json(data_dir, capsys):
    assert _run(["dag", "verify", "--data-dir", str(data_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert report["counts"] == {"accepted": 7, "processing": 4, "rejected": 0}


def test_verify_missing_store(tmp_path, capsys):
    assert _run(["dag", "verify", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"data directory {tmp_path} has no DAG store" in err
    assert f"{DEFAULT_FILENAME} does not exist" in err


def test_verify_missing_data_directory(tmp_path, capsys):
    missing = tmp_path / "absent"
    assert _run(["dag", "verify", "--data-dir", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"data directory {missing} does not exist" in err
    assert "DAG store" not in err


def test_verify_damaged_then_rebuild(data_dir, chain, capsys):
    db = data_dir / DEFAULT_FILENAME
    conn = sqlite3.connect(db)
    conn.execute("UPDATE vertices SET data = ? WHERE id = ?", (b"\x00", chain[7].id))
    conn.commit()
    conn.close()
    assert _run(["dag", "verify", "--data-dir", str(data_dir)]) == 1
    out = capsys.readouterr().out
    assert "damaged" in out
    assert chain[7].id.hex() in out

    assert _run(["dag", "verify", "--data-dir", str(data_dir), "--rebuild"]) == 0
    out = capsys.readouterr().out
    # 11 rows before (genesis included): 8 kept plus 3 dropped, and the
    # check of the rebuilt store counts the same 8.
    assert "kept 8 vertices (7 accepted), dropped 3" in out
    assert "ok, 8 vertices" in out
    assert "accepted=7" in out
    with Store.open(data_dir) as store:
        assert store.verify().ok
        assert store.tail(1)[0].id == chain[6].id


def test_verify_garbage_file(tmp_path, capsys):
    (tmp_path / DEFAULT_FILENAME).write_bytes(b"garbage" * 1000)
    assert _run(["dag", "verify", "--data-dir", str(tmp_path)]) == 1
    assert "damaged" in capsys.readouterr().out
