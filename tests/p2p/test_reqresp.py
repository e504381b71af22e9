"""Request/response: framing core, and real hosts on 127.0.0.1."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from p2p.framing import (
    FrameDecoder,
    FrameTooLarge,
    MalformedFrame,
    encode_frame,
    pack,
    unpack,
)
from p2p.guard import GuardParams
from p2p.host import HostConfig
from p2p.reqresp import (
    ConnectionClosed,
    RemoteError,
    ReqRespParams,
    RequestRejected,
    RequestTimeout,
    RequestTooLarge,
)
from p2p.service import DialError, open_service


def test_decoder_splits_frames_across_chunks():
    decoder = FrameDecoder(100)
    wire = encode_frame(b"hello") + encode_frame(b"") + encode_frame(b"world")
    frames = []
    for i in range(len(wire)):
        frames += decoder.feed(wire[i : i + 1])
    assert frames == [b"hello", b"", b"world"]
    assert decoder.buffered == 0


def test_decoder_rejects_length_before_body():
    decoder = FrameDecoder(1024)
    with pytest.raises(FrameTooLarge, match="4294967295"):
        decoder.feed(struct.pack(">I", 0xFFFFFFFF))


def test_decoder_accepts_exact_maximum():
    decoder = FrameDecoder(8)
    assert decoder.feed(encode_frame(b"12345678")) == [b"12345678"]
    with pytest.raises(FrameTooLarge):
        decoder.feed(encode_frame(b"123456789"))


def test_unpack_rejects_garbage():
    with pytest.raises(MalformedFrame):
        unpack(b"\xc1", 100)
    with pytest.raises(MalformedFrame):
        unpack(pack({1: 2}), 100)  # integer map keys are not allowed


def test_params_invalid_field_named():
    with pytest.raises(ValueError, match="io_timeout"):
        ReqRespParams(io_timeout=0).validate()


def _config(tmp_path: Path, name: str) -> HostConfig:
    return HostConfig(identity_path=tmp_path / f"{name}.key", network="rrtest")


@pytest.fixture
async def pair(tmp_path):
    params = ReqRespParams(handler_timeout=1.0, max_frame_bytes=64 * 1024)
    async with (
        open_service(_config(tmp_path, "a"), reqresp_params=params) as a,
        open_service(_config(tmp_path, "b"), reqresp_params=params) as b,
    ):
        await b.connect(a.listen_addrs[0])
        yield a, b


async def test_request_roundtrip(pair):
    a, b = pair

    async def echo(peer_id, request):
        return {"from": peer_id, "value": request["value"]}

    a.reqresp.set_handler("echo", echo)
    response = await b.reqresp.request(a.peer_id, "echo", {"value": b"\x00\x01"})
    assert response == {"from": b.peer_id, "value": b"\x00\x01"}


async def test_protocol_id_contains_network(pair):
    a, _ = pair
    assert a.reqresp.protocol_id == "/synaptic-mesh/rrtest/reqresp/1.0.0"


async def test_concurrent_requests_share_one_stream(pair):
    a, b = pair
    release = trio.Event()

    async def slow(peer_id, request):
        if request["n"] == 0:
            await release.wait()
        return {"n": request["n"]}

    a.reqresp.set_handler("slow", slow)
    results = {}

    async def call(n):
        results[n] = await b.reqresp.request(a.peer_id, "slow", {"n": n})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, 0)
        for n in range(1, 20):
            nursery.start_soon(call, n)
        with trio.fail_after(5):
            while len(results) < 19:
                await trio.sleep(0.01)
        # Request 0 is still waiting, so later responses overtook it.
        assert 0 not in results
        release.set()
    assert results == {n: {"n": n} for n in range(20)}
    assert len(b.reqresp._outbound) == 1


async def test_unknown_method_is_remote_error(pair):
    a, b = pair
    with pytest.raises(RemoteError) as info:
        await b.reqresp.request(a.peer_id, "nope", {})
    assert info.value.code == "unknown_method"


async def test_raising_handler_contained(pair, caplog):
    a, b = pair

    async def broken(peer_id, request):
        raise KeyError("missing")

    async def echo(peer_id, request):
        return request

    a.reqresp.set_handler("broken", broken)
    a.reqresp.set_handler("echo", echo)
    with pytest.raises(RemoteError) as info:
        await b.reqresp.request(a.peer_id, "broken", {})
    assert info.value.code == "internal"
    assert f"peer_id={b.peer_id}" in caplog.text
    assert await b.reqresp.request(a.peer_id, "echo", {"x": 1}) == {"x": 1}


async def test_rejected_request_lowers_score(pair):
    a, b = pair

    async def picky(peer_id, request):
        raise RequestRejected("field x missing")

    a.reqresp.set_handler("picky", picky)
    with pytest.raises(RemoteError) as info:
        await b.reqresp.request(a.peer_id, "picky", {})
    assert info.value.code == "rejected"
    assert "field x missing" in info.value.remote_message
    assert a.guard.scorer.score(b.peer_id, trio.current_time()) < 0


async def test_handler_timeout_reported(pair):
    a, b = pair

    async def stuck(peer_id, request):
        await trio.sleep_forever()

    a.reqresp.set_handler("stuck", stuck)
    with pytest.raises(RemoteError) as info:
        await b.reqresp.request(a.peer_id, "stuck", {}, timeout=5)
    assert info.value.code == "timeout"


async def test_client_timeout(pair):
    a, b = pair

    async def slow(peer_id, request):
        await trio.sleep(0.5)
        return {}

    a.reqresp.set_handler("slow", slow)
    with pytest.raises(RequestTimeout):
        await b.reqresp.request(a.peer_id, "slow", {}, timeout=0.1)
    # The stream survives a client-side timeout.
    assert await b.reqresp.request(a.peer_id, "slow", {}, timeout=5) == {}


async def test_request_too_large_not_sent(pair):
    a, b = pair
    with pytest.raises(RequestTooLarge):
        await b.reqresp.request(a.peer_id, "echo", {"x": b"\x00" * 70_000})


async def test_unknown_peer_is_connection_closed(pair, tmp_path):
    _, b = pair
    ghost = ID.from_base58("12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA")
    with pytest.raises(ConnectionClosed):
        await b.reqresp.request(ghost.to_base58(), "echo", {}, timeout=2)


async def test_oversized_frame_resets_stream_and_reports(pair):
    a, b = pair

    async def echo(peer_id, request):
        return request

    a.reqresp.set_handler("echo", echo)
    stream = await b.host.new_stream(
        ID.from_base58(a.peer_id), [TProtocol(a.reqresp.protocol_id)]
    )
    await stream.write(struct.pack(">I", 0x7FFFFFFF))
    with trio.fail_after(5):
        while not any(r == "invalid reqresp request" for (_, r) in _reasons(a)):
            await trio.sleep(0.01)
    assert (b.peer_id, _reason_of(a, b.peer_id)) in a.guard.rejections
    # A fresh request from the same peer still works.
    assert await b.reqresp.request(a.peer_id, "echo", {"y": 2}) == {"y": 2}


def _reasons(svc):
    return [(peer, reason.split(":")[0]) for (peer, reason) in svc.guard.rejections]


def _reason_of(svc, peer_id):
    return next(r for (p, r) in svc.guard.rejections if p == peer_id)


async def test_peer_rate_limited_gets_busy(tmp_path):
    guard = GuardParams(max_message_rate=1.0, message_burst=3.0)
    async with (
        open_service(_config(tmp_path, "a"), guard_params=guard) as a,
        open_service(_config(tmp_path, "b")) as b,
    ):
        await b.connect(a.listen_addrs[0])

        async def echo(peer_id, request):
            return request

        a.reqresp.set_handler("echo", echo)
        codes = []
        for _ in range(6):
            try:
                await b.reqresp.request(a.peer_id, "echo", {})
                codes.append("ok")
            except RemoteError as error:
                codes.append(error.code)
        assert codes[:3] == ["ok", "ok", "ok"]
        assert "busy" in codes[3:]


async def test_repeat_offender_banned_and_disconnected(tmp_path):
    # Three invalid frames at 10 points each cross a threshold of -25.
    guard = GuardParams(invalid_penalty=10.0, ban_threshold=-25.0, ban_seconds=60.0)
    async with (
        open_service(_config(tmp_path, "a"), guard_params=guard) as a,
        open_service(_config(tmp_path, "b")) as b,
    ):
        await b.connect(a.listen_addrs[0])
        for sent in range(1, 4):
            stream = await b.host.new_stream(
                ID.from_base58(a.peer_id), [TProtocol(a.reqresp.protocol_id)]
            )
            await stream.write(encode_frame(b"\xc1 not msgpack"))
            with trio.fail_after(5):
                while _rejections_of(a, b.peer_id) < sent:
                    await trio.sleep(0.01)
        assert a.guard.is_banned(b.peer_id)
        with trio.fail_after(5):
            while a.connected_peers():
                await trio.sleep(0.01)
        # The banned peer cannot come back while the ban lasts.
        with pytest.raises(DialError):
            await b.connect(a.listen_addrs[0])
        assert a.connected_peers() == []


def _rejections_of(svc, peer_id):
    return sum(n for (peer, _), n in svc.guard.rejections.items() if peer == peer_id)
