"""Authentication: every port of a cluster refuses a peer without its token."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from typing import Any

import numpy as np
import pytest
from conftest import cluster_of, run_driver
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

import runtime
from runtime._private import auth
from runtime._private.framing import LENGTH, frame
from runtime.protocol.rt import (
    CoreWorkerStub,
    Empty,
    GcsStub,
    RayletStub,
    TransferHeader,
    TransferRequest,
)

pytestmark = pytest.mark.timeout(120)


async def _call(host: str, port: int, stub: Any, method: str, token: str | None) -> Any:
    channel = Channel(host, port)
    if token is not None:
        auth.sign_channel(channel, token)
    try:
        return await getattr(stub(channel), method)(Empty())
    finally:
        channel.close()


def refused(host: str, port: int, stub: Any, method: str, token: str | None) -> str:
    """The refusal's message (the call must be refused as unauthenticated)."""
    with pytest.raises(GRPCError) as raised:
        asyncio.run(_call(host, port, stub, method, token))
    assert raised.value.status is Status.UNAUTHENTICATED
    return raised.value.message or ""


def test_every_grpc_service_refuses_a_stranger() -> None:
    with cluster_of(head_node_args={"num_cpus": 1}) as cluster:
        assert cluster.head is not None
        token = cluster.head.token
        assert len(token) == 64
        runtime.init(address=cluster.address)
        gcs = cluster.head.gcs_address
        raylet = cluster.head.raylet_address
        driver = runtime.get_runtime_context()
        host, port, _ = runtime.api._context.current().address  # the driver's core worker
        targets = [
            (*gcs, GcsStub, "get_all_nodes"),
            (*raylet, RayletStub, "get_node_stats"),
            (host, port, CoreWorkerStub, "ask_exit"),
        ]
        for host, port, stub, method in targets:
            message = refused(host, port, stub, method, None)
            assert "RUNTIME_AUTH_TOKEN" in message
            refused(host, port, stub, method, "0" * 64)
        # With the token, the same calls are answered.
        assert asyncio.run(_call(*gcs, GcsStub, "get_all_nodes", token)).nodes
        assert asyncio.run(_call(*raylet, RayletStub, "get_node_stats", token)).node
        assert driver.get_job_id()


def test_the_transfer_port_refuses_a_stranger() -> None:
    with cluster_of(head_node_args={"num_cpus": 1}) as cluster:
        runtime.init(address=cluster.address)
        ref = runtime.put(np.ones(1 << 20))
        node = runtime.nodes()[0]
        for token in (b"", b"0" * 64):
            with socket.create_connection(("127.0.0.1", node["ObjectManagerPort"])) as conn:
                request = TransferRequest(object_id=ref.binary(), token=token)
                conn.sendall(frame(bytes(request)))
                head = conn.recv(LENGTH.size, socket.MSG_WAITALL)
                (length,) = LENGTH.unpack(head)
                header = TransferHeader.parse(conn.recv(length, socket.MSG_WAITALL))
                assert not header.found and "unauthenticated" in header.error
                assert conn.recv(1) == b""  # and the connection is closed


def test_drivers_of_this_machine_find_the_token_and_the_files_are_private() -> None:
    with cluster_of(head_node_args={"num_cpus": 1}) as cluster:
        assert cluster.head is not None
        token_file = os.path.join(cluster.head.session.path, auth.SESSION_FILE)
        assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
        code = (
            "import runtime\n"
            f"runtime.init(address={cluster.address!r})\n"
            "print(runtime.get(runtime.remote(lambda: 7).remote()))\n"
        )
        env = {k: v for k, v in os.environ.items() if k != auth.TOKEN_ENV}
        done = run_driver(code, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip().endswith("7")
        # A wrong token in the environment wins, and is refused with how to fix it.
        wrong = run_driver(code, env={**env, auth.TOKEN_ENV: "0" * 64})
        assert wrong.returncode != 0
        assert "unauthenticated" in wrong.stderr and "RUNTIME_AUTH_TOKEN" in wrong.stderr
        assert "runtime.exceptions.AuthenticationError" in wrong.stderr  # Ray's type


def test_authentication_can_be_disabled_with_a_warning() -> None:
    code = (
        "import runtime\n"
        "runtime.init(num_cpus=1)\n"
        "from runtime.api import _context\n"
        "import asyncio\n"
        "from grpclib.client import Channel\n"
        "from runtime.protocol.rt import GcsStub, Empty\n"
        "host, port = _context.current().gcs_address\n"
        "async def call():\n"
        "    channel = Channel(host, port)\n"
        "    try:\n"
        "        return await GcsStub(channel).get_all_nodes(Empty())\n"
        "    finally:\n"
        "        channel.close()\n"
        "print(len(asyncio.run(call()).nodes), runtime.get(runtime.remote(lambda: 5).remote()))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != auth.TOKEN_ENV}
    done = run_driver(code, env={**env, auth.MODE_ENV: "disabled"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["1", "5"]
    assert "authentication is disabled" in done.stderr


def test_session_files_are_private_and_strangers_sessions_are_not_trusted(tmp_path: Any) -> None:
    with cluster_of(head_node_args={"num_cpus": 1}) as cluster:
        assert cluster.head is not None
        session = cluster.head.session
        runtime.init(address=cluster.address)
        runtime.get(runtime.remote(lambda: print("a line for the log")).remote())

        def mode(path: str) -> int:
            return stat.S_IMODE(os.stat(path).st_mode)

        assert mode(session.path) == 0o700
        assert all(mode(os.path.join(session.path, d)) == 0o700 for d in ("logs", "sockets"))
        logs = [os.path.join(session.logs, f) for f in os.listdir(session.logs)]
        assert logs and all(mode(f) == 0o600 for f in logs)
        sockets = [os.path.join(session.sockets, f) for f in os.listdir(session.sockets)]
        assert sockets and all(mode(f) == 0o600 for f in sockets)
        # A session folder others may enter is not trusted for discovery.
        assert session.private()
        os.chmod(session.path, 0o755)
        try:
            assert not session.private()
            config = runtime._private.config.Config.load()
            found = runtime._private.cluster.token_for(cluster.head.gcs_address, config)
            assert found != cluster.head.token
        finally:
            os.chmod(session.path, 0o700)


def test_a_store_client_cannot_change_or_delete_anothers_object() -> None:
    from runtime.core_worker._store_client import StoreClient

    with cluster_of(head_node_args={"num_cpus": 1}) as cluster:
        runtime.init(address=cluster.address)
        original = np.arange(1 << 18, dtype=np.int64)  # 2 MiB: in the store
        ref = runtime.put(original)
        node = runtime.nodes()[0]
        stranger = StoreClient(node["ObjectStoreSocketName"], os.urandom(16), lambda: None)
        try:
            value = stranger.get_value(ref.binary())
            assert not value.flags.writeable
            # Even writing through the raw mapping it was handed changes only its own copy.
            for mapping in stranger._mappings.values():
                mapping[:4096] = b"\xff" * 4096
            assert (runtime.get(ref) == original).all()
            with pytest.raises(runtime.exceptions.RaySystemError, match="owner"):
                stranger.delete([ref.binary()])
            assert (runtime.get(ref) == original).all()
        finally:
            stranger.close()
