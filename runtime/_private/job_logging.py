"""A job's logging configuration (Ray's ``LoggingConfig``): how its driver and
every worker of the job set up their root logger.

Each record gets the runtime's context as attributes (``job_id``,
``worker_id``, ``node_id``; in a task also ``task_id``, ``task_name``,
``task_func_name``, and in an actor ``actor_id``, ``actor_name``), and is
written to stderr as TEXT (Ray's line, then ``key=value`` for the context and
any ``extra``) or as one JSON object per line. A worker's stderr reaches its
log file and, with ``log_to_driver``, the driver.

The configuration travels to the job's workers in the job's record (see
``core_worker/_exports.py``), as a plain dict made by :func:`check`.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any

ENCODINGS = ("TEXT", "JSON")
TEXT_FORMAT = "%(asctime)s\t%(levelname)s %(filename)s:%(lineno)s -- %(message)s"

#: A LogRecord's own attributes (what ``additional_log_standard_attrs`` may name).
STANDARD_ATTRS = frozenset(
    {
        "args", "asctime", "created", "exc_info", "exc_text", "filename", "funcName",
        "levelname", "levelno", "lineno", "message", "module", "msecs", "msg", "name",
        "pathname", "process", "processName", "relativeCreated", "stack_info", "thread",
        "threadName", "taskName",
    }
)  # fmt: skip

#: Marks the handler this module installs (so a second configuration replaces it).
_OURS = "_runtime_job_logging"


def check(encoding: Any, log_level: Any, additional_log_standard_attrs: Any) -> dict[str, Any]:
    """The configuration as a dict, checked; ValueError/TypeError says what is wrong."""
    if encoding not in ENCODINGS:
        raise ValueError(
            f"LoggingConfig: encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}"
        )
    if isinstance(log_level, bool) or not isinstance(log_level, str | int):
        raise TypeError(
            f"LoggingConfig: log_level must be a level name or number, got {log_level!r}"
        )
    if isinstance(log_level, str):
        if not isinstance(logging.getLevelName(log_level.upper()), int):
            raise ValueError(f"LoggingConfig: unknown log_level {log_level!r}")
        log_level = log_level.upper()
    if not isinstance(additional_log_standard_attrs, list | tuple):
        raise TypeError("LoggingConfig: additional_log_standard_attrs must be a list of str")
    unknown = [a for a in additional_log_standard_attrs if a not in STANDARD_ATTRS]
    if unknown:
        raise ValueError(
            f"LoggingConfig: unknown standard attribute(s) {unknown}; valid ones are "
            + ", ".join(sorted(STANDARD_ATTRS))
        )
    return {
        "encoding": encoding,
        "log_level": log_level,
        "additional_log_standard_attrs": list(additional_log_standard_attrs),
    }


class _ContextFilter(logging.Filter):
    def __init__(self, context: Callable[[], Mapping[str, Any]]) -> None:
        super().__init__()
        self._context = context

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            context = self._context()
        except Exception:  # (a process shutting down: log the line all the same)
            context = {}
        for key, value in context.items():
            if value not in (None, ""):
                setattr(record, key, value)
        return True


class _Formatter(logging.Formatter):
    def __init__(self, extra_attrs: list[str]) -> None:
        super().__init__(TEXT_FORMAT)
        self._extra_attrs = extra_attrs

    def attrs(self, record: logging.LogRecord) -> dict[str, Any]:
        """The asked standard attributes, then the context and the caller's ``extra``."""
        out = {key: getattr(record, key, None) for key in self._extra_attrs}
        out.update(
            (key, value)
            for key, value in record.__dict__.items()
            if key not in STANDARD_ATTRS and not key.startswith("_")
        )
        out["timestamp_ns"] = int(record.created * 1e9)
        return out


class TextFormatter(_Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        pairs = " ".join(f"{k}={v}" for k, v in self.attrs(record).items())
        return f"{line} {pairs}"


class JsonFormatter(_Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "asctime": self.formatTime(record),
            "levelname": record.levelname,
            "message": record.getMessage(),
            "filename": record.filename,
            "lineno": record.lineno,
            "process": record.process,
        }
        if record.exc_info:
            out["exc_text"] = record.exc_text or self.formatException(record.exc_info)
        out.update(self.attrs(record))
        return json.dumps(out, default=str)


def configure(config: Mapping[str, Any], context: Callable[[], Mapping[str, Any]]) -> None:
    """Sets up this process's root logger (and the runtime's own logger) as ``config``
    says; ``context`` gives the attributes each record gets."""
    extra = list(config.get("additional_log_standard_attrs", []))
    formatter = JsonFormatter(extra) if config.get("encoding") == "JSON" else TextFormatter(extra)
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(config.get("log_level", "INFO"))
    handler.setFormatter(formatter)
    handler.addFilter(_ContextFilter(context))
    setattr(handler, _OURS, True)
    for name in ("", "runtime"):
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if getattr(h, _OURS, False)]:
            logger.removeHandler(old)
        logger.setLevel(config.get("log_level", "INFO"))
        logger.addHandler(handler)
    runtime_logger = logging.getLogger("runtime")
    runtime_logger.propagate = False  # (the root has the same handler)
    for old in [h for h in runtime_logger.handlers if not getattr(h, _OURS, False)]:
        runtime_logger.removeHandler(old)


def drop_default_handlers() -> None:
    """A worker's: the plain handler it starts with goes (the job's replaces it)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if not getattr(h, _OURS, False)]:
        root.removeHandler(old)
