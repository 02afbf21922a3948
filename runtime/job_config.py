"""``runtime.job_config``: Ray's ``ray.job_config`` (``JobConfig`` for ``init()``)."""

from .api import JobConfig

__all__ = ["JobConfig"]
