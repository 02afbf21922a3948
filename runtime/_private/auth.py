"""Cluster authentication: one secret token per cluster, on every connection.

Every gRPC server of a cluster (gcs, raylets, core workers) refuses a call
whose ``authorization`` metadata is not ``Bearer <the cluster's token>``
(checked once per call or stream, in constant time); every client adds it.
The object transfer port checks the token each transfer request carries.

Where a process finds its cluster's token, first found wins:
- ``RUNTIME_AUTH_TOKEN`` in its environment (processes the runtime starts get
  it this way, and so do drivers and nodes on other machines);
- the ``auth_token`` file of the session folder, on this machine, of the
  cluster whose gcs it connects to (only the user can read it);
- the user's token file (``~/.runtime/auth_token``, or
  ``RUNTIME_AUTH_TOKEN_PATH``), which ``runtime start --head`` writes.

A private cluster made by ``init()`` gets a fresh token. With
``RUNTIME_AUTH_MODE=disabled`` nothing is checked or sent (a warning says so
at start).
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from collections.abc import Callable
from typing import Any

from grpclib.const import Status
from grpclib.events import RecvRequest, SendRequest, listen
from grpclib.exceptions import GRPCError

logger = logging.getLogger(__name__)

TOKEN_ENV = "RUNTIME_AUTH_TOKEN"
MODE_ENV = "RUNTIME_AUTH_MODE"
PATH_ENV = "RUNTIME_AUTH_TOKEN_PATH"
SESSION_FILE = "auth_token"
_HEADER = "authorization"

HOW_TO = (
    "pass the cluster's token: set RUNTIME_AUTH_TOKEN (its value is in the token file "
    "`runtime start --head` printed), or run on the head machine as the user who started it"
)

# The token this process speaks with (None: not known yet; "" when disabled).
_token: str | None = None


def enabled() -> bool:
    return os.environ.get(MODE_ENV, "token").lower() != "disabled"


def new_token() -> str:
    return secrets.token_hex(32)


def set_token(token: str | None) -> None:
    """The token this process sends and checks from now on (None: forget it)."""
    global _token
    _token = token


def token() -> str:
    """This process's token ("" when authentication is disabled or none is known)."""
    if not enabled():
        return ""
    if _token is not None:
        return _token
    return os.environ.get(TOKEN_ENV, "")


def env(token_value: str) -> dict[str, str]:
    """What hands the token to a child process."""
    return {TOKEN_ENV: token_value} if token_value else {}


def user_token_path() -> str:
    return os.environ.get(PATH_ENV) or os.path.join(
        os.path.expanduser("~"), ".runtime", SESSION_FILE
    )


def write_token_file(path: str, token_value: str) -> None:
    """Writes the token where only this user can read it (the folder too, if new)."""
    folder = os.path.dirname(path)
    if folder and not os.path.isdir(folder):
        os.makedirs(folder, mode=0o700, exist_ok=True)
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(token_value + "\n")
    os.replace(path + ".tmp", path)


def read_token_file(path: str) -> str:
    """The token in ``path`` if this user owns it and no one else can read it; else ""."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return ""
    with os.fdopen(fd, encoding="ascii") as f:
        info = os.fstat(f.fileno())
        if info.st_uid != os.getuid() or info.st_mode & 0o077:
            logger.warning("ignoring the token file %s: it must be the user's, mode 0600", path)
            return ""
        return f.read().strip()


def find_token(session_dirs: list[str]) -> str:
    """The token for a cluster (see the module's docstring for the order)."""
    if not enabled():
        return ""
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    for session_dir in session_dirs:
        found = read_token_file(os.path.join(session_dir, SESSION_FILE))
        if found:
            return found
    return read_token_file(user_token_path())


# -- gRPC ---------------------------------------------------------------------------------------


def protect_server(server: Any, expected: Callable[[], str] = token) -> None:
    """Makes ``server`` refuse calls without the token (read when each call comes)."""

    async def check(event: RecvRequest) -> None:
        wanted = expected()
        if not wanted:
            return
        given = event.metadata.get(_HEADER, "")
        if not isinstance(given, str) or not token_matches(given, f"Bearer {wanted}"):
            raise GRPCError(Status.UNAUTHENTICATED, f"unauthenticated: {HOW_TO}")

    listen(server, RecvRequest, check)


def sign_channel(channel: Any, token_value: str) -> None:
    """Makes every call on ``channel`` carry the token."""
    if not token_value:
        return
    header = f"Bearer {token_value}"

    async def add(event: SendRequest) -> None:
        event.metadata[_HEADER] = header

    listen(channel, SendRequest, add)


def token_matches(given: str | bytes, wanted: str) -> bool:
    """Whether ``given`` is ``wanted``, compared in constant time: every port's
    check of a token (an empty ``wanted``: auth is off, anything matches)."""
    if not wanted:
        return True
    raw = given.encode() if isinstance(given, str) else given
    return hmac.compare_digest(raw, wanted.encode())


def check_transfer(given: bytes) -> bool:
    """Whether a transfer request's token is this cluster's."""
    return token_matches(given, token())
