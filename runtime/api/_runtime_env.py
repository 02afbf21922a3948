"""The caller's side of runtime environments: merging, packing, uploading.

A task's or actor's ``runtime_env`` is merged over its caller's; local folders
it names (``working_dir``, ``py_modules``) are packed on the calling thread
(once per folder and process), a setup hook that is a function pickled, and
these packages put in the gcs's key-value
store from the runtime's loop, posted before the submission itself so they
are on their way first (a node that fetches one before it lands waits for it).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from .._private import packaging, serialization
from .._private import runtime_env as renv
from ..core_worker import CoreWorker
from ..protocol.rt import KvPutRequest

#: Packed folders of this process: (real path, excludes, keep_top) -> (uri, bytes).
_packed: dict[tuple[str, tuple[str, ...], bool], tuple[str, bytes]] = {}
#: Setup hooks that are functions, pickled: function -> (uri, bytes).
_packed_hooks: weakref.WeakKeyDictionary[Any, tuple[str, bytes]] = weakref.WeakKeyDictionary()
#: Packages put already, by (gcs address, uri).
_uploaded: set[tuple[tuple[str, int], str]] = set()


def localize(env: Mapping[str, Any]) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
    """``env`` with local folders replaced by package URIs, and the packages."""
    out = dict(env)
    excludes = tuple(env.get("excludes") or ())
    packages: list[tuple[str, bytes]] = []

    def package(path: str, keep_top: bool) -> str:
        if packaging.is_uri(path):
            return path
        key = (os.path.realpath(path), excludes if not keep_top else (), keep_top)
        packed = _packed.get(key)
        if packed is None:
            packed = _packed[key] = packaging.pack(path, key[1], keep_top=keep_top)
        packages.append(packed)
        return packed[0]

    if env.get("working_dir"):
        out["working_dir"] = package(env["working_dir"], keep_top=False)
    if env.get("py_modules"):
        out["py_modules"] = [package(p, keep_top=True) for p in env["py_modules"]]
    if isinstance(env.get("pip"), str):
        out["pip"] = renv.requirements(env["pip"])  # the file's lines travel
    hook = env.get("worker_process_setup_hook")
    if callable(hook):  # its pickle travels as a package (a path travels as it is)
        packed_hook = _hook_package(hook)
        packages.append(packed_hook)
        out["worker_process_setup_hook"] = packed_hook[0]
    out.pop("excludes", None)  # applied: the package is what travels
    return out, packages


def _hook_package(hook: Callable[[], Any]) -> tuple[str, bytes]:
    """A setup hook's (uri, pickle), pickled once per function while it lives
    (an environment given per task is localized at each submission)."""
    try:
        cached = _packed_hooks.get(hook)
    except TypeError:  # (a callable that takes no weak reference)
        cached = None
    if cached is None:
        data = serialization.dumps(hook)
        cached = (renv.HOOK_URI_PREFIX + hashlib.sha256(data).hexdigest(), data)
        with contextlib.suppress(TypeError):
            _packed_hooks[hook] = cached
    return cached


def upload(worker: CoreWorker, packages: list[tuple[str, bytes]]) -> None:
    """Puts packages not put yet (from any thread; posted to the loop)."""
    for uri, data in packages:
        key = (worker.gcs_address, uri)
        if key in _uploaded:
            continue
        _uploaded.add(key)
        request = KvPutRequest(
            namespace=packaging.KV_NAMESPACE, key=uri.encode(), value=data, overwrite=False
        )
        worker.post(_spawn, worker, worker.gcs.kv_put(request))


def _spawn(worker: CoreWorker, coro: Any) -> None:
    worker.background.spawn(coro)


def prepare(env: Mapping[str, Any], worker: CoreWorker) -> str:
    """A checked environment, its folders uploaded, as it travels."""
    localized, packages = localize(env)
    upload(worker, packages)
    return renv.to_wire(localized)


def resolve(options: Mapping[str, Any], worker: CoreWorker) -> str:
    """The wire environment of a task or actor: its own over its caller's."""
    own = options.get("runtime_env")
    if not own:
        return worker.runtime_env
    merged = renv.merge(renv.from_wire(worker.runtime_env), renv.check(own, "runtime_env"))
    return prepare(merged, worker)
