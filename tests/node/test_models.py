"""Model store, name registry, registration payloads and chunked transfer."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import trio

import neural
from node.models import (
    CHUNK_BYTES,
    ModelError,
    ModelInfo,
    ModelNotFound,
    ModelStore,
    NameRegistry,
    content_hash,
    fetch_model,
    name_conflict_key,
    parse_registration,
    provider_key,
    provider_service,
    registration_payload,
    serve_chunk,
)
from p2p.discovery import service_key


def _net_text(hidden: int = 3, seed: int = 0) -> str:
    net = neural.create_standard((2, hidden, 1), rng=np.random.default_rng(seed))
    return neural.dumps(net)


def test_content_hash_is_sha256_of_text():
    text = _net_text()
    assert content_hash(text) == hashlib.sha256(text.encode()).hexdigest()


def test_content_hash_matches_neural_for_saved_files():
    net = neural.create_standard((2, 3, 1), rng=np.random.default_rng(1))
    assert content_hash(neural.dumps(net)) == neural.content_hash(net)


def test_provider_key_separates_network_name_hash():
    keys = {
        provider_key("a", "digits", "0" * 64),
        provider_key("b", "digits", "0" * 64),
        provider_key("a", "other", "0" * 64),
        provider_key("a", "digits", "1" * 64),
    }
    assert len(keys) == 4
    assert provider_key("a", "digits", "0" * 64) == service_key(
        "a", provider_service("digits", "0" * 64)
    )


def test_name_conflict_key_per_name():
    assert name_conflict_key("digits") == name_conflict_key("digits")
    assert name_conflict_key("digits") != name_conflict_key("digits2")
    assert len(name_conflict_key("x")) == 32


def test_store_add_and_reload(tmp_path):
    store = ModelStore(tmp_path / "models")
    text = _net_text()
    info = store.add_text("xor", text)
    assert info.model_hash == content_hash(text)
    assert (info.num_inputs, info.num_outputs, info.size) == (2, 1, len(text))
    assert store.has(info.model_hash)
    assert store.text(info.model_hash) == text

    reopened = ModelStore(tmp_path / "models")
    assert reopened.resolve_local("xor") == info.model_hash
    assert [m.name for m in reopened.list()] == ["xor"]
    outputs = reopened.network(info.model_hash).run(np.array([0.5, 0.25]))
    expected = neural.loads(text).run(np.array([0.5, 0.25]))
    assert outputs.tolist() == expected.tolist()


def test_store_add_file(tmp_path):
    path = tmp_path / "m.net"
    path.write_text(_net_text())
    store = ModelStore(tmp_path / "models")
    info = store.add_file(path, "m")
    assert info.name == "m"


def test_store_rejects_bad_file_without_storing(tmp_path):
    store = ModelStore(tmp_path / "models")
    with pytest.raises(ModelError, match="cannot load model bad.net"):
        store.add_text("bad", "FANN_FLO_2.1\nnum_layers=oops\n", source="bad.net")
    assert store.list() == []
    assert list((tmp_path / "models").glob("*.net")) == []


def test_store_rejects_missing_file(tmp_path):
    store = ModelStore(tmp_path / "models")
    with pytest.raises(ModelError, match="cannot read model file"):
        store.add_file(tmp_path / "absent.net", "x")


@pytest.mark.parametrize("name", ["", "-x", "a b", "x" * 129, "é"])
def test_store_rejects_invalid_name(tmp_path, name):
    store = ModelStore(tmp_path / "models")
    with pytest.raises(ModelError, match="invalid model name"):
        store.add_text(name, _net_text())


def test_store_unknown_hash(tmp_path):
    store = ModelStore(tmp_path / "models")
    with pytest.raises(ModelNotFound):
        store.text("0" * 64)
    with pytest.raises(ModelError, match="invalid model hash"):
        store.text("../../etc/passwd")


def test_store_corrupt_index_names_file(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "names.json").write_text("{not json")
    with pytest.raises(ModelError, match="names.json"):
        ModelStore(folder)


def test_store_index_drops_missing_files(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "names.json").write_text(json.dumps({"gone": "0" * 64}))
    assert ModelStore(folder).list() == []


def test_registration_payload_roundtrip():
    info = ModelInfo("digits", "ab" * 32, 64, 10, 60_000)
    assert parse_registration(registration_payload(info)) == info


@pytest.mark.parametrize(
    "change",
    [
        {"name": "bad name"},
        {"model_hash": "xyz"},
        {"num_inputs": 0},
        {"num_outputs": True},
        {"size": "1"},
    ],
)
def test_parse_registration_rejects(change):
    body = {**registration_payload(ModelInfo("d", "ab" * 32, 1, 1, 1)), **change}
    with pytest.raises(ModelError):
        parse_registration(body)


def test_registry_first_accepted_wins():
    registry = NameRegistry()
    first = ModelInfo("digits", "aa" * 32, 64, 10, 1)
    second = ModelInfo("digits", "bb" * 32, 64, 10, 1)
    registry.on_registration(b"1" * 32, first, "admitted")
    registry.on_registration(b"2" * 32, second, "admitted")
    assert registry.pending("digits")
    assert registry.resolve("digits") is None
    registry.on_registration(b"2" * 32, second, "accepted")
    registry.on_registration(b"1" * 32, first, "rejected")
    assert registry.resolve("digits") == second
    assert not registry.pending("digits")
    assert registry.names() == {"digits": second}


class _LoopbackReqResp:
    """Routes requests to `serve_chunk` of another store, optionally tampering."""

    def __init__(self, store, tamper=None):
        self.store = store
        self.tamper = tamper
        self.requests = 0

    async def request(self, peer_id, name, request, timeout):
        self.requests += 1
        reply = await serve_chunk(self.store, request)
        return self.tamper(reply) if self.tamper else reply


async def test_fetch_model_in_chunks(tmp_path):
    store = ModelStore(tmp_path / "models")
    text = _net_text(hidden=2000)
    assert len(text) > CHUNK_BYTES
    info = store.add_text("big", text)
    reqresp = _LoopbackReqResp(store)
    fetched = await fetch_model(reqresp, "peer", info.model_hash, timeout=5)
    assert fetched == text
    assert reqresp.requests == -(-len(text) // CHUNK_BYTES)


async def test_fetch_model_detects_tampering(tmp_path):
    store = ModelStore(tmp_path / "models")
    info = store.add_text("m", _net_text())

    def flip(reply):
        data = bytearray(reply["data"])
        data[-2] ^= 1
        return {**reply, "data": bytes(data)}

    with pytest.raises(ModelError, match="does not match"):
        await fetch_model(_LoopbackReqResp(store, flip), "peer", info.model_hash, 5)


async def test_fetch_model_rejects_oversize_claim(tmp_path):
    store = ModelStore(tmp_path / "models")
    info = store.add_text("m", _net_text())

    def huge(reply):
        return {**reply, "total": 1 << 40}

    with pytest.raises(ModelError, match="model size"):
        await fetch_model(_LoopbackReqResp(store, huge), "peer", info.model_hash, 5)


async def test_fetch_model_unknown_hash(tmp_path):
    store = ModelStore(tmp_path / "models")
    with pytest.raises(ModelError, match="not stored here"):
        await fetch_model(_LoopbackReqResp(store), "peer", "0" * 64, 5)


async def test_serve_chunk_rejects_bad_requests(tmp_path):
    store = ModelStore(tmp_path / "models")
    assert "error" in await serve_chunk(store, [1])
    assert "error" in await serve_chunk(store, {"hash": "0" * 64, "offset": -1})
    assert "error" in await serve_chunk(store, {"hash": "../x", "offset": 0})
    await trio.lowlevel.checkpoint()


def test_store_without_binding_keeps_names_untouched(tmp_path):
    store = ModelStore(tmp_path / "models")
    kept = store.add_text("kept", _net_text())
    other = _net_text().replace("connections", "connections", 1) + "\n"
    info = store.add_text("taken", other, bind=False)
    assert store.has(info.model_hash)
    index = json.loads((tmp_path / "models" / "names.json").read_text())
    assert index == {"kept": kept.model_hash}
    assert [m.name for m in store.list()] == ["kept"]

    store.bind("taken", info.model_hash)
    assert ModelStore(tmp_path / "models").resolve_local("taken") == info.model_hash
    store.unbind("taken")
    reopened = ModelStore(tmp_path / "models")
    assert reopened.resolve_local("taken") is None
    assert reopened.has(info.model_hash)


def _subparsers(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def test_model_and_infer_commands_have_descriptions():
    from node.cli import build_parser

    top = dict(_subparsers(build_parser()))
    parsers = {"infer": top["infer"], "model": top["model"]}
    parsers.update({f"model {n}": p for n, p in _subparsers(top["model"])})
    assert {"model add", "model fetch", "model list"} <= set(parsers)
    for name, parser in parsers.items():
        assert parser.description, f"{name} --help has no description"
        for action in parser._actions:
            assert action.help, f"{name} option {action.dest} has no help text"
