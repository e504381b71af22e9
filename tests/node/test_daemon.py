"""Integration tests: real daemons as separate processes on 127.0.0.1."""

from __future__ import annotations

import json
import signal
import stat
import tomllib

import pytest

from node.client import ApiClient
from tests.node.daemons import Daemon, run_cli, start_daemons, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def daemons():
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.kill()


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_settings_keys_store_and_token(tmp_path):
    daemon = Daemon(tmp_path / "node")
    result = daemon.init("--network", "lab")
    assert "peer id" in result.stdout

    data_dir = daemon.data_dir
    config = tomllib.loads((data_dir / "config.toml").read_text())
    assert config["node"]["network"] == "lab"
    assert config["consensus"]["beta"] >= 1
    assert config["p2p"]["listen"] == ["/ip4/127.0.0.1/tcp/0"]
    for name in ("identity.key", "vertex.key", "api.token"):
        assert _mode(data_dir / name) == 0o600, name
    assert (data_dir / "dag.sqlite3").exists()


def test_init_refuses_to_replace_identity_without_force(tmp_path):
    daemon = Daemon(tmp_path / "node")
    first = daemon.init()
    again = daemon.cli("init")
    assert again.returncode == 1
    assert "already exists; pass --force" in again.stderr
    assert "Traceback" not in again.stderr

    forced = daemon.cli("init", "--force")
    assert forced.returncode == 0, forced.stderr
    first_id = first.stdout.split("peer id", 1)[1].split()[0]
    assert first_id not in forced.stdout


def test_start_status_and_graceful_sigterm(tmp_path, daemons):
    daemon = Daemon(tmp_path / "node")
    daemons.append(daemon)
    daemon.init()
    daemon.start()
    info = daemon.wait_ready()

    (address,) = info["listen_addrs"]
    assert address.startswith("/ip4/127.0.0.1/tcp/")
    assert address.endswith(f"/p2p/{info['peer_id']}")
    assert not address.startswith("/ip4/127.0.0.1/tcp/0/")
    assert info["api"].startswith("127.0.0.1:")
    printed = daemon.stdout()
    assert f"peer id   {info['peer_id']}" in printed
    assert f"listening {address}" in printed
    assert f"api       {info['api']}" in printed

    status = daemon.status()
    assert status["peer_id"] == info["peer_id"]
    assert status["listen_addrs"] == [address]
    assert status["peers"] == []
    assert "/synaptic-mesh/local/vertices/1" in status["topics"]
    assert status["dag"]["accepted"] == 1  # the genesis
    assert status["dag"]["processing"] == 0
    assert {s["name"] for s in status["services"]} >= {"dag.driver", "dag.gossip"}
    assert status["uptime_s"] >= 0

    text = daemon.cli("status")
    assert text.returncode == 0, text.stderr
    assert info["peer_id"] in text.stdout
    assert daemon.cli("peers").stdout.strip() == "no connected peers"

    code, seconds = daemon.stop(signal.SIGTERM)
    assert code == 0, daemon.stderr()
    assert seconds < 5.0
    assert not (daemon.data_dir / "runtime.json").exists()
    assert "node stopped" in daemon.stderr()


def test_sigint_also_stops_gracefully(tmp_path, daemons):
    daemon = Daemon(tmp_path / "node")
    daemons.append(daemon)
    daemon.init()
    daemon.start()
    daemon.wait_ready()
    code, seconds = daemon.stop(signal.SIGINT)
    assert code == 0, daemon.stderr()
    assert seconds < 5.0


