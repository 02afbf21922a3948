"""The cluster's key-value store, as Ray's ``ray.experimental.internal_kv``."""

from __future__ import annotations

import pytest

import runtime
from runtime import exceptions
from runtime.api import _context
from runtime.api import internal_kv_api as kv_api
from runtime.experimental import internal_kv as kv
from runtime.protocol.rt import KvGetRequest

pytestmark = pytest.mark.timeout(120)


@runtime.remote(num_cpus=0)
def put_in_a_task(key: str, value: bytes) -> bool:
    return kv._internal_kv_put(key, value, namespace="shared")


def test_put_get_list_and_delete(cluster: runtime.RuntimeContext) -> None:
    assert kv._internal_kv_initialized()
    assert kv._internal_kv_get("missing") is None
    assert not kv._internal_kv_exists(b"missing")
    assert kv._internal_kv_put("a/1", "one") is False  # (it had no value)
    assert kv._internal_kv_put(b"a/1", b"uno", overwrite=False) is True
    assert kv._internal_kv_get("a/1") == b"one"  # not overwritten
    assert kv._internal_kv_put("a/1", b"\x80raw") is True
    assert kv._internal_kv_get(b"a/1") == b"\x80raw"
    kv._internal_kv_put("a/2", b"")
    assert kv._internal_kv_exists("a/2") and kv._internal_kv_get("a/2") == b""
    kv._internal_kv_put("b", b"other")
    assert sorted(kv._internal_kv_list("a/")) == [b"a/1", b"a/2"]
    assert sorted(kv._internal_kv_list("")) == [b"a/1", b"a/2", b"b"]

    # Namespaces keep keys apart; the runtime's own entries are not in any.
    kv._internal_kv_put("a/1", b"elsewhere", namespace=b"ns")
    assert kv._internal_kv_get("a/1", namespace="ns") == b"elsewhere"
    assert kv._internal_kv_get("a/1") == b"\x80raw"
    assert kv._internal_kv_list("", namespace="cluster") == []
    kv._internal_kv_put("storage", b"mine", namespace="cluster")
    assert kv._internal_kv_list("", namespace="cluster") == [b"storage"]

    # A task's entries are the driver's to read.
    assert runtime.get(put_in_a_task.remote("from-task", b"hi")) is False
    assert kv._internal_kv_get("from-task", namespace="shared") == b"hi"

    assert kv._internal_kv_del("b") == 1
    assert kv._internal_kv_del("b") == 0
    assert kv._internal_kv_del("a/", del_by_prefix=True) == 2
    assert kv._internal_kv_list("") == []
    assert kv._internal_kv_get("a/1", namespace="ns") == b"elsewhere"


def test_bad_input_is_refused_at_the_call_site(cluster: runtime.RuntimeContext) -> None:
    with pytest.raises(TypeError, match="key must be bytes or str"):
        kv._internal_kv_get(1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="key must not be empty"):
        kv._internal_kv_put("", b"x")
    with pytest.raises(TypeError, match="value must be bytes or str"):
        kv._internal_kv_put("k", 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="namespace"):
        kv._internal_kv_get("k", namespace=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="overwrite"):
        kv._internal_kv_put("k", b"x", overwrite="no")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="del_by_prefix"):
        kv._internal_kv_del("k", del_by_prefix=1)  # type: ignore[arg-type]


async def test_a_blocking_call_on_the_runtimes_loop_names_its_way_out() -> None:
    await runtime.init_async(num_cpus=1)
    try:
        with pytest.raises(exceptions.BlockingCallOnLoopError, match=r"asyncio\.to_thread"):
            kv._internal_kv_get("k")
    finally:
        await runtime.shutdown_async()


def test_not_initialized() -> None:
    assert not kv._internal_kv_initialized()
    with pytest.raises(exceptions.RuntimeNotInitializedError):
        kv._internal_kv_get("k")


def test_exists_does_not_fetch_the_value(cluster: runtime.RuntimeContext) -> None:
    """``_internal_kv_exists`` asks the gcs whether the key has a value: a big
    value stays where it is."""
    kv._internal_kv_put("big", b"x" * 1_000_000)
    assert kv._internal_kv_exists("big") and not kv._internal_kv_exists("small")
    worker = _context.current()
    request = KvGetRequest(namespace=kv_api.USER_NAMESPACE_PREFIX, key=b"big", found_only=True)
    reply = worker.bridge.run_blocking(worker.gcs.kv_get(request))
    assert reply.found and reply.value == b""
    kv._internal_kv_del("big")
