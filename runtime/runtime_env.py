"""``runtime.runtime_env``: Ray's ``ray.runtime_env`` (``RuntimeEnv``, ``RuntimeEnvConfig``)."""

from .api import RuntimeEnv, RuntimeEnvConfig

__all__ = ["RuntimeEnv", "RuntimeEnvConfig"]
