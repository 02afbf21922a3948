"""The runtime environments a node started workers in, as the state API's
``list_runtime_envs`` shows them (Ray's columns: whether the last setup
succeeded, how long it took, why it failed; how many live workers use one is
the scheduler's to count, and is passed in).

Invariant: an environment in use (by the counts last passed in) is never
dropped from the table; of the unused, at most ``limit`` are kept, the least
recently set up going first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Mapping
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

    def set_up(
        self, env: str, seconds: float, error: str = "", in_use: Collection[str] = ()
    ) -> None:
        """A setup of ``env`` ended (an ``error`` if it failed). A setup that
        found everything made already keeps the row of the one that made it."""
        row = self._rows.get(env)
        if row is None or error or not row.success:
            self._rows[env] = _Row(not error, round(seconds * 1000.0, 3), error)
        self._rows.move_to_end(env)
        self._trim(in_use)

    def entries(self, users: Mapping[str, int]) -> list[RuntimeEnvEntry]:
        """The rows, each with ``users[env]`` live workers using it."""
        self._trim(users)
        return [
            RuntimeEnvEntry(
                runtime_env=env,
                success=row.success,
                creation_time_ms=row.creation_time_ms,
                ref_cnt=users.get(env, 0),
                error=row.error,
            )
            for env, row in self._rows.items()
        ]

    def _trim(self, in_use: Collection[str]) -> None:
        unused = [env for env in self._rows if env not in in_use]
        for env in unused[: max(0, len(unused) - self._limit)]:
            del self._rows[env]
