"""Session directories: everything one cluster writes, in one place.

``<session_root>/session_<time>_<pid>/`` holds ``logs/``, ``sockets/``,
``spill/``, ``cluster.json`` (the gcs address) and ``pids`` (one line per
process the cluster started, ``<pid> <role>``). ``session_latest`` links to
the newest one. ``runtime stop`` and ``init(address="auto")`` find clusters
through these files, never by matching process names.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

CLUSTER_FILE = "cluster.json"
PIDS_FILE = "pids"
LATEST = "session_latest"


@dataclass(frozen=True)
class Session:
    path: str

    @property
    def logs(self) -> str:
        return os.path.join(self.path, "logs")

    @property
    def sockets(self) -> str:
        return os.path.join(self.path, "sockets")

    @property
    def spill(self) -> str:
        return os.path.join(self.path, "spill")

    @classmethod
    def create(cls, root: str) -> Session:
        os.makedirs(root, exist_ok=True)
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        micros = int((time.time() % 1) * 1e6)
        path = os.path.join(root, f"session_{stamp}_{micros:06d}_{os.getpid()}")
        session = cls(path)
        # Only its user may enter it: logs, sockets and spilled objects are private.
        os.makedirs(path, mode=0o700)
        os.chmod(path, 0o700)
        for sub in (session.logs, session.sockets, session.spill):
            os.makedirs(sub, mode=0o700, exist_ok=True)
        link = os.path.join(root, LATEST)
        tmp_link = f"{link}.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_link)
        os.symlink(path, tmp_link)
        os.replace(tmp_link, link)
        return session

    def private(self) -> bool:
        """Whether this user owns the folder and no one else may enter it (only
        such sessions are trusted by discovery: another user could plant one)."""
        try:
            info = os.stat(self.path)
        except OSError:
            return False
        return info.st_uid == os.getuid() and not info.st_mode & 0o077

    def record_pid(self, pid: int, role: str) -> None:
        with open(os.path.join(self.path, PIDS_FILE), "a", encoding="utf-8") as f:
            f.write(f"{pid} {role}\n")

    def pids(self) -> list[tuple[int, str]]:
        try:
            with open(os.path.join(self.path, PIDS_FILE), encoding="utf-8") as f:
                rows = [line.split() for line in f if line.strip()]
        except FileNotFoundError:
            return []
        return [(int(row[0]), row[1]) for row in rows if len(row) == 2]

    def write_cluster_info(self, info: dict[str, Any]) -> None:
        tmp = os.path.join(self.path, CLUSTER_FILE + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(info, f)
        os.replace(tmp, os.path.join(self.path, CLUSTER_FILE))

    def cluster_info(self) -> dict[str, Any] | None:
        try:
            with open(os.path.join(self.path, CLUSTER_FILE), encoding="utf-8") as f:
                info: dict[str, Any] = json.load(f)
                return info
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    @staticmethod
    def all(root: str) -> list[Session]:
        try:
            names = sorted(os.listdir(root))
        except FileNotFoundError:
            return []
        return [
            Session(os.path.join(root, n))
            for n in names
            if n.startswith("session_") and n != LATEST and os.path.isdir(os.path.join(root, n))
        ]

    @staticmethod
    def latest(root: str) -> Session | None:
        link = os.path.join(root, LATEST)
        if not os.path.islink(link):
            return None
        return Session(os.path.realpath(link))
