"""Ray's ``ray.runtime_env.RuntimeEnv`` and ``RuntimeEnvConfig``: a runtime
environment as a checked dict, accepted wherever a plain dict is.

Checked when made, so that a bad field fails where it is written rather than
when a task using it is submitted.
"""

from __future__ import annotations

import json
from typing import Any

from .._private import runtime_env as renv


class RuntimeEnvConfig(dict[str, Any]):
    """How a runtime environment is set up: ``setup_timeout_seconds`` (> 0,
    or -1 for no bound) and ``eager_install``."""

    def __init__(
        self, setup_timeout_seconds: float | None = None, eager_install: bool | None = None
    ) -> None:
        given = {"setup_timeout_seconds": setup_timeout_seconds, "eager_install": eager_install}
        given = {key: value for key, value in given.items() if value is not None}
        super().__init__(renv.check({"config": given}, "RuntimeEnvConfig").get("config", {}))


class RuntimeEnv(dict[str, Any]):
    """A runtime environment: the same fields as a ``runtime_env`` dict
    (``env_vars``, ``working_dir``, ``py_modules``, ``excludes``, ``pip``,
    ``config``, ``worker_process_setup_hook``)."""

    def __init__(self, **fields: Any) -> None:
        super().__init__(renv.check(fields, "RuntimeEnv"))

    def to_dict(self) -> dict[str, Any]:
        return dict(self)

    def serialize(self) -> str:
        """As JSON (a setup hook that is a function cannot be)."""
        return json.dumps(self, sort_keys=True)

    @classmethod
    def deserialize(cls, text: str) -> RuntimeEnv:
        return cls(**json.loads(text))

    def env_vars(self) -> dict[str, str]:
        return dict(self.get("env_vars", {}))

    def has_working_dir(self) -> bool:
        return "working_dir" in self

    def working_dir(self) -> str:
        return str(self.get("working_dir", ""))

    def has_py_modules(self) -> bool:
        return bool(self.get("py_modules"))

    def py_modules(self) -> list[str]:
        return list(self.get("py_modules", []))

    def has_pip(self) -> bool:
        return "pip" in self
