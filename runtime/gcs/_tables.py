"""The gcs's state: nodes, jobs and the key-value store.

Plain synchronous tables, touched only from the gcs's loop and read from
memory; each change is written through the gcs's :class:`Storage` by the
``save_*`` methods (which the service awaits before it answers), and
``recover`` rebuilds the tables from it when a gcs starts again.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

from ..protocol.rt import ActorTableEntry, JobInfo, NodeInfo, PlacementGroupInfo
from ._storage import MemoryStorage, Storage


class JobState(enum.Enum):
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"


@dataclass
class JobRecord:
    job_id: int
    namespace: str
    driver_pid: int
    driver_host: str
    state: JobState = JobState.RUNNING
    entrypoint: str = ""
    start_time: float = field(default_factory=time.time)
    end_time: float = 0.0
    metadata: dict[str, str] = field(default_factory=dict)

    def info(self) -> JobInfo:
        """The record as the wire (and the storage) carries it."""
        return JobInfo(
            job_id=self.job_id,
            namespace=self.namespace,
            driver_pid=self.driver_pid,
            driver_host=self.driver_host,
            finished=self.state is JobState.FINISHED,
            start_time=self.start_time,
            end_time=self.end_time,
            entrypoint=self.entrypoint,
            metadata=dict(self.metadata),
        )


@dataclass
class GcsTables:
    nodes: dict[bytes, NodeInfo] = field(default_factory=dict)
    jobs: dict[int, JobRecord] = field(default_factory=dict)
    kv: dict[tuple[str, bytes], bytes] = field(default_factory=dict)
    # Invariant: every id in ``jobs`` is below ``next_job_id``.
    next_job_id: int = 1
    storage: Storage = field(default_factory=MemoryStorage)
    # What ``recover`` found of the managers' tables (handed to them at start).
    recovered_actors: list[ActorTableEntry] = field(default_factory=list)
    recovered_groups: list[PlacementGroupInfo] = field(default_factory=list)

    def add_job(
        self,
        namespace: str,
        driver_pid: int,
        driver_host: str,
        entrypoint: str = "",
        metadata: dict[str, str] | None = None,
    ) -> JobRecord:
        record = JobRecord(
            self.next_job_id,
            namespace,
            driver_pid,
            driver_host,
            entrypoint=entrypoint,
            metadata=dict(metadata or {}),
        )
        self.jobs[record.job_id] = record
        self.next_job_id += 1
        return record

    def finish_job(self, job_id: int) -> bool:
        """Marks a job finished; False if it was not running."""
        record = self.jobs.get(job_id)
        if record is None or record.state is JobState.FINISHED:
            return False
        record.state = JobState.FINISHED
        record.end_time = time.time()
        return True

    def kv_put(self, namespace: str, key: bytes, value: bytes, overwrite: bool) -> bool:
        """Stores ``value``; returns whether the key is new."""
        k = (namespace, key)
        added = k not in self.kv
        if added or overwrite:
            self.kv[k] = value
        return added

    def kv_get(self, namespace: str, key: bytes) -> bytes | None:
        return self.kv.get((namespace, key))

    def kv_keys(self, namespace: str, prefix: bytes) -> list[bytes]:
        """The namespace's keys that start with ``prefix`` (a scan: for listings)."""
        return [k for ns, k in self.kv if ns == namespace and k.startswith(prefix)]

    def kv_del(self, namespace: str, key: bytes, by_prefix: bool) -> list[bytes]:
        """Deletes the key (or every key it starts); the keys deleted."""
        keys = self.kv_keys(namespace, key) if by_prefix else [key]
        return [k for k in keys if self.kv.pop((namespace, k), None) is not None]

    # -- durability ---------------------------------------------------------------------
    async def save_node(self, node: NodeInfo) -> None:
        await self.storage.put("nodes", node.node_id, bytes(node))

    async def save_job(self, record: JobRecord) -> None:
        """The job, and the next id (a restarted gcs never reuses one)."""
        await self.storage.put("meta", b"next_job_id", str(self.next_job_id).encode())
        await self.storage.put("jobs", str(record.job_id).encode(), bytes(record.info()))

    async def save_actor(self, actor_id: bytes, entry: bytes) -> None:
        await self.storage.put("actors", actor_id, entry)

    async def forget_actor(self, actor_id: bytes) -> None:
        await self.storage.delete("actors", actor_id)

    async def save_group(self, pg_id: bytes, info: bytes) -> None:
        await self.storage.put("placement_groups", pg_id, info)

    async def forget_group(self, pg_id: bytes) -> None:
        await self.storage.delete("placement_groups", pg_id)

    async def save_kv(self, namespace: str, key: bytes) -> None:
        value = self.kv.get((namespace, key))
        if value is not None:
            await self.storage.put("kv", _kv_key(namespace, key), value)

    async def forget_kv(self, namespace: str, keys: list[bytes]) -> None:
        for key in keys:
            await self.storage.delete("kv", _kv_key(namespace, key))

    @classmethod
    async def recover(cls, storage: Storage) -> GcsTables:
        """The tables a previous gcs on ``storage`` acknowledged."""
        tables = cls(storage=storage)
        for raw in (await storage.load("nodes")).values():
            node = NodeInfo.parse(raw)
            tables.nodes[node.node_id] = node
        for raw in (await storage.load("jobs")).values():
            job = JobInfo.parse(raw)
            tables.jobs[job.job_id] = JobRecord(
                job.job_id,
                job.namespace,
                job.driver_pid,
                job.driver_host,
                JobState.FINISHED if job.finished else JobState.RUNNING,
                job.entrypoint,
                job.start_time,
                job.end_time,
                dict(job.metadata),
            )
        for raw_key, value in (await storage.load("kv")).items():
            tables.kv[_split_kv_key(raw_key)] = value
        actors = await storage.load("actors")
        tables.recovered_actors = [ActorTableEntry.parse(raw) for raw in actors.values()]
        groups = await storage.load("placement_groups")
        tables.recovered_groups = [PlacementGroupInfo.parse(raw) for raw in groups.values()]
        meta = await storage.load("meta")
        tables.next_job_id = max(
            int(meta.get(b"next_job_id", b"1")), max(tables.jobs, default=0) + 1
        )
        return tables


def _kv_key(namespace: str, key: bytes) -> bytes:
    """A kv entry's storage key: the namespace's length, the namespace, the key."""
    ns = namespace.encode()
    return len(ns).to_bytes(2, "big") + ns + key


def _split_kv_key(raw: bytes) -> tuple[str, bytes]:
    size = int.from_bytes(raw[:2], "big")
    return raw[2 : 2 + size].decode(), raw[2 + size :]
