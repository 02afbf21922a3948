"""Runtime environments, as in Ray's ``runtime_env``: checked, merged and put
on the wire as canonical JSON.

A job's environment (``init(runtime_env=...)``) is the default of its tasks
and actors; one given to a task or actor (``.options(runtime_env=...)``) is
merged over the environment of the caller, as Ray merges them: each field it
names replaces the caller's, except ``env_vars``, whose variables are merged
one by one. The result travels as canonical JSON (sorted keys), which is also
the key that keeps workers of different environments apart.

Built: ``env_vars``, ``config``, ``working_dir``, ``py_modules``,
``excludes``, ``pip`` and ``worker_process_setup_hook``; local folders become
package URIs (``packaging``), a requirements file its lines, and a setup hook
that is a function the URI of its pickle before the environment travels.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Mapping
from typing import Any

from . import packaging

#: Fields a runtime environment may have, with what each is.
FIELDS = {
    "env_vars": "a dict of environment variables (str -> str) set in the worker",
    "config": "a dict: setup_timeout_seconds (number), eager_install (bool)",
    "working_dir": "a local folder or .zip: the worker's current folder",
    "py_modules": "a list of local packages, folders or wheels made importable",
    "pip": "a list of requirements, or a requirements file",
    "excludes": "a list of patterns left out of working_dir",
    "worker_process_setup_hook": (
        "a function (or the 'module.function' path of one) each worker of the "
        "environment calls before its first task"
    ),
}
#: Recognised, not built yet.
NOT_YET: frozenset[str] = frozenset()
#: Ray's fields this runtime does not offer.
UNSUPPORTED = frozenset(
    {
        "conda",
        "container",
        "image_uri",
        "uv",
        "java_jars",
        "nsight",
        "mpi",
    }
)
_CONFIG = {"setup_timeout_seconds", "eager_install"}

#: The most bytes of canonical JSON an environment may take on the wire.
MAX_WIRE_BYTES = 256 * 1024


def check(value: Any, where: str) -> dict[str, Any]:
    """A normalized copy of a user's ``runtime_env``, or a clear error naming
    what is wrong (``where``: the call site, for the message)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{where}: runtime_env must be a dict, got {type(value).__name__}")
    env: dict[str, Any] = {}
    for name, field in value.items():
        if name in UNSUPPORTED:
            raise ValueError(f"{where}: runtime_env field {name!r} is not supported")
        if name not in FIELDS:
            valid = ", ".join(sorted(FIELDS))
            raise ValueError(f"{where}: unknown runtime_env field {name!r}; valid ones: {valid}")
        if name in NOT_YET:
            raise ValueError(
                f"{where}: runtime_env field {name!r} is not available yet (env_vars, "
                "working_dir, py_modules, excludes and config are)"
            )
        if field is None:
            continue
        if name == "env_vars":
            env[name] = _env_vars(field, where)
        elif name == "config":
            env[name] = _config(field, where)
        elif name == "working_dir":
            env[name] = _path(field, where, name)
        elif name == "pip":
            env[name] = _pip(field, where)
        elif name == "worker_process_setup_hook":
            env[name] = _setup_hook(field, where)
        else:  # py_modules, excludes
            if not isinstance(field, list | tuple):
                raise TypeError(f"{where}: runtime_env[{name!r}] must be a list of str")
            env[name] = [_path(item, where, name) for item in field]
    return env


def _pip(value: Any, where: str) -> list[str] | str:
    """Requirements (a list of str, ``{"packages": [...]}``), or a requirements
    file's path (read by ``requirements``). Options are refused: a requirement
    is a package, never ``--index-url`` or ``-r``."""
    if isinstance(value, Mapping):
        value = value.get("packages", [])
    if isinstance(value, str):
        return _path(value, where, "pip")
    if not isinstance(value, list | tuple):
        raise TypeError(f"{where}: runtime_env['pip'] must be a list of requirements or a file")
    for item in value:
        if not isinstance(item, str) or not item.strip() or item.strip().startswith("-"):
            raise ValueError(f"{where}: runtime_env['pip'] has an invalid requirement {item!r}")
    return [item.strip() for item in value]


#: How a setup hook that is a function travels: its pickle, in the packages'
#: key-value namespace under this prefix and its digest (``is_hook_uri``).
HOOK_URI_PREFIX = "gcs://_setup_hook_"
_HOOK_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$")


