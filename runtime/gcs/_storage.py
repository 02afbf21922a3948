"""The gcs's storage: one interface over its tables, three backends.

The gcs keeps every table in memory for its reads (hot paths read memory
only) and writes each change through a :class:`Storage` before it
acknowledges it, so that a gcs started again on the same storage finds what
its predecessor acknowledged. A table is a map of bytes to bytes (the keys
and values are the gcs's own encodings, protobuf messages mostly).

Backends (chosen by a spec, see :func:`open_storage`):

- ``memory``: nothing survives the process (a private cluster of ``init()``);
- ``sqlite``: an embedded SQLite file (``<session>/gcs_storage.sqlite`` by
  default; a standing cluster's default), written on a thread of its own in
  WAL mode, each write committed before it is acknowledged;
- ``redis://[user:password@]host:port/db``: a Redis server (redis-py's asyncio
  client), one hash per table under the cluster's namespace. How durable an
  acknowledged write is then is the server's to say (its AOF settings).

Invariant: writes land in the order they were asked, whether or not each
caller waited for the one before (the gcs persists a record at each change
without waiting), and for each table what ``load`` returns is the result of
every ``put`` and ``delete`` that returned before it.
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import dataclasses
import os
import sqlite3
import urllib.parse
from typing import Any

#: The tables the gcs keeps.
TABLES = ("meta", "nodes", "jobs", "kv", "actors", "placement_groups")
SQLITE_FILE = "gcs_storage.sqlite"


class Storage(abc.ABC):
    """Durable maps of bytes to bytes, one per table of :data:`TABLES`."""

    kind = ""
    #: Whether what it holds outlives the gcs (a memory one's does not, so
    #: the gcs need not encode its actors and groups for it).
    durable = True

    async def open(self) -> None:  # noqa: B027 -- nothing to open by default
        pass

    async def close(self) -> None:  # noqa: B027
        pass

    @abc.abstractmethod
    async def load(self, table: str) -> dict[bytes, bytes]: ...

    @abc.abstractmethod
    async def put(self, table: str, key: bytes, value: bytes) -> None: ...

    @abc.abstractmethod
    async def delete(self, table: str, key: bytes) -> None: ...

    def describe(self) -> str:
        return self.kind


def _check(table: str) -> None:
    if table not in TABLES:
        raise ValueError(f"unknown gcs table {table!r}")


class MemoryStorage(Storage):
    kind = "memory"
    durable = False

    def __init__(self) -> None:
        self._tables: dict[str, dict[bytes, bytes]] = {t: {} for t in TABLES}

    async def load(self, table: str) -> dict[bytes, bytes]:
        _check(table)
        return dict(self._tables[table])

    async def put(self, table: str, key: bytes, value: bytes) -> None:
        _check(table)
        self._tables[table][key] = value

    async def delete(self, table: str, key: bytes) -> None:
        _check(table)
        self._tables[table].pop(key, None)


class SqliteStorage(Storage):
    """One SQLite file; every call runs on one thread (SQLite's connection is
    not shared between threads), in the order the loop made it."""

    kind = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gcs-sqlite")
        self._db: sqlite3.Connection | None = None

    def describe(self) -> str:
        return f"sqlite ({self.path})"

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        folder = os.path.dirname(self.path)
        if folder:
            os.makedirs(folder, mode=0o700, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)  # private from the start
        os.close(fd)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        # In WAL mode, NORMAL loses nothing when the process dies (only on power loss).
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS entries ("
            "tbl TEXT NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL, PRIMARY KEY (tbl, key))"
        )
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._thread.shutdown(wait=True)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the gcs storage is not open")
        return self._db

    async def load(self, table: str) -> dict[bytes, bytes]:
        _check(table)
        rows = await self._run(self._select, table)
        return {bytes(k): bytes(v) for k, v in rows}

    def _select(self, table: str) -> list[tuple[bytes, bytes]]:
        cursor = self._conn().execute("SELECT key, value FROM entries WHERE tbl = ?", (table,))
        return cursor.fetchall()

    async def put(self, table: str, key: bytes, value: bytes) -> None:
        _check(table)
        await self._run(
            self._write,
            "INSERT OR REPLACE INTO entries (tbl, key, value) VALUES (?, ?, ?)",
            (table, key, value),
        )

    async def delete(self, table: str, key: bytes) -> None:
        _check(table)
        await self._run(self._write, "DELETE FROM entries WHERE tbl = ? AND key = ?", (table, key))

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        self._conn().execute(sql, args)  # autocommit: committed when this returns


class RedisStorage(Storage):
    """A Redis server: table ``t`` is the hash ``runtime:<namespace>:t``."""

    kind = "redis"

    def __init__(self, url: str, namespace: str) -> None:
        self.url = url
        self.namespace = namespace
        self._client: Any = None
        # Writes asked and not sent yet, in the order asked. One writer sends
        # them, a batch at a time in one pipeline (one connection): the
        # client's pool would otherwise send concurrent writes on connections
        # of their own, and an older write of a key could land after a newer.
        self._writes: list[_Write] = []
        self._writer: asyncio.Task[None] | None = None

    def describe(self) -> str:
        parts = urllib.parse.urlsplit(self.url)
        return f"redis ({parts.hostname}:{parts.port or 6379}, namespace {self.namespace})"

    async def open(self) -> None:
        import redis.asyncio  # only clusters that use Redis import its client

        client = redis.asyncio.Redis.from_url(self.url)
        try:
            await client.ping()
        except Exception as e:
            await client.aclose()
            raise ConnectionError(f"cannot reach the gcs storage at {self.describe()}: {e}") from e
        self._client = client

    async def close(self) -> None:
        if self._writer is not None:
            # What was asked is sent first (bounded: the server may be gone).
            await asyncio.wait({self._writer}, timeout=5.0)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _hash(self, table: str) -> str:
        _check(table)
        return f"runtime:{self.namespace}:{table}"

    async def load(self, table: str) -> dict[bytes, bytes]:
        raw = await self._client.hgetall(self._hash(table))
        return {bytes(k): bytes(v) for k, v in raw.items()}

    async def put(self, table: str, key: bytes, value: bytes) -> None:
        await self._write(self._hash(table), key, value)

    async def delete(self, table: str, key: bytes) -> None:
        await self._write(self._hash(table), key, None)

    async def _write(self, name: str, key: bytes, value: bytes | None) -> None:
        if self._client is None:
            raise RuntimeError("the gcs storage is not open")
        done = asyncio.get_running_loop().create_future()
        self._writes.append(_Write(name, key, value, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._send_writes())
        await done  # (a caller cancelled meanwhile: its write is still sent)

    async def _send_writes(self) -> None:
        """Sends the writes asked, in order, a pipeline at a time, until none is left."""
        while self._writes:
            batch, self._writes = self._writes, []
            pipe = self._client.pipeline(transaction=False)
            for write in batch:
                if write.value is None:
                    pipe.hdel(write.name, write.key)
                else:
                    pipe.hset(write.name, write.key, write.value)
            error: BaseException | None = None
            try:
                await pipe.execute()
            except Exception as e:  # each write's caller hears it
                error = e
            for write in batch:
                if write.done.done():
                    continue
                if error is None:
                    write.done.set_result(None)
                else:
                    write.done.set_exception(error)


@dataclasses.dataclass(frozen=True, slots=True)
class _Write:
    """One write asked of :class:`RedisStorage` (``value`` None: a delete)."""

    name: str
    key: bytes
    value: bytes | None
    done: asyncio.Future[None]


def open_storage(spec: str, *, session_dir: str = "", namespace: str = "default") -> Storage:
    """The backend a spec names: ``memory``, ``sqlite`` (in the session, or
    ``sqlite:///path/to/file``) or ``redis://[user:password@]host:port/db``."""
    if not spec or spec == "memory":
        return MemoryStorage()
    if spec == "sqlite":
        if not session_dir:
            raise ValueError("sqlite storage needs a folder: give sqlite:///path/to/file")
        return SqliteStorage(os.path.join(session_dir, SQLITE_FILE))
    if spec.startswith("sqlite:///"):
        path = spec[len("sqlite://") :]
        if os.path.isdir(path):
            path = os.path.join(path, SQLITE_FILE)
        return SqliteStorage(path)
    if spec.startswith(("redis://", "rediss://")):
        parts = urllib.parse.urlsplit(spec)
        if not parts.hostname:
            raise ValueError(f"gcs storage {spec!r} names no host: redis://host:port/db")
        return RedisStorage(spec, namespace)
    raise ValueError(
        f"unknown gcs storage {spec!r}: use memory, sqlite, sqlite:///path "
        "or redis://[user:password@]host:port/db"
    )