def test_two_nodes_agree_on_published_vertex(tmp_path, daemons):
    first, second = start_daemons(tmp_path, 2)
    daemons.extend([first, second])
    first_id = first.runtime()["peer_id"]
    second_id = second.runtime()["peer_id"]

    wait_for(lambda: first_id in second.status()["peers"], 20, "second to connect")
    wait_for(lambda: second_id in first.status()["peers"], 20, "first to see second")

    published = first.cli("publish", "greetings", "hello from the first node", "--json")
    assert published.returncode == 0, published.stderr + first.stderr()
    result = json.loads(published.stdout)
    assert result["status"] == "accepted"
    vertex_id = result["vertex_id"]

    client = ApiClient.from_data_dir(second.data_dir)
    shown = wait_for(
        lambda: _accepted(client, vertex_id),
        20,
        "the vertex to be accepted on the second node",
    )
    assert shown["payload"] == {
        "text": "hello from the first node",
        "topic": "greetings",
    }
    assert shown["payload_type"] == "message"
    assert shown["author"] == first.runtime()["vertex_key_id"]

    shown_cli = second.cli("dag", "show", vertex_id)
    assert shown_cli.returncode == 0, shown_cli.stderr
    assert "status        accepted" in shown_cli.stdout
    assert '"text": "hello from the first node"' in shown_cli.stdout
    tail = second.cli("dag", "tail", "-n", "5")
    assert tail.returncode == 0, tail.stderr
    assert f"{vertex_id}  accepted" in tail.stdout

    # The other direction, so both nodes issue and both accept.
    back = second.cli("publish", "greetings", "and back", "--json")
    assert back.returncode == 0, back.stderr + second.stderr()
    back_id = json.loads(back.stdout)["vertex_id"]
    first_client = ApiClient.from_data_dir(first.data_dir)
    wait_for(lambda: _accepted(first_client, back_id), 20, "the reply to be accepted")

    metrics = _scrape(first.runtime()["metrics"])
    assert metrics["synaptic_mesh_peers"] == 1
    assert metrics['synaptic_mesh_vertices_total{event="accepted"}'] >= 2
    assert metrics['synaptic_mesh_vertices_total{event="admitted"}'] >= 2
    assert metrics["synaptic_mesh_finality_seconds_count"] >= 1
    assert metrics['synaptic_mesh_gossip_messages_total{direction="out"}'] >= 1
    assert metrics['synaptic_mesh_gossip_messages_total{direction="in"}'] >= 1

    for daemon in (first, second):
        code, seconds = daemon.stop()
        assert code == 0, daemon.stderr()
        assert seconds < 5.0


def _scrape(address: str) -> dict[str, float]:
    import urllib.request

    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def _accepted(client: ApiClient, vertex_id: str):
    from node.client import ApiCallError

    try:
        shown = client.get(f"/dag/vertex/{vertex_id}")
    except ApiCallError:
        return None
    return shown if shown["status"] == "accepted" else None


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        ((), {"SYNAPTIC_MESH_CONSENSUS_K": "0"}, "invalid setting consensus.k=0"),
        (
            (),
            {"SYNAPTIC_MESH_CONSENSUS_ALPHA_PREFERENCE": "1"},
            "invalid setting consensus.alpha_preference=1",
        ),
        (("--api", "0.0.0.0:8080"), {}, "invalid setting api.listen='0.0.0.0:8080'"),
        (("--metrics", "127.0.0.1:http"), {}, "invalid setting metrics.listen"),
        (("--listen", "/ip4/127.0.0.1/udp/4001"), {}, "invalid setting p2p.listen"),
        (
            ("--bootstrap", "/ip4/127.0.0.1/tcp/4001"),
            {},
            "must end in /p2p/<peer id>",
        ),
        (
            (),
            {"SYNAPTIC_MESH_DAEMON_SHUTDOWN_TIMEOUT_S": "-1"},
            "daemon.shutdown_timeout_s=-1.0",
        ),
    ],
)
def test_bad_setting_is_a_clear_error(tmp_path, args, env, expected):
    # Settings are validated before the data directory is even read.
    daemon = Daemon(tmp_path / "node", env=env)
    daemon.start(*args)
    code = daemon.process.wait(timeout=30)
    assert code == 1
    assert expected in daemon.stderr()
    assert "Traceback" not in daemon.stderr()


