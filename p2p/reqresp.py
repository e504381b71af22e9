"""Request/response over persistent libp2p streams.

Each node opens at most one outbound stream per peer on
`/synaptic-mesh/<network>/reqresp/1.0.0` and keeps it open. Requests carry a
request id, so many can be in flight on one stream and responses may come back
in any order. The server side reads requests from each inbound stream and runs
up to `max_inbound_per_peer` of them at once per peer. Beyond that it stops
reading, so a flooding peer's own stream backs up instead of our memory.

Wire format: length-prefixed msgpack frames (`p2p.framing`), each a map:
    request:  {"id": int, "method": str, "body": map}
    response: {"id": int, "ok": true, "body": map}
              {"id": int, "ok": false, "error": str, "message": str}
`error` is one of "unknown_method", "rejected", "internal", "timeout",
"busy". A peer that sends a frame over `max_frame_bytes`, invalid msgpack or
a map of the wrong shape is reported to the guard and its stream reset.

Public API:
    ReqRespParams(...) with validate()
    ReqResp(host, guard, network, params=None)
        set_handler(name: str, fn: async (peer_id: str, request: dict) -> dict)
        remove_handler(name)
        await request(peer_id: str, name: str, request: dict,
                      timeout: float | None = None) -> dict
        async run(task_status)  (the service runs it)
        protocol_id: str
    RequestRejected(reason) raised by a handler: the peer is told "rejected"
        and penalised.
    Errors: ReqRespError(P2PError) > RequestTimeout, RemoteError(code, message),
        ConnectionClosed, RequestTooLarge, InvalidResponse
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from p2p import P2PError
from p2p.framing import (
    FrameDecoder,
    FrameError,
    FrameTooLarge,
    MalformedFrame,
    pack,
    read_frame,
    unpack,
    write_frame,
)

logger = logging.getLogger(__name__)

Handler = Callable[[str, dict], Awaitable[dict]]
_METHOD_NAME: Final = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}$")


class ReqRespError(P2PError):
    """A request failed."""


class RequestTimeout(ReqRespError):
    """No response arrived before the request's timeout."""


class ConnectionClosed(ReqRespError):
    """The stream or connection to the peer closed before the response."""


class RequestTooLarge(ReqRespError):
    """The encoded request exceeds max_frame_bytes; it was not sent."""


class InvalidResponse(ReqRespError):
    """The peer sent a frame that is not a valid response."""


class RemoteError(ReqRespError):
    """The peer sent an error response.

    Attributes:
        code: "unknown_method", "rejected", "internal", "timeout" or "busy".
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"remote error {code}: {message}")
        self.code = code
        self.remote_message = message


class RequestRejected(Exception):
    """Raised by a handler to reject an invalid request; the peer is penalised."""


@dataclass(frozen=True, slots=True)
class ReqRespParams:
    """Limits and timeouts of the request/response layer.

    Attributes:
        max_frame_bytes: largest request or response frame, either direction.
        max_inbound_per_peer: requests from one peer handled at once.
        max_outbound_per_peer: our requests to one peer in flight at once;
            further calls wait for a slot within their own timeout.
        default_timeout: seconds `request` waits when given no timeout.
        handler_timeout: seconds a handler may run before the peer gets a
            "timeout" error response.
        io_timeout: seconds from a frame's first byte to its last, and for
            each write.
        idle_timeout: seconds an inbound stream may stay silent before it is
            closed; the peer reopens it on its next request.
    """

    max_frame_bytes: int = 4 * 1024 * 1024
    max_inbound_per_peer: int = 32
    max_outbound_per_peer: int = 64
    default_timeout: float = 10.0
    handler_timeout: float = 30.0
    io_timeout: float = 10.0
    idle_timeout: float = 300.0

    def validate(self) -> None:
        """Check every field; raise `ValueError` naming the first bad one."""
        for name in (
            "max_frame_bytes",
            "max_inbound_per_peer",
            "max_outbound_per_peer",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        for name in (
            "default_timeout",
            "handler_timeout",
            "io_timeout",
            "idle_timeout",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0 seconds")


class _Outbound:
    """Our persistent stream to one peer and the requests waiting on it."""

    def __init__(self, peer_id: str, stream: Any, params: ReqRespParams) -> None:
        self.peer_id = peer_id
        self.stream = stream
        self.decoder = FrameDecoder(params.max_frame_bytes)
        self.write_lock = trio.Lock()
        self.pending: dict[int, trio.MemorySendChannel[dict]] = {}
        self.closed = False

    def fail_all(self) -> None:
        self.closed = True
        for channel in self.pending.values():
            channel.close()
        self.pending.clear()


class _Opening:
    """An outbound stream being opened, shared by the requests waiting on it."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.outbound: _Outbound | None = None
        self.error: BaseException | None = None


