"""The cluster's key-value store, as Ray's ``ray.experimental.internal_kv``.

Keys and values are bytes (a str is taken as its UTF-8); a namespace (str,
bytes or None: the default one) keeps keys apart. The gcs keeps the entries,
in its durable storage when it has one, for the cluster's lifetime. They
live apart from the runtime's own entries (exported functions, runtime
environments, job records): a user's key cannot overwrite those.

Each call is one gcs round trip and blocks; on the runtime's own loop thread
it raises ``BlockingCallOnLoopError`` (run it with ``asyncio.to_thread``).
"""

from __future__ import annotations

from typing import Any

from ..core_worker import check_blocking_allowed
from ..protocol.rt import KvDelRequest, KvGetRequest, KvKeysRequest, KvPutRequest
from . import _context

#: What the gcs's namespace of a user's entries starts with.
USER_NAMESPACE_PREFIX = "user/"


def _internal_kv_initialized() -> bool:
    """Whether this process is connected to a cluster (the store can be used)."""
    return _context.current_or_none() is not None


def _internal_kv_get(key: str | bytes, *, namespace: str | bytes | None = None) -> bytes | None:
    """The key's value; None if it has none."""
    request = KvGetRequest(namespace=_namespace(namespace), key=_bytes("key", key))
    reply = _call("_internal_kv_get", lambda gcs: gcs.kv_get(request))
    return reply.value if reply.found else None


def _internal_kv_exists(key: str | bytes, *, namespace: str | bytes | None = None) -> bool:
    """Whether the key has a value (the value itself does not travel)."""
    request = KvGetRequest(namespace=_namespace(namespace), key=_bytes("key", key), found_only=True)
    return bool(_call("_internal_kv_exists", lambda gcs: gcs.kv_get(request)).found)


def _internal_kv_put(
    key: str | bytes,
    value: str | bytes,
    overwrite: bool = True,
    *,
    namespace: str | bytes | None = None,
) -> bool:
    """Sets the key's value (unless it has one and ``overwrite`` is False);
    returns whether it had one already."""
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be a bool, got {type(overwrite).__name__}")
    request = KvPutRequest(
        namespace=_namespace(namespace),
        key=_bytes("key", key),
        value=_bytes("value", value, empty=True),
        overwrite=overwrite,
    )
    reply = _call("_internal_kv_put", lambda gcs: gcs.kv_put(request))
    return not reply.added


def _internal_kv_del(
    key: str | bytes, *, del_by_prefix: bool = False, namespace: str | bytes | None = None
) -> int:
    """Deletes the key (with ``del_by_prefix``, every key it starts); how many were."""
    if not isinstance(del_by_prefix, bool):
        raise TypeError(f"del_by_prefix must be a bool, got {type(del_by_prefix).__name__}")
    request = KvDelRequest(
        namespace=_namespace(namespace),
        key=_bytes("key", key, empty=del_by_prefix),
        by_prefix=del_by_prefix,
    )
    return _call("_internal_kv_del", lambda gcs: gcs.kv_del(request)).deleted


def _internal_kv_list(prefix: str | bytes, *, namespace: str | bytes | None = None) -> list[bytes]:
    """The keys that start with ``prefix``."""
    request = KvKeysRequest(namespace=_namespace(namespace), prefix=_bytes("prefix", prefix, True))
    return list(_call("_internal_kv_list", lambda gcs: gcs.kv_keys(request)).keys)


# -- helpers ------------------------------------------------------------------------------


def _call(name: str, call: Any) -> Any:
    check_blocking_allowed(
        f"experimental.internal_kv.{name}",
        f"await asyncio.to_thread(internal_kv.{name}, ...)",
        _context.runtime_loop(),
    )
    worker = _context.current()
    return worker.bridge.run_blocking(call(worker.gcs))


def _bytes(what: str, value: Any, empty: bool = False) -> bytes:
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, bytes):
        raise TypeError(f"{what} must be bytes or str, got {type(value).__name__}")
    if not value and not empty:
        raise ValueError(f"{what} must not be empty")
    return value


def _namespace(namespace: Any) -> str:
    """The gcs's namespace for a user's: its bytes kept one to one (latin-1)."""
    if namespace is None:
        return USER_NAMESPACE_PREFIX
    if isinstance(namespace, str):
        namespace = namespace.encode()
    if not isinstance(namespace, bytes):
        raise TypeError(f"namespace must be bytes, str or None, got {type(namespace).__name__}")
    return USER_NAMESPACE_PREFIX + namespace.decode("latin-1")