def test_bad_value_in_config_file_names_file(tmp_path):
    daemon = Daemon(tmp_path / "node")
    daemon.init()
    path = daemon.data_dir / "config.toml"
    path.write_text(path.read_text().replace("beta = 12", "beta = 0"))
    daemon.start()
    assert daemon.process.wait(timeout=30) == 1
    assert f"invalid setting consensus.beta=0 (from {path})" in daemon.stderr()


def test_wrong_token_is_a_clear_error(tmp_path, daemons):
    daemon = Daemon(tmp_path / "node")
    daemons.append(daemon)
    daemon.init()
    daemon.start()
    daemon.wait_ready()
    (daemon.data_dir / "api.token").write_text("forged-token\n")
    result = daemon.cli("status")
    assert result.returncode == 1
    assert "rejected the API token" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_daemon_is_a_clear_error(tmp_path):
    absent = run_cli("status", "--data-dir", str(tmp_path / "nowhere"))
    assert absent.returncode == 1
    assert "does not exist" in absent.stderr
    assert "synaptic-mesh init" in absent.stderr

    daemon = Daemon(tmp_path / "node")
    daemon.init()
    stopped = daemon.cli("status")
    assert stopped.returncode == 1
    assert "no daemon is running" in stopped.stderr
    assert "Traceback" not in stopped.stderr


def test_killed_daemon_leaves_a_clear_error(tmp_path, daemons):
    daemon = Daemon(tmp_path / "node")
    daemons.append(daemon)
    daemon.init()
    daemon.start()
    daemon.wait_ready()
    daemon.kill()
    result = daemon.cli("peers")
    assert result.returncode == 1
    assert "no daemon responds" in result.stderr
    assert "Traceback" not in result.stderr

    # The stale runtime file does not block a new start.
    daemon.start()
    daemon.wait_ready()
    assert daemon.stop()[0] == 0


def test_second_daemon_on_same_directory_rejected(tmp_path, daemons):
    daemon = Daemon(tmp_path / "node")
    daemons.append(daemon)
    daemon.init()
    daemon.start()
    info = daemon.wait_ready()
    other = Daemon(daemon.data_dir)
    other.stdout_path = tmp_path / "other.stdout"
    other.stderr_path = tmp_path / "other.stderr"
    other.start()
    assert other.process.wait(timeout=30) == 1
    assert f"a daemon (pid {info['pid']}) is already running" in other.stderr()
    assert daemon.runtime()["pid"] == info["pid"]


def test_second_signal_exits_at_once(tmp_path, daemons):
    import os

    daemon = Daemon(tmp_path / "node")
    daemons.append(daemon)
    daemon.init()
    daemon.start()
    daemon.wait_ready()
    # Two different signals sent back to back are both pending when the
    # daemon reads the first, so the second one ends the graceful stop.
    os.kill(daemon.process.pid, signal.SIGINT)
    os.kill(daemon.process.pid, signal.SIGTERM)
    code = daemon.process.wait(timeout=10)
    # NOTE: the graceful stop takes about 0.05 s, so now and then it ends
    # before the daemon reads the second signal; then it exits as after one.
    assert code in (128 + signal.SIGTERM, 128 + signal.SIGINT, 0)
    if code == 128 + signal.SIGTERM:
        assert "exiting without a graceful stop" in daemon.stderr()
    assert not (daemon.data_dir / "runtime.json").exists()


def _start_fails(daemon: Daemon) -> str:
    daemon.start()
    assert daemon.process.wait(timeout=30) == 1
    stderr = daemon.stderr()
    assert "Traceback" not in stderr
    return stderr


