"""Length-prefixed msgpack frames on libp2p streams.

A frame is a 4-byte big-endian unsigned length followed by that many bytes of
msgpack. `FrameDecoder` is the sans-IO core: it takes bytes as they arrive and
returns whole frames. It checks the declared length against the maximum as
soon as the 4 header bytes are in, so a prefix claiming gigabytes costs
nothing but the error. `read_frame` and `write_frame` are the trio shell and
put a deadline on every read and write.

Public API:
    FrameDecoder(max_frame_bytes): feed(data) -> list[bytes], buffered -> int
    encode_frame(payload: bytes) -> bytes
    pack(obj) -> bytes; unpack(data, max_frame_bytes) -> object
    async read_frame(stream, decoder, first_byte_timeout, io_timeout) -> bytes
    async write_frame(stream, payload, timeout) -> None
    FrameError(P2PError) > FrameTooLarge, MalformedFrame, StreamClosedError,
        FrameTimeout
"""

from __future__ import annotations

import struct
from collections import deque
from typing import Any, Final

import msgpack
import trio
from libp2p.network.stream.exceptions import StreamEOF, StreamError

from p2p import P2PError

HEADER: Final = struct.Struct(">I")
_READ_CHUNK: Final = 64 * 1024


class FrameError(P2PError):
    """A frame could not be read or written."""


class FrameTooLarge(FrameError):
    """A frame's declared length exceeds the maximum."""


class MalformedFrame(FrameError):
    """A frame's body is not the msgpack value the protocol expects."""


class StreamClosedError(FrameError):
    """The stream ended or was reset."""


class FrameTimeout(FrameError):
    """A read or write did not finish before its deadline."""


class FrameDecoder:
    """Splits a byte stream into frames of at most `max_frame_bytes`."""

    def __init__(self, max_frame_bytes: int) -> None:
        if max_frame_bytes < 1:
            raise ValueError(f"max_frame_bytes={max_frame_bytes} must be >= 1")
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._expected: int | None = None
        self._frames: deque[bytes] = deque()

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as part of a frame."""
        return len(self._buffer)

    @property
    def in_frame(self) -> bool:
        """True when part of a frame has arrived and the rest has not."""
        return bool(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the frames they complete, in order.

        Raises:
            FrameTooLarge: if a header declares more than `max_frame_bytes`.
                The decoder is unusable afterwards, because the stream is
                out of sync.
        """
        self._buffer += data
        frames = []
        while True:
            if self._expected is None:
                if len(self._buffer) < HEADER.size:
                    break
                (length,) = HEADER.unpack_from(self._buffer)
                if length > self.max_frame_bytes:
                    raise FrameTooLarge(
                        f"frame of {length} bytes exceeds "
                        f"max_frame_bytes={self.max_frame_bytes}"
                    )
                del self._buffer[: HEADER.size]
                self._expected = length
            if len(self._buffer) < self._expected:
                break
            frames.append(bytes(self._buffer[: self._expected]))
            del self._buffer[: self._expected]
            self._expected = None
        return frames

    def pop(self) -> bytes | None:
        """Return the next frame left over from an earlier read, if any."""
        return self._frames.popleft() if self._frames else None

    def push(self, frames: list[bytes]) -> None:
        """Queue frames that a read returned beyond the one it needed."""
        self._frames.extend(frames)


def encode_frame(payload: bytes) -> bytes:
    """Return `payload` with its 4-byte length prefix."""
    return HEADER.pack(len(payload)) + payload


def pack(obj: Any) -> bytes:
    """Encode `obj` as msgpack (bin for bytes, str for text)."""
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes, max_frame_bytes: int) -> Any:
    """Decode one msgpack value; every container is capped by the frame size.

    Raises:
        MalformedFrame: if `data` is not exactly one valid msgpack value.
    """
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_str_len=max_frame_bytes,
            max_bin_len=max_frame_bytes,
            max_array_len=max_frame_bytes,
            max_map_len=max_frame_bytes // 2,
            max_ext_len=0,
        )
    except Exception as error:
        raise MalformedFrame(f"invalid msgpack frame: {error}") from error


async def _read_some(stream: Any) -> bytes:
    try:
        data = await stream.read(_READ_CHUNK)
    except StreamEOF:
        raise StreamClosedError("stream closed by the remote peer") from None
    except StreamError as error:
        raise StreamClosedError(f"stream failed: {error!r}") from error
    if not data:
        raise StreamClosedError("stream closed by the remote peer")
    return data


async def read_frame(
    stream: Any,
    decoder: FrameDecoder,
    first_byte_timeout: float,
    io_timeout: float,
) -> bytes:
    """Read the next frame from `stream`.

    `first_byte_timeout` bounds the wait for a new frame to start, which is
    long on an idle persistent stream. `io_timeout` bounds the time from its
    first byte to its last, so a peer cannot hold a half-sent frame open.

    Raises:
        FrameTooLarge, StreamClosedError, FrameTimeout.
    """
    frame = decoder.pop()
    if frame is not None:
        return frame
    deadline = trio.current_time() + first_byte_timeout
    started = decoder.in_frame
    if started:
        deadline = trio.current_time() + io_timeout
    while True:
        with trio.move_on_at(deadline):
            data = await _read_some(stream)
            frames = decoder.feed(data)
            if frames:
                decoder.push(frames[1:])
                return frames[0]
            if not started:
                started = True
                deadline = trio.current_time() + io_timeout
            continue
        what = "rest of a frame" if started else "a frame"
        raise FrameTimeout(f"timed out waiting for {what}")


async def write_frame(stream: Any, payload: bytes, timeout: float) -> None:
    """Write one frame to `stream` within `timeout` seconds.

    Raises:
        StreamClosedError, FrameTimeout.
    """
    with trio.move_on_after(timeout):
        try:
            await stream.write(encode_frame(payload))
        except StreamError as error:
            raise StreamClosedError(f"stream failed: {error!r}") from error
        return
    raise FrameTimeout(f"timed out writing a frame of {len(payload)} bytes")
