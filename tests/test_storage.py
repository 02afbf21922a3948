"""The gcs's storage backends: memory, an SQLite file, a real Redis server."""

from __future__ import annotations

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


async def test_bad_specs_and_unreachable_servers() -> None:
    for spec in ("mysql://x", "sqlite", "redis:///0"):
        with pytest.raises(ValueError):
            open_storage(spec)
    unreachable = open_storage("redis://127.0.0.1:9/0")
    with pytest.raises(ConnectionError, match="cannot reach the gcs storage"):
        await unreachable.open()
