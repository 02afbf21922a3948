"""The gcs's storage backends: memory, an SQLite file, a real Redis server."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from runtime.gcs import open_storage

pytestmark = pytest.mark.timeout(60)


async def _roundtrip(spec: str, **where: Any) -> None:
    storage = open_storage(spec, **where)
    await storage.open()
    try:
        await storage.put("nodes", b"n1", b"first")
        await storage.put("nodes", b"n1", b"second")  # the last write wins
        await storage.put("nodes", b"n2", b"\x00\xff binary")
        await storage.put("kv", b"n1", b"another table")
        await storage.delete("nodes", b"n2")
        await storage.delete("nodes", b"never there")
        assert await storage.load("nodes") == {b"n1": b"second"}
        assert await storage.load("kv") == {b"n1": b"another table"}
        assert await storage.load("actors") == {}
        with pytest.raises(ValueError, match="unknown gcs table"):
            await storage.put("tasks", b"k", b"v")
    finally:
        await storage.close()


async def test_memory() -> None:
    await _roundtrip("memory")


async def test_sqlite_survives_its_process(tmp_path: Any) -> None:
    await _roundtrip("sqlite", session_dir=str(tmp_path))
    path = tmp_path / "gcs_storage.sqlite"
    assert path.exists() and (os.stat(path).st_mode & 0o077) == 0  # private
    again = open_storage(f"sqlite://{path}")
    await again.open()
    try:
        assert await again.load("nodes") == {b"n1": b"second"}
    finally:
        await again.close()


async def test_redis(redis_server: str) -> None:
    await _roundtrip(redis_server, namespace="cluster-a")
    other = open_storage(redis_server, namespace="cluster-b")  # clusters share a server
    await other.open()
    try:
        assert await other.load("nodes") == {}
    finally:
        await other.close()
    again = open_storage(redis_server, namespace="cluster-a")
    await again.open()
    try:
        assert await again.load("kv") == {b"n1": b"another table"}
    finally:
        await again.close()


async def _writes_land_in_the_order_asked(spec: str, **where: Any) -> None:
    storage = open_storage(spec, **where)
    await storage.open()
    try:
        # Writes asked without waiting for each other (as the gcs persists a
        # record at each change) land in the order asked: the last one wins.
        writes = [asyncio.ensure_future(storage.put("actors", b"a", b"%d" % i)) for i in range(64)]
        writes.append(asyncio.ensure_future(storage.delete("actors", b"gone")))
        writes.append(asyncio.ensure_future(storage.put("actors", b"gone", b"back")))
        await asyncio.gather(*writes)
        assert await storage.load("actors") == {b"a": b"63", b"gone": b"back"}
    finally:
        await storage.close()


async def test_sqlite_writes_land_in_the_order_asked(tmp_path: Any) -> None:
    await _writes_land_in_the_order_asked("sqlite", session_dir=str(tmp_path))


async def test_redis_writes_land_in_the_order_asked(redis_server: str) -> None:
    await _writes_land_in_the_order_asked(redis_server)


async def test_bad_specs_and_unreachable_servers() -> None:
    for spec in ("mysql://x", "sqlite", "redis:///0"):
        with pytest.raises(ValueError):
            open_storage(spec)
    unreachable = open_storage("redis://127.0.0.1:9/0")
    with pytest.raises(ConnectionError, match="cannot reach the gcs storage"):
        await unreachable.open()


def _start_gcs(storage: str, session: Any, token: str) -> Any:
    from runtime._private import auth, process

    return process.spawn(
        "runtime.gcs",
        ["--port", "0", "--session-dir", str(session), "--storage", storage],
        env=auth.env(token),
        log_path=str(session / "gcs.log"),
        tie_to_parent=True,
        timeout=30,
    )


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_a_gcs_killed_and_started_again_finds_what_it_acknowledged(
    backend: str, tmp_path: Any, request: pytest.FixtureRequest
) -> None:
    import signal

    from runtime._private import auth, rpc
    from runtime.protocol.rt import (
        AddJobRequest,
        Empty,
        GcsStub,
        KvDelRequest,
        KvGetRequest,
        KvKeysRequest,
        KvPutRequest,
    )

    storage = "sqlite" if backend == "sqlite" else request.getfixturevalue("redis_server")
    token = auth.new_token()
    first = _start_gcs(storage, tmp_path, token)
    channels = rpc.ChannelPool(token)
    try:
        gcs = GcsStub(channels.get("127.0.0.1", int(first.info["port"])))
        put = KvPutRequest(namespace="fn", key=b"f", value=b"\x80code", overwrite=False)
        assert (await gcs.kv_put(put)).added
        for key in (b"gone/1", b"gone/2"):
            await gcs.kv_put(KvPutRequest(namespace="fn", key=key, value=b"x"))
        gone = await gcs.kv_del(KvDelRequest(namespace="fn", key=b"gone/", by_prefix=True))
        assert gone.deleted == 2
        job = await gcs.add_job(AddJobRequest(namespace="ns", driver_pid=123))
        os.kill(first.pid, signal.SIGKILL)  # no goodbye: only what was acknowledged stays
        first.stop()

        second = _start_gcs(storage, tmp_path, token)
        try:
            gcs = GcsStub(channels.get("127.0.0.1", int(second.info["port"])))
            got = await gcs.kv_get(KvGetRequest(namespace="fn", key=b"f"))
            assert got.found and got.value == b"\x80code"
            keys = await gcs.kv_keys(KvKeysRequest(namespace="fn"))
            assert keys.keys == [b"f"]  # (the deleted keys stayed deleted)
            jobs = (await gcs.list_jobs(Empty())).jobs
            assert [(j.job_id, j.namespace, j.driver_pid) for j in jobs] == [
                (job.job_id, "ns", 123)
            ]
            again = await gcs.add_job(AddJobRequest(namespace="ns", driver_pid=124))
            assert again.job_id == job.job_id + 1  # ids are never reused
        finally:
            second.stop()
    finally:
        channels.close()
