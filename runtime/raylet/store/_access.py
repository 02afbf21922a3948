"""Who may reach a node's store: its socket's path and its peers' credentials.

The socket is always a path (mode 0600), never a Linux abstract socket, which
has no permissions: any local user could connect to one.
"""

from __future__ import annotations

import os
import socket
import struct


def same_user(conn: socket.socket) -> bool:
    """Whether the peer of a Unix socket runs as this process's user (its
    credentials, as the kernel gives them)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return bool(uid == os.getuid())


#: Unix socket paths longer than this do not fit in ``sockaddr_un``.
_MAX_SOCKET_PATH = 100


def store_socket_path(session_dir: str, node_id: bytes) -> str:
    """The store's socket in the session's ``sockets/``. When that path is too
    long for a Unix socket, the same folder is reached through a descriptor this
    process keeps open on it, ``/proc/<pid>/fd/<n>/``: a short path to the same
    place, usable by this user's processes while the raylet lives, and removed
    with the session like any other socket. Always a path, never an abstract
    socket: those have no permissions, so any local user could connect."""
    name = f"store-{node_id.hex()[:12]}"
    folder = os.path.join(session_dir, "sockets")
    path = os.path.join(folder, name)
    if len(path.encode()) <= _MAX_SOCKET_PATH:
        return path
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)  # open for the raylet's life
    return f"/proc/{os.getpid()}/fd/{fd}/{name}"