class ReqResp:
    """Request/response endpoint of one host."""

    def __init__(
        self, host: Any, guard: Any, network: str, params: ReqRespParams | None = None
    ) -> None:
        self.params = params or ReqRespParams()
        self.params.validate()
        self.protocol_id = f"/synaptic-mesh/{network}/reqresp/1.0.0"
        self._host = host
        self._guard = guard
        self._handlers: dict[str, Handler] = {}
        self._outbound: dict[str, _Outbound] = {}
        self._opening: dict[str, _Opening] = {}
        self._slots: dict[str, trio.Semaphore] = {}
        self._ids = itertools.count(1)
        self._nursery: trio.Nursery | None = None
        host.set_stream_handler(TProtocol(self.protocol_id), self._handle_stream)

    def set_handler(self, name: str, fn: Handler) -> None:
        """Serve method `name` with `fn(peer_id, request) -> response`."""
        if not _METHOD_NAME.match(name):
            raise ValueError(
                f"method name {name!r} must be 1-64 characters of A-Z a-z 0-9 _.:/-"
            )
        self._handlers[name] = fn

    def remove_handler(self, name: str) -> None:
        """Stop serving `name`; later requests get "unknown_method"."""
        self._handlers.pop(name, None)

    async def run(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Own the reader tasks of our outbound streams; runs until cancelled."""
        for outbound in self._outbound.values():
            outbound.fail_all()
        self._outbound.clear()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            for outbound in self._outbound.values():
                outbound.fail_all()
            self._outbound.clear()

    # Client side

    async def request(
        self, peer_id: str, name: str, request: dict, timeout: float | None = None
    ) -> dict:
        """Send `request` to method `name` of `peer_id`; return the response.

        Raises:
            RequestTooLarge: if the encoded request exceeds max_frame_bytes.
            RequestTimeout: if no response arrives within `timeout` seconds
                (default `params.default_timeout`), stream opening included.
            RemoteError: if the peer sent an error response.
            ConnectionClosed: if the peer is unreachable or the stream broke.
            InvalidResponse: if the peer's answer is malformed.
        """
        if not isinstance(request, dict):
            raise TypeError(f"request must be a dict, not {type(request).__name__}")
        request_id = next(self._ids)
        frame = pack({"id": request_id, "method": name, "body": request})
        if len(frame) > self.params.max_frame_bytes:
            raise RequestTooLarge(
                f"request to {name} is {len(frame)} bytes, "
                f"max_frame_bytes={self.params.max_frame_bytes}"
            )
        if timeout is None:
            timeout = self.params.default_timeout
        with trio.move_on_after(timeout):
            return await self._request(peer_id, request_id, frame)
        raise RequestTimeout(
            f"request {name} to {peer_id} timed out after {timeout:.1f} s"
        )

    async def _request(self, peer_id: str, request_id: int, frame: bytes) -> dict:
        slots = self._slots.setdefault(
            peer_id, trio.Semaphore(self.params.max_outbound_per_peer)
        )
        async with slots:
            outbound = await self._outbound_for(peer_id)
            send, receive = trio.open_memory_channel[dict](1)
            outbound.pending[request_id] = send
            try:
                # A write cut short by the caller's timeout would leave half a
                # frame on the shared stream, so only io_timeout may end it.
                async with outbound.write_lock:
                    with trio.CancelScope(shield=True):
                        await write_frame(
                            outbound.stream, frame, self.params.io_timeout
                        )
                try:
                    message = await receive.receive()
                except trio.EndOfChannel:
                    raise ConnectionClosed(
                        f"stream to {peer_id} closed before the response"
                    ) from None
            except FrameError as error:
                self._drop_outbound(outbound)
                raise ConnectionClosed(
                    f"stream to {peer_id} failed: {error}"
                ) from error
            finally:
                outbound.pending.pop(request_id, None)
        return self._response_body(peer_id, message)

    def _response_body(self, peer_id: str, message: dict) -> dict:
        if message.get("ok") is True:
            body = message.get("body")
            if not isinstance(body, dict):
                raise InvalidResponse(f"response from {peer_id} has no body map")
            return body
        code = message.get("error")
        text = message.get("message", "")
        if not isinstance(code, str) or not isinstance(text, str):
            raise InvalidResponse(f"error response from {peer_id} is malformed")
        raise RemoteError(code[:64], text[:1024])

    async def _outbound_for(self, peer_id: str) -> _Outbound:
        outbound = self._outbound.get(peer_id)
        if outbound is not None and not outbound.closed:
            return outbound
        if self._nursery is None:
            raise ConnectionClosed("request/response service is not running")
        opening = self._opening.get(peer_id)
        if opening is None:
            # The open runs as its own task: a caller that times out stops
            # waiting, but never cancels a half-negotiated stream, which left
            # py-libp2p 0.8.1 unable to open the next one.
            opening = _Opening()
            self._opening[peer_id] = opening
            self._nursery.start_soon(self._open_outbound, peer_id, opening)
        await opening.done.wait()
        if opening.outbound is None:
            raise ConnectionClosed(
                f"cannot open a stream to {peer_id}: {opening.error}"
            )
        return opening.outbound

    async def _open_outbound(self, peer_id: str, opening: _Opening) -> None:
        try:
            with trio.fail_after(self.params.io_timeout):
                stream = await self._host.new_stream(
                    ID.from_base58(peer_id), [TProtocol(self.protocol_id)]
                )
        except Exception as error:
            opening.error = error.__cause__ or error
            logger.debug(
                "reqresp stream open failed peer_id=%s error=%r", peer_id, error
            )
        else:
            outbound = _Outbound(peer_id, stream, self.params)
            self._outbound[peer_id] = outbound
            opening.outbound = outbound
            assert self._nursery is not None
            self._nursery.start_soon(self._read_responses, outbound)
            logger.debug("reqresp stream opened peer_id=%s", peer_id)
        finally:
            del self._opening[peer_id]
            opening.done.set()

    def _drop_outbound(self, outbound: _Outbound) -> None:
        outbound.fail_all()
        if self._outbound.get(outbound.peer_id) is outbound:
            del self._outbound[outbound.peer_id]

    async def _read_responses(self, outbound: _Outbound) -> None:
        peer_id = outbound.peer_id
        try:
            while True:
                # With nothing pending, an idle stream may stay silent forever.
                wait = self.params.idle_timeout * 2 if outbound.pending else 1e9
                frame = await read_frame(
                    outbound.stream, outbound.decoder, wait, self.params.io_timeout
                )
                message = unpack(frame, self.params.max_frame_bytes)
                request_id = message.get("id") if isinstance(message, dict) else None
                if not isinstance(request_id, int):
                    raise MalformedFrame("response is not a map with an integer id")
                channel = outbound.pending.pop(request_id, None)
                if channel is not None:
                    channel.send_nowait(message)
        except (FrameTooLarge, MalformedFrame) as error:
            self._guard.report(peer_id, f"invalid reqresp response: {error}")
        except FrameError as error:
            logger.debug("reqresp stream ended peer_id=%s reason=%s", peer_id, error)
        except Exception:
            logger.exception("reqresp response reader failed peer_id=%s", peer_id)
        finally:
            self._drop_outbound(outbound)
            await _reset(outbound.stream)

    # Server side

    async def _handle_stream(self, stream: Any) -> None:
        peer_id = stream.muxed_conn.peer_id.to_base58()
        async with trio.open_nursery() as nursery:
            await self._read_requests(peer_id, stream, nursery)
            # The stream is gone, so responses to requests still running
            # cannot be delivered.
            nursery.cancel_scope.cancel()
        await _reset(stream)

    async def _read_requests(
        self, peer_id: str, stream: Any, nursery: trio.Nursery
    ) -> None:
        decoder = FrameDecoder(self.params.max_frame_bytes)
        write_lock = trio.Lock()
        limit = trio.Semaphore(self.params.max_inbound_per_peer)
        try:
            while True:
                await limit.acquire()
                frame = await read_frame(
                    stream, decoder, self.params.idle_timeout, self.params.io_timeout
                )
                request = self._parse_request(frame)
                if not self._guard.allow_message(peer_id):
                    limit.release()
                    busy = _error(request[0], "busy", "rate limit exceeded")
                    await self._respond(stream, write_lock, busy)
                    continue
                nursery.start_soon(
                    self._serve_one, peer_id, stream, write_lock, limit, request
                )
        except (FrameTooLarge, MalformedFrame) as error:
            self._guard.report(peer_id, f"invalid reqresp request: {error}")
        except FrameError as error:
            logger.debug(
                "reqresp inbound stream ended peer_id=%s reason=%s", peer_id, error
            )

    def _parse_request(self, frame: bytes) -> tuple[int, str, dict]:
        message = unpack(frame, self.params.max_frame_bytes)
        if not isinstance(message, dict):
            raise MalformedFrame("request is not a map")
        request_id = message.get("id")
        method = message.get("method")
        body = message.get("body")
        if not isinstance(request_id, int) or isinstance(request_id, bool):
            raise MalformedFrame("request id is not an integer")
        if not isinstance(method, str) or not isinstance(body, dict):
            raise MalformedFrame("request method is not a string or body not a map")
        return request_id, method, body

    async def _serve_one(
        self,
        peer_id: str,
        stream: Any,
        write_lock: trio.Lock,
        limit: trio.Semaphore,
        request: tuple[int, str, dict],
    ) -> None:
        request_id, method, body = request
        try:
            response = await self._call_handler(peer_id, request_id, method, body)
        finally:
            limit.release()
        try:
            await self._respond(stream, write_lock, response)
        except FrameError as error:
            logger.debug(
                "reqresp response not sent peer_id=%s reason=%s", peer_id, error
            )

    async def _call_handler(
        self, peer_id: str, request_id: int, method: str, body: dict
    ) -> dict:
        handler = self._handlers.get(method)
        if handler is None:
            self._guard.report(peer_id, "unknown reqresp method", 1.0)
            return _error(request_id, "unknown_method", f"no handler for {method[:64]}")
        try:
            with trio.fail_after(self.params.handler_timeout):
                result = await handler(peer_id, body)
        except trio.TooSlowError:
            logger.warning(
                "reqresp handler timed out peer_id=%s method=%s", peer_id, method
            )
            return _error(request_id, "timeout", "handler timed out")
        except RequestRejected as error:
            self._guard.report(peer_id, f"request rejected by {method}: {error}")
            return _error(request_id, "rejected", str(error)[:1024])
        except Exception as error:
            logger.warning(
                "reqresp handler failed peer_id=%s method=%s error=%r",
                peer_id,
                method,
                error,
                exc_info=True,
            )
            self._guard.report(
                peer_id,
                f"reqresp handler error on {method}",
                self._guard.params.handler_error_penalty,
            )
            return _error(request_id, "internal", "handler failed")
        if not isinstance(result, dict):
            logger.error(
                "reqresp handler returned %s, not dict method=%s",
                type(result).__name__,
                method,
            )
            return _error(request_id, "internal", "handler returned no map")
        return {"id": request_id, "ok": True, "body": result}

    async def _respond(self, stream: Any, write_lock: trio.Lock, message: dict) -> None:
        frame = pack(message)
        if len(frame) > self.params.max_frame_bytes:
            logger.error(
                "reqresp response too large bytes=%d max=%d",
                len(frame),
                self.params.max_frame_bytes,
            )
            frame = pack(_error(message["id"], "internal", "response too large"))
        async with write_lock:
            await write_frame(stream, frame, self.params.io_timeout)


def _error(request_id: int, code: str, message: str) -> dict:
    return {"id": request_id, "ok": False, "error": code, "message": message}


async def _reset(stream: Any) -> None:
    try:
        await stream.reset()
    except Exception:
        logger.debug("stream reset failed", exc_info=True)
