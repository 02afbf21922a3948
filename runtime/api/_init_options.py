"""``init()``'s arguments that Ray programs pass besides the cluster's shape:
logging (``logging_level``, ``logging_format``, ``configure_logging``), the
session root (``_temp_dir``), the dashboard's address (``dashboard_host``,
``dashboard_port``) and ``local_mode``, refused with its reason."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .._private import job_logging
from .._private.config import Config, spill_folder

#: Ray's default format for its logger.
DEFAULT_FORMAT = "%(asctime)s\t%(levelname)s %(filename)s:%(lineno)s -- %(message)s"


def _from_ray_names(where: str, system_config: dict[str, Any]) -> dict[str, Any]:
    """Ray's ``_system_config`` names its documentation shows, as this runtime's:
    ``object_spilling_config`` (a filesystem folder) and any ``<name>_ms`` whose
    ``<name>_s`` is a setting here (in seconds). Other names go on as given
    (an unknown one is refused by name when the configuration loads)."""
    known = {f.name for f in fields(Config)}
    out: dict[str, Any] = {}
    for key, value in system_config.items():
        seconds = key[: -len("_ms")] + "_s" if key.endswith("_ms") else ""
        if seconds in known and key not in known:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{where}: _system_config[{key!r}] must be a number of ms")
            out[seconds] = value / 1000
        elif key == "object_spilling_config":
            out["object_spilling_directory"] = spill_folder(where, _spilling_path(where, value))
        else:
            out[key] = value
    return out


def _spilling_path(where: str, value: Any) -> str:
    """The folder of Ray's ``object_spilling_config`` (JSON, or its dict)."""
    try:
        config = json.loads(value) if isinstance(value, str | bytes) else value
        kind = config["type"]
        path = config["params"]["directory_path"] if kind == "filesystem" else None
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(
            f"{where}: object_spilling_config must be JSON like "
            '{"type": "filesystem", "params": {"directory_path": "/folder"}}: '
            f"{e!r}"
        ) from None
    if kind != "filesystem":
        raise ValueError(
            f"{where}: object_spilling_config type {kind!r} is not supported here "
            "(only filesystem: objects spill to a local folder)"
        )
    if isinstance(path, list) and len(path) == 1:
        path = path[0]
    if not isinstance(path, str):
        raise ValueError(
            f"{where}: object_spilling_config directory_path must be one folder, got {path!r}"
        )
    return path


def apply(
    where: str,
    *,
    logging_level: int | str | None,
    logging_format: str | None,
    configure_logging: bool,
    local_mode: bool,
    temp_dir: str | None,
    system_config: Mapping[str, Any] | None,
    dashboard_host: str | None = None,
    dashboard_port: int | None = None,
    spilling_directory: str | None = None,
) -> dict[str, Any] | None:
    """Checks these arguments and sets the ``runtime`` logger up if asked (as
    Ray sets up its ``ray`` logger); returns the configuration overrides, with
    ``_temp_dir`` as the root of session folders and the dashboard's address."""
    if local_mode:
        raise ValueError(
            f"{where}: local_mode=True is not supported (Ray deprecates it too): it ran "
            "tasks inside the driver; a local cluster starts in well under a second, "
            "so call it without local_mode"
        )
    if logging_format is not None and not isinstance(logging_format, str):
        raise TypeError(f"{where}: logging_format must be a str, got {logging_format!r}")
    level = _level(where, logging_level)
    if configure_logging and (level is not None or logging_format is not None):
        _configure(level if level is not None else logging.INFO, logging_format or DEFAULT_FORMAT)
    overrides = _from_ray_names(where, dict(system_config or {}))
    if dashboard_host is not None:
        if not isinstance(dashboard_host, str) or not dashboard_host:
            raise TypeError(f"{where}: dashboard_host must be a host, got {dashboard_host!r}")
        overrides["dashboard_host"] = dashboard_host
    if dashboard_port is not None:
        if (
            isinstance(dashboard_port, bool)
            or not isinstance(dashboard_port, int)
            or not 0 <= dashboard_port <= 65535
        ):
            raise ValueError(
                f"{where}: dashboard_port must be a port number, got {dashboard_port!r}"
            )
        overrides["dashboard_port"] = dashboard_port
    if temp_dir is not None:
        if not isinstance(temp_dir, str) or not temp_dir:
            raise TypeError(f"{where}: _temp_dir must be a folder's path, got {temp_dir!r}")
        overrides["session_root"] = temp_dir
    if spilling_directory is not None:
        overrides["object_spilling_directory"] = spill_folder(where, spilling_directory)
    return overrides if overrides or system_config is not None else None


def _level(where: str, value: int | str | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, str):
        number = logging.getLevelName(value.upper())
        if isinstance(number, int):
            return number
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ValueError(
        f"{where}: logging_level must be a level such as logging.INFO or 'DEBUG', got {value!r}"
    )


class _Handler(logging.StreamHandler):  # type: ignore[type-arg,unused-ignore]
    """The handler init() adds (one, however often it runs)."""


def _configure(level: int, fmt: str) -> None:
    logger = logging.getLogger("runtime")
    logger.setLevel(level)
    handler = next((h for h in logger.handlers if isinstance(h, _Handler)), None)
    if handler is None:
        handler = _Handler(sys.stderr)
        logger.addHandler(handler)
    handler.setFormatter(logging.Formatter(fmt))
    logger.propagate = False  # (as Ray's: not printed twice by the root's handlers)


@dataclass
class LoggingConfig:
    """Ray's ``LoggingConfig``: how the job's driver and every worker of the job set
    up their root logger (``init(logging_config=...)``). ``encoding``: "TEXT" or
    "JSON"; ``log_level``: the root logger's level; ``additional_log_standard_attrs``:
    LogRecord attributes to add to each line (``name``, ``funcName``, ...). Each
    line also carries the runtime's context: ``job_id``, ``worker_id``, ``node_id``,
    and in a task or actor its ``task_id``, ``task_name``, ``task_func_name``,
    ``actor_id`` and ``actor_name``."""

    encoding: str = "TEXT"
    log_level: str = "INFO"
    additional_log_standard_attrs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        job_logging.check(self.encoding, self.log_level, self.additional_log_standard_attrs)

    def to_dict(self) -> dict[str, Any]:
        return job_logging.check(self.encoding, self.log_level, self.additional_log_standard_attrs)

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> LoggingConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in value.items() if k in known})


def logging_config(where: str, value: Any) -> dict[str, Any] | None:
    """``init(logging_config=...)`` as the job's record carries it (None: not given)."""
    if value is None:
        return None
    if not isinstance(value, LoggingConfig):
        raise TypeError(
            f"{where}: logging_config must be a runtime.LoggingConfig, got {type(value).__name__}"
        )
    return value.to_dict()
