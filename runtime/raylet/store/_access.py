"""Who may reach a node's store: its socket's path and its peers' credentials.

The socket is always a path (mode 0600), never a Linux abstract socket, which
has no permissions: any local user could connect to one.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import tempfile


def same_user(conn: socket.socket) -> bool:
    """Whether the peer of a Unix socket runs as this process's user (its
    credentials, as the kernel gives them)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return bool(uid == os.getuid())


#: Unix socket paths longer than this do not fit in ``sockaddr_un``.
_MAX_SOCKET_PATH = 100


def store_socket_path(session_dir: str, node_id: bytes) -> str:
    """The store's socket in the session's ``sockets/``, or, when that path is
    too long for a Unix socket, in a short folder of this user's
    (``<tmp>/rt-<uid>``, mode 0700). Always a path, never an abstract socket:
    those have no permissions, so any local user could connect."""
    name = f"store-{node_id.hex()[:12]}"
    path = os.path.join(session_dir, "sockets", name)
    if len(path.encode()) <= _MAX_SOCKET_PATH:
        return path
    folder = os.path.join(tempfile.gettempdir(), f"rt-{os.getuid()}")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    info = os.stat(folder)
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(f"{folder} must belong to this user with mode 0700")
    _remove_stale_sockets(folder)
    return os.path.join(folder, f"{name}-{os.getpid()}")


def _remove_stale_sockets(folder: str) -> None:
    """Sockets left by raylets killed before they could remove them."""
    for entry in os.listdir(folder):
        pid = entry.rsplit("-", 1)[-1]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, entry))
