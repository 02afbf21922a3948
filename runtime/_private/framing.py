"""Length-prefixed frames, for the object store's Unix socket.

A frame is a 4-byte big-endian length and that many bytes (one protobuf
message). :class:`FrameDecoder` is a pure state machine: feed it bytes as
they arrive, get whole frames back; a frame longer than the limit is a
protocol error (the peer is disconnected).
"""

from __future__ import annotations

import struct

LENGTH = struct.Struct(">I")
MAX_FRAME = 1 << 20


class FrameError(ValueError):
    """The peer broke the framing."""


def frame(payload: bytes) -> bytes:
    if len(payload) > MAX_FRAME:
        raise FrameError(f"frame of {len(payload)} bytes exceeds {MAX_FRAME}")
    return LENGTH.pack(len(payload)) + payload


class FrameDecoder:
    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buffer = bytearray()
        self._max = max_frame

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames = []
        while len(self._buffer) >= LENGTH.size:
            (length,) = LENGTH.unpack_from(self._buffer)
            if length > self._max:
                raise FrameError(f"frame of {length} bytes exceeds {self._max}")
            end = LENGTH.size + length
            if len(self._buffer) < end:
                break
            frames.append(bytes(self._buffer[LENGTH.size : end]))
            del self._buffer[:end]
        return frames

    @property
    def pending(self) -> int:
        return len(self._buffer)
