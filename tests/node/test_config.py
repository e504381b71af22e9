import tomllib

import pytest

from node.config import (
    ConfigError,
    load_config,
    render_config_toml,
    resolve_data_dir,
)


def test_defaults_validate(tmp_path):
    config = load_config(tmp_path, env={})
    assert config.network == "local"
    assert config.p2p.listen == ("/ip4/127.0.0.1/tcp/0",)
    assert config.p2p.bootstrap == ()
    assert config.api.listen == "127.0.0.1:0"


def test_rendered_file_lists_every_setting_and_reloads(tmp_path):
    config = load_config(tmp_path, env={}, overrides={"node.network": "lab"})
    text = render_config_toml(config)
    document = tomllib.loads(text)
    assert document["node"]["network"] == "lab"
    assert document["consensus"]["k"] == config.consensus.k
    assert document["daemon"]["shutdown_timeout_s"] == config.daemon.shutdown_timeout_s
    (tmp_path / "config.toml").write_text(text)
    assert load_config(tmp_path, env={}) == config


def test_precedence_file_then_env_then_flag(tmp_path):
    (tmp_path / "config.toml").write_text(
        "[consensus]\nk = 4\nbeta = 7\n[api]\nlisten = '127.0.0.1:7001'\n"
    )
    env = {
        "SYNAPTIC_MESH_CONSENSUS_K": "3",
        "SYNAPTIC_MESH_API_LISTEN": "127.0.0.1:7002",
    }
    config = load_config(tmp_path, env=env, overrides={"api.listen": "127.0.0.1:7003"})
    assert config.consensus.beta == 7
    assert config.consensus.k == 3
    assert config.api.listen == "127.0.0.1:7003"


def test_env_list_is_comma_separated(tmp_path):
    addr = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
    env = {"SYNAPTIC_MESH_P2P_BOOTSTRAP": f"{addr}, {addr}"}
    assert load_config(tmp_path, env=env).p2p.bootstrap == (addr, addr)


def test_unset_flags_do_not_hide_env(tmp_path):
    env = {"SYNAPTIC_MESH_API_LISTEN": "127.0.0.1:7002"}
    config = load_config(tmp_path, env=env, overrides={"api.listen": None})
    assert config.api.listen == "127.0.0.1:7002"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SYNAPTIC_MESH_CONSENSUS_K": "0"}, "consensus.k=0"),
        ({"SYNAPTIC_MESH_CONSENSUS_K": "many"}, "consensus.k='many'"),
        ({"SYNAPTIC_MESH_CONSENSUS_BETA": "2.5"}, "consensus.beta='2.5'"),
        ({"SYNAPTIC_MESH_CONSENSUS_ALPHA_PREFERENCE": "1"}, "must exceed k/2=1"),
        ({"SYNAPTIC_MESH_CONSENSUS_ALPHA_CONFIDENCE": "9"}, "must be at most k=3"),
        ({"SYNAPTIC_MESH_CONSENSUS_POLL_TIMEOUT_S": "nan"}, "expected a finite number"),
        ({"SYNAPTIC_MESH_API_LISTEN": "0.0.0.0:80"}, "must be a loopback address"),
        ({"SYNAPTIC_MESH_API_LISTEN": "127.0.0.1:99999"}, "port from 0 to 65535"),
        (
            {"SYNAPTIC_MESH_P2P_LISTEN": "/ip4/127.0.0.1/udp/1"},
            "must be a TCP multiaddr",
        ),
        ({"SYNAPTIC_MESH_P2P_LISTEN": "not-an-address"}, "is not a valid multiaddr"),
        ({"SYNAPTIC_MESH_P2P_BOOTSTRAP": "/ip4/127.0.0.1/tcp/1"}, "must end in /p2p/"),
        ({"SYNAPTIC_MESH_NODE_NETWORK": "Main Net"}, "node.network='Main Net'"),
        ({"SYNAPTIC_MESH_P2P_MAX_CONNECTIONS": "0"}, "must be from 1 to 10000"),
    ],
)
def test_invalid_value_names_setting_source_and_rule(tmp_path, env, expected):
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path, env=env)
    message = str(caught.value)
    assert expected in message
    assert "environment variable SYNAPTIC_MESH_" in message


def test_invalid_file_value_names_the_file(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("[consensus]\nbeta = 0\n")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path, env={})
    assert "consensus.beta=0" in str(caught.value)
    assert str(path) in str(caught.value)


def test_unknown_key_and_section_rejected(tmp_path):
    (tmp_path / "config.toml").write_text("[consensus]\nkay = 3\n")
    with pytest.raises(ConfigError, match="unknown setting consensus.kay"):
        load_config(tmp_path, env={})
    (tmp_path / "config.toml").write_text("[consensu]\nk = 3\n")
    with pytest.raises(ConfigError, match=r"unknown section \[consensu\]"):
        load_config(tmp_path, env={})


def test_malformed_toml_rejected_with_path(tmp_path):
    (tmp_path / "config.toml").write_text("[consensus\n")
    with pytest.raises(ConfigError, match="cannot read .*config.toml"):
        load_config(tmp_path, env={})


def test_flag_value_out_of_range_names_flag(tmp_path):
    with pytest.raises(
        ConfigError, match=r"metrics.listen='10.0.0.1:9100' \(from command-line flag\)"
    ):
        load_config(tmp_path, env={}, overrides={"metrics.listen": "10.0.0.1:9100"})


def test_data_dir_flag_beats_env(tmp_path):
    env = {"SYNAPTIC_MESH_HOME": str(tmp_path / "env")}
    assert resolve_data_dir(None, env) == tmp_path / "env"
    assert resolve_data_dir(str(tmp_path / "flag"), env) == tmp_path / "flag"
    assert resolve_data_dir(None, {}).name == ".synaptic-mesh"


def test_unknown_environment_variable_rejected(tmp_path):
    env = {"SYNAPTIC_MESH_CONSENSUS_BOGUS": "1"}
    with pytest.raises(ConfigError, match="unknown environment variable"):
        load_config(tmp_path, env=env)


def test_home_and_task_variables_are_not_settings(tmp_path):
    env = {
        "SYNAPTIC_MESH_HOME": str(tmp_path),
        "SYNAPTIC_MESH_TASKS_CLAIM_TIMEOUT_S": "5",
        "SYNAPTIC_MESH_CONSENSUS_BETA": "9",
    }
    assert load_config(tmp_path, env=env).consensus.beta == 9
