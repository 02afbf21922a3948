"""The task channel: its framing, and a worker's task port refusing strangers."""

from __future__ import annotations

import asyncio
import pickle
import socket
from typing import Any

import pytest
from conftest import cluster_of

import runtime
from runtime._private import task_channel as tc

pytestmark = pytest.mark.timeout(120)


def test_frames_split_anywhere_come_out_whole() -> None:
    frames = [(tc.BATCH, pickle.dumps([i] * i)) for i in range(1, 40)] + [(tc.HELLO, b"")]
    data = b"".join(tc.encode(kind, payload) for kind, payload in frames)
    for step in (1, 2, 3, 7, 64, len(data)):
        decoder = tc.Decoder()
        out: list[tuple[int, bytes]] = []
        for at in range(0, len(data), step):
            out.extend(decoder.feed(data[at : at + step]))
        assert out == frames
    # One frame at a time when asked; the rest wait for a call with no data.
    decoder = tc.Decoder()
    assert decoder.feed(data, first_only=True) == frames[:1]
    assert decoder.feed(b"") == frames[1:]


def test_bad_frames_are_refused() -> None:
    with pytest.raises(tc.ChannelError, match="exceeds"):
        tc.Decoder(max_frame=10).feed(tc.HEADER.pack(11, tc.BATCH) + b"x" * 11)
    with pytest.raises(tc.ChannelError, match="unknown frame kind"):
        tc.Decoder().feed(tc.HEADER.pack(0, 99))


def test_a_burst_leaves_in_batches_of_flush_at_in_order() -> None:
    """Items queued in one loop iteration leave in batches of ``FLUSH_AT`` as
    they are queued (the peer starts on the first while more are made), the
    rest at the end of the iteration; the peer gets them all, in order."""
    count = 2 * tc.FLUSH_AT + 5

    async def main() -> list[list[Any]]:
        loop = asyncio.get_running_loop()
        batches: list[list[Any]] = []
        done = asyncio.Event()

        def on_items(items: list[Any]) -> None:
            batches.append(items)
            if sum(map(len, batches)) == count:
                done.set()

        def ignore(_: Any) -> None:
            pass

        left, right = socket.socketpair()
        _, sender = await loop.create_connection(lambda: tc.Channel(ignore, ignore), sock=left)
        receiver_transport, _ = await loop.create_connection(
            lambda: tc.Channel(on_items, ignore), sock=right
        )
        for i in range(count):
            sender.send(i)
        await asyncio.wait_for(done.wait(), 30)
        sender.close()
        receiver_transport.close()
        return batches

    batches = asyncio.run(main())
    assert [len(b) for b in batches] == [tc.FLUSH_AT, tc.FLUSH_AT, 5]
    assert [i for b in batches for i in b] == list(range(count))


@runtime.remote
class Probe:
    def task_port(self) -> int:
        worker = runtime.api._context.current()
        assert worker.task_server is not None
        return worker.task_server.port

    def local_name(self) -> str:
        return tc.local_name(runtime.api._context.current().worker_id)


def _connect(where: int | str) -> socket.socket:
    if isinstance(where, str):  # the worker's abstract Unix socket
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(30)
        conn.connect(where)
        return conn
    return socket.create_connection(("127.0.0.1", where), timeout=30)


def _refusal(where: int | str, first: bytes) -> tuple[int, str]:
    """What the task port answers to ``first``: a refusal, then end of stream."""
    with _connect(where) as conn:
        conn.sendall(first)
        data = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    frames = tc.Decoder().feed(data)
    assert len(frames) == 1, frames
    return frames[0][0], frames[0][1].decode()


def test_a_workers_task_port_refuses_strangers_and_junk() -> None:
    with cluster_of(head_node_args={"num_cpus": 1}) as cluster:
        assert cluster.head is not None
        runtime.init(address=cluster.address)
        probe: Any = Probe.remote()
        port = runtime.get(probe.task_port.remote())
        task = pickle.dumps([(b"x" * 24, b"", "evil", None, [], 1, 0, None, b"", 0)])
        hello = tc.MAGIC
        cases = [
            (tc.encode(tc.HELLO, hello), "RUNTIME_AUTH_TOKEN"),  # no token
            (tc.encode(tc.HELLO, hello + b"0" * 64), "unauthenticated"),  # a wrong one
            (tc.encode(tc.BATCH, task), "unexpected frame"),  # a task before any hello
            (tc.encode(tc.HELLO, b"GET / HTTP/1.1\r\n"), "not a task channel client"),
            (tc.HEADER.pack(1 << 20, tc.HELLO), "exceeds"),  # a hello too large to read
            (b"\x00\x00\x00\x01\x63x", "unknown frame kind"),
        ]
        local = runtime.get(probe.local_name.remote())
        for first, why in cases:
            for where in (port, local):
                kind, reason = _refusal(where, first)
                assert kind == tc.REFUSED and why in reason, reason
        # The right token is heard, and the actor still answers.
        token = cluster.head.token.encode()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(tc.encode(tc.HELLO, hello + token))
            conn.sendall(tc.encode(tc.BATCH, pickle.dumps([])))
        assert runtime.get(probe.task_port.remote()) == port