def _setup_hook(value: Any, where: str) -> Any:
    """A function (made a package URI by the caller's side before it travels),
    or a dotted path to one."""
    if callable(value):
        return value
    if isinstance(value, str) and (_HOOK_PATH.match(value) or is_hook_uri(value)):
        return value
    raise TypeError(
        f"{where}: runtime_env['worker_process_setup_hook'] must be a function or a "
        f"'module.function' path, got {value!r}"
    )


def is_hook_uri(value: str) -> bool:
    return value.startswith(HOOK_URI_PREFIX) and len(value) == len(HOOK_URI_PREFIX) + 64


def requirements(path: str) -> list[str]:
    """The requirements of a file (comments and blank lines left out)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.split("#", 1)[0].strip() for line in f]
    except OSError as e:
        raise ValueError(f"runtime_env: cannot read the requirements file {path!r}: {e}") from e
    return _pip([line for line in lines if line], f"runtime_env pip file {path!r}")  # type: ignore[return-value]


def _path(value: Any, where: str, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"{where}: runtime_env[{name!r}] needs non-empty str paths, got {value!r}")
    return value


def _env_vars(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{where}: runtime_env['env_vars'] must be a dict of str to str")
    for key, item in value.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise ValueError(f"{where}: runtime_env['env_vars'] has an invalid name {key!r}")
        if not isinstance(item, str) or "\0" in item:
            raise TypeError(
                f"{where}: runtime_env['env_vars'][{key!r}] must be a str, got {item!r}"
            )
    return dict(value)


def _config(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{where}: runtime_env['config'] must be a dict")
    unknown = set(value) - _CONFIG
    if unknown:
        raise ValueError(f"{where}: unknown runtime_env['config'] keys {sorted(unknown)}")
    timeout = value.get("setup_timeout_seconds")
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, numbers.Real)
        or not (float(timeout) == -1 or (math.isfinite(float(timeout)) and float(timeout) > 0))
    ):
        raise ValueError(f"{where}: setup_timeout_seconds must be > 0 (or -1), got {timeout!r}")
    eager = value.get("eager_install")
    if eager is not None and not isinstance(eager, bool):
        raise TypeError(f"{where}: eager_install must be a bool, got {eager!r}")
    return dict(value)


def merge(parent: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    """``child`` over ``parent``: its fields replace, its env_vars merge."""
    merged = {**parent, **child}
    if "env_vars" in parent and "env_vars" in child:
        merged["env_vars"] = {**parent["env_vars"], **child["env_vars"]}
    return merged


def to_wire(env: Mapping[str, Any]) -> str:
    """Canonical JSON ("" for no environment)."""
    if not env:
        return ""
    return json.dumps(env, sort_keys=True, separators=(",", ":"))


def from_wire(text: str) -> dict[str, Any]:
    return dict(json.loads(text)) if text else {}


def invalid_wire(text: str) -> str:
    """Why an environment received over the wire cannot be used, or "": its
    folders must be package URIs by now, never a path of the sender's."""
    if not text:
        return ""
    if len(text) > MAX_WIRE_BYTES:
        return "runtime_env is too large"
    try:
        env = check(json.loads(text), "runtime_env")
    except (ValueError, TypeError) as e:  # (json's errors are ValueErrors)
        return str(e)
    for uri in packages_of(env):
        if not packaging.is_uri(uri):
            return f"runtime_env names {uri!r}, which is not a package URI"
    if isinstance(env.get("pip"), str):
        return "runtime_env pip must be a list of requirements by now, not a file"
    return ""


def needs_setup(env: Mapping[str, Any]) -> bool:
    """Whether a node must prepare something before a worker of it starts."""
    return bool(env.get("working_dir") or env.get("py_modules") or env.get("pip"))


def set_up_at_start(env: Mapping[str, Any]) -> bool:
    """Whether a job's environment is prepared when the job starts (its first
    workers start with it), rather than at its first task (``eager_install``)."""
    return not needs_setup(env) or (env.get("config") or {}).get("eager_install") is not False


def packages_of(env: Mapping[str, Any]) -> list[str]:
    """The package URIs (or local paths, before upload) an environment names."""
    return ([env["working_dir"]] if env.get("working_dir") else []) + list(
        env.get("py_modules") or []
    )
