"""The runtime environments a node started workers in, as the state API's
``list_runtime_envs`` shows them (Ray's columns: whether the last setup
succeeded, how long it took, why it failed, how many live workers use it).

Invariant: ``_users`` counts, per environment, the workers started in it and
not yet exited; an environment in use is never dropped from the table, and
at most ``limit`` unused ones are kept (the least recently set up go first).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from ..protocol.rt import RuntimeEnvEntry

#: Unused environments remembered (a long-lived node sees many).
DEFAULT_LIMIT = 1000


@dataclass
class _Row:
    success: bool
    creation_time_ms: float
    error: str


class RuntimeEnvTable:
    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self._limit = limit
        self._rows: OrderedDict[str, _Row] = OrderedDict()  # by env (canonical JSON)
        self._users: dict[str, int] = {}
        self._by_worker: dict[bytes, str] = {}

    def set_up(self, env: str, seconds: float, error: str = "") -> None:
        """A setup of ``env`` ended (an ``error`` if it failed). A setup that
        found everything made already keeps the row of the one that made it."""
        row = self._rows.get(env)
        if row is None or error or not row.success:
            self._rows[env] = _Row(not error, round(seconds * 1000.0, 3), error)
        self._rows.move_to_end(env)
        self._trim()

    def started(self, worker_id: bytes, env: str) -> None:
        self._by_worker[worker_id] = env
        self._users[env] = self._users.get(env, 0) + 1

    def exited(self, worker_id: bytes) -> None:
        env = self._by_worker.pop(worker_id, None)
        if env is None:
            return
        left = self._users.get(env, 0) - 1
        if left > 0:
            self._users[env] = left
        else:
            self._users.pop(env, None)
            self._trim()

    def entries(self) -> list[RuntimeEnvEntry]:
        return [
            RuntimeEnvEntry(
                runtime_env=env,
                success=row.success,
                creation_time_ms=row.creation_time_ms,
                ref_cnt=self._users.get(env, 0),
                error=row.error,
            )
            for env, row in self._rows.items()
        ]

    def _trim(self) -> None:
        unused = [env for env in self._rows if env not in self._users]
        for env in unused[: max(0, len(unused) - self._limit)]:
            del self._rows[env]
