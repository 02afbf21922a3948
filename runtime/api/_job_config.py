"""Ray's ``JobConfig``: what a driver says of its job, given to ``init(job_config=...)``.

Its environment and namespace are the defaults of ``init()``'s own arguments
(which win when given, as in Ray); its metadata is kept with the job (the
state API's ``list_jobs`` shows it); ``default_actor_lifetime="detached"``
makes the job's actors, wherever created, outlive their handles unless they
say otherwise. The Java-only fields (``jvm_options``, ``code_search_path``)
are refused: there are no other languages here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from .._private.config import JOB_SUBMISSION_ENV
from .._private.state import SUBMISSION_ID_KEY

LIFETIMES = ("detached", "non_detached")


class JobConfig:
    def __init__(
        self,
        jvm_options: list[str] | None = None,
        code_search_path: list[str] | None = None,
        runtime_env: dict[str, Any] | None = None,
        _client_job: bool = False,
        metadata: dict[str, str] | None = None,
        ray_namespace: str | None = None,
        default_actor_lifetime: str = "non_detached",
        _py_driver_sys_path: list[str] | None = None,
    ) -> None:
        for name, java in (("jvm_options", jvm_options), ("code_search_path", code_search_path)):
            if java:
                raise ValueError(
                    f"JobConfig({name}=...) is for Java workers; this runtime runs Python only"
                )
        self.runtime_env: dict[str, Any] | None = None
        self.metadata: dict[str, str] = {}
        self.ray_namespace: str | None = None
        self.default_actor_lifetime = "non_detached"
        self.set_runtime_env(runtime_env)
        for key, value in _checked_metadata(metadata).items():
            self.set_metadata(key, value)
        self.set_ray_namespace(ray_namespace)
        self.set_default_actor_lifetime(default_actor_lifetime)

    def set_metadata(self, key: str, value: str) -> None:
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"JobConfig metadata keys and values are str, got {key!r}: {value!r}")
        self.metadata[key] = value

    def set_runtime_env(self, runtime_env: dict[str, Any] | None, validate: bool = False) -> None:
        """(Checked by ``init()``, with the rest of the job's environment.)"""
        if runtime_env is not None and not isinstance(runtime_env, Mapping):
            raise TypeError(f"JobConfig runtime_env must be a dict, got {runtime_env!r}")
        self.runtime_env = None if runtime_env is None else dict(runtime_env)

    def set_ray_namespace(self, ray_namespace: str | None) -> None:
        if ray_namespace is not None and not isinstance(ray_namespace, str):
            raise TypeError(f"JobConfig ray_namespace must be a str, got {ray_namespace!r}")
        self.ray_namespace = ray_namespace

    def set_default_actor_lifetime(self, default_actor_lifetime: str) -> None:
        if default_actor_lifetime not in LIFETIMES:
            raise ValueError(
                "JobConfig default_actor_lifetime must be 'detached' or 'non_detached', "
                f"got {default_actor_lifetime!r}"
            )
        self.default_actor_lifetime = default_actor_lifetime

    def __repr__(self) -> str:
        return (
            f"JobConfig(runtime_env={self.runtime_env!r}, metadata={self.metadata!r}, "
            f"ray_namespace={self.ray_namespace!r}, "
            f"default_actor_lifetime={self.default_actor_lifetime!r})"
        )


def _checked_metadata(metadata: Any) -> Mapping[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise TypeError(f"JobConfig metadata must be a dict of str to str, got {metadata!r}")
    return metadata


def job_settings(
    where: str,
    job_config: JobConfig | None,
    namespace: str | None,
    runtime_env: dict[str, Any] | None,
) -> tuple[str | None, dict[str, Any] | None, dict[str, str], str]:
    """``init()``'s namespace, environment, job metadata and actors' default
    lifetime, from its arguments and its ``job_config``, and, in a submitted
    job's entrypoint, from its submission (below both)."""
    submitted = _submission()
    if runtime_env is None and submitted.get("runtime_env"):
        runtime_env = submitted["runtime_env"]
    metadata = {**submitted.get("metadata", {})}
    if submitted.get("submission_id"):
        metadata[SUBMISSION_ID_KEY] = submitted["submission_id"]
    if job_config is None:
        return namespace, runtime_env, metadata, "non_detached"
    if not isinstance(job_config, JobConfig):
        raise TypeError(f"{where}: job_config must be a JobConfig, got {job_config!r}")
    return (
        namespace if namespace is not None else job_config.ray_namespace,
        runtime_env if runtime_env is not None else job_config.runtime_env,
        {**metadata, **job_config.metadata},
        job_config.default_actor_lifetime,
    )


def _submission() -> dict[str, Any]:
    """What the dashboard that started this process as a submitted job said of it."""
    raw = os.environ.get(JOB_SUBMISSION_ENV)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ValueError(f"{JOB_SUBMISSION_ENV} is not a JSON object: {raw[:80]!r}")
    return value