def test_damaged_store_stops_the_start(tmp_path, daemons):
    import sqlite3

    from dag.store import Store
    from dag.vertex import genesis_vertex
    from tests.dag.helpers import child, seeded_key
    from tests.dag.test_store import _overwrite_bytes

    daemon = Daemon(tmp_path / "node")
    daemons.append(daemon)
    daemon.init("--network", "lab")
    key = seeded_key("damage")
    chain = [child(key, [genesis_vertex("lab")], 0)]
    for n in range(1, 500):
        chain.append(child(key, [chain[-1]], n))
    with Store.open(daemon.data_dir) as store:
        store.write(chain, accepted_ids=[v.id for v in chain])
    sqlite3.connect(store.path).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
    # This seed hits only index pages: every row still decodes and hashes to
    # its id, so only SQLite's own page check finds the damage.
    _overwrite_bytes(store.path, 174)
    stderr = _start_fails(daemon)
    assert f"DAG store {store.path} is damaged" in stderr
    assert "--rebuild" in stderr


def test_missing_store_stops_the_start_unless_asked(tmp_path, daemons):
    daemon = Daemon(tmp_path / "node")
    daemons.append(daemon)
    daemon.init()
    store = daemon.data_dir / "dag.sqlite3"
    store.unlink()
    stderr = _start_fails(daemon)
    assert f"DAG store {store} is missing" in stderr
    assert "--new-store" in stderr
    assert not store.exists()

    daemon.start("--new-store")
    daemon.wait_ready()
    assert store.exists()
    assert daemon.stop()[0] == 0


def test_lock_rejects_second_daemon_without_runtime_file(tmp_path, daemons):
    daemon = Daemon(tmp_path / "node")
    daemons.append(daemon)
    daemon.init()
    daemon.start()
    info = daemon.wait_ready()
    (daemon.data_dir / "runtime.json").unlink()
    other = Daemon(daemon.data_dir)
    other.stdout_path = tmp_path / "other.stdout"
    other.stderr_path = tmp_path / "other.stderr"
    daemons.append(other)
    assert f"a daemon (pid {info['pid']}) is already running" in _start_fails(other)


def test_restart_right_after_kill_9(tmp_path, daemons):
    import os

    daemon = Daemon(tmp_path / "node")
    daemons.append(daemon)
    daemon.init()
    daemon.start()
    daemon.wait_ready()
    old = daemon.process
    # Not reaped yet: the old pid still exists as a zombie, as it does for
    # a moment under a supervisor, but its lock is already released.
    os.kill(old.pid, signal.SIGKILL)
    wait_for(lambda: _is_zombie(old.pid), 10, "killed daemon to exit")
    daemon.start()
    daemon.wait_ready()
    old.wait(timeout=10)
    assert daemon.stop()[0] == 0


def _is_zombie(pid: int) -> bool:
    from pathlib import Path

    return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] == "Z"


def test_token_readable_by_others_stops_the_start(tmp_path, daemons):
    daemon = Daemon(tmp_path / "node")
    daemons.append(daemon)
    daemon.init()
    token = daemon.data_dir / "api.token"
    token.chmod(0o666)
    stderr = _start_fails(daemon)
    assert f"{token} has mode 0666" in stderr
    assert f"chmod 600 {token}" in stderr


def test_publish_of_non_utf8_text_is_a_clear_error(tmp_path, daemons):
    from node.client import ApiCallError

    daemon = Daemon(tmp_path / "node")
    daemons.append(daemon)
    daemon.init()
    daemon.start()
    daemon.wait_ready()
    # The byte 0xe9 alone is Latin-1, not UTF-8; Python passes it on as the
    # lone surrogate \udce9.
    result = daemon.cli("publish", "t", "caf\udce9")
    assert result.returncode == 1
    assert "MESSAGE is not UTF-8 text" in result.stderr
    assert "Traceback" not in result.stderr

    client = ApiClient.from_data_dir(daemon.data_dir)
    with pytest.raises(ApiCallError, match="not valid Unicode") as info:
        client.post("/publish", {"topic": "t", "message": "caf\udce9"})
    assert info.value.status == 400
    assert "Traceback" not in daemon.stderr()
    published = daemon.cli("publish", "t", "café", "--timeout", "0")
    assert published.returncode == 0, published.stderr
