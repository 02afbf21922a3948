"""The runtime's configuration: one frozen, typed object, read once.

Values come from keyword arguments first, then ``RUNTIME_<NAME>`` environment
variables, then the defaults below. Nothing else in the package reads
``os.environ`` for settings; processes the runtime starts receive the
driver's settings through their environment, so a whole cluster agrees.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from collections.abc import Mapping
from typing import Any

ENV_PREFIX = "RUNTIME_"
#: Set for a submitted job's entrypoint: its submission (id, runtime_env,
#: metadata) as JSON, which the driver's ``init()`` takes as its job's.
JOB_SUBMISSION_ENV = "RUNTIME_JOB_SUBMISSION"


#: Settings whose Ray environment variable (``RAY_<NAME>``) is read when the
#: runtime's own is not set.
_RAY_ENV_NAMES = (
    "ignore_unhandled_errors",
    "dedup_logs",
    "dedup_logs_agg_window_s",
    "dedup_logs_allow_regex",
    "dedup_logs_skip_regex",
)


@dataclasses.dataclass(frozen=True, slots=True)
class Config:
    #: The cluster ``init(address="auto")`` joins (``HOST:PORT``); empty: look it up.
    address: str = ""
    #: The port a standing cluster's gcs listens on (not Redis's 6379).
    gcs_port: int = 6385
    #: Where session directories live: ``<session_root>/session_<time>_<pid>/``.
    #: Not ``<tmp>/runtime``: a folder of the package's name on a script's
    #: path (a script run from ``<tmp>``) could shadow the package.
    session_root: str = os.path.join(tempfile.gettempdir(), "runtime-sessions")
    #: Seconds a child process may take to report that it is ready.
    process_start_timeout_s: float = 30.0
    #: Seconds a started worker may take to register with its raylet.
    worker_register_timeout_s: float = 60.0
    #: Idle workers beyond the node's CPU count are reaped after this long.
    idle_worker_timeout_s: float = 1.0
    #: A worker template starts beside each raylet, and workers are forked from
    #: it rather than started as new interpreters (those of an environment that
    #: installs packages, or sets what only a process start reads, still are).
    worker_template: bool = True
    #: Seconds a fork may take before the template is taken for hung (it is
    #: killed, and workers start on their own).
    worker_template_timeout_s: float = 30.0
    #: At most this many workers start at once on a node (0: the CPU count).
    max_worker_startup_concurrency: int = 0
    #: A lease the owner has no more work for is kept this long for reuse.
    lease_linger_s: float = 0.01
    #: Lease requests in flight per scheduling key, at most.
    max_pending_lease_requests: int = 10
    #: Tasks pushed to one leased worker before the first one returns. Tasks
    #: queued behind one that waits for an object are handed back to their
    #: owner, so pipelining cannot deadlock nested tasks.
    max_tasks_in_flight_per_worker: int = 10
    #: Retries of a task whose worker died, unless the task says otherwise.
    default_max_retries: int = 3
    #: Serialized values this large or larger go to the shared-memory store.
    max_inline_object_size: int = 100 * 1024
    #: The store spills to disk down to this fraction of its capacity.
    object_spilling_threshold: float = 0.8
    #: Where a node's store writes spilled objects and fallback allocations
    #: (empty: the session's ``spill/``). Its files have no name on disk, so
    #: nothing of them outlives the node, wherever they are.
    object_spilling_directory: str = ""
    #: Lineage kept by one owner to rebuild lost objects, at most (bytes).
    max_lineage_bytes: int = 1024 * 1024 * 1024
    #: Seconds between resource reports from a raylet to the gcs at most.
    resource_report_period_s: float = 0.1
    #: The gcs checks every raylet this often (seconds; as in Ray)...
    health_check_period_s: float = 3.0
    #: ...waits this long for each answer...
    health_check_timeout_s: float = 10.0
    #: ...and marks a node dead after this many failures in a row.
    health_check_failure_threshold: int = 5
    #: The first put/get/wait/.remote() without init() starts a local cluster.
    auto_init: bool = True
    #: A ref pickled outside the runtime's own serialization (``cloudpickle.dumps(ref)``)
    #: pins its object for as long as the pickling process lives; False: it raises
    #: ``OufOfBandObjectRefSerializationException`` instead (Ray's name).
    allow_out_of_band_object_ref_serialization: bool = True
    #: How long an actor that ends gracefully (out of scope, ``exit_actor()``,
    #: ``__ray_terminate__``) gives its ``__ray_shutdown__`` (Ray's, in ms there).
    actor_graceful_shutdown_timeout_s: float = 30.0
    #: The driver prints a line its workers repeat across processes once per
    #: window, with a count (Ray's RAY_DEDUP_LOGS and the settings after it,
    #: whose RAY_ environment variables are read too).
    dedup_logs: bool = True
    dedup_logs_agg_window_s: float = 5.0
    #: Lines this regex matches are never held back; lines the skip regex
    #: matches are never printed.
    dedup_logs_allow_regex: str = ""
    dedup_logs_skip_regex: str = ""
    #: Errors of tasks nobody read are not reported when their refs are freed.
    ignore_unhandled_errors: bool = False
    #: Objects move between nodes in chunks of this many bytes.
    object_transfer_chunk_size: int = 5 * 1024 * 1024
    #: A node deletes a runtime environment's package no worker used for this long.
    runtime_env_cache_ttl_s: float = 600.0
    #: A store client that leaves a request frame half sent this long is dropped.
    store_frame_timeout_s: float = 10.0
    #: Core workers report their tasks' state changes to the gcs (the state API).
    enable_task_events: bool = True
    #: Seconds between a core worker's task event batches.
    task_events_report_interval_s: float = 1.0
    #: Task attempts a core worker buffers between batches, at most (more are dropped).
    task_events_max_buffer_size: int = 100_000
    #: Task attempts the gcs keeps per job, at most (the oldest are dropped).
    task_events_max_num_task_in_gcs: int = 100_000
    #: Dead actors the gcs remembers (for the state API and for calls to say
    #: why); the oldest deaths are forgotten first. Ray's name; a smaller
    #: default than Ray's, as each record costs a few KB of Python objects.
    maximum_gcs_destroyed_actor_cached_count: int = 10_000
    #: Where the gcs's and raylets' Prometheus endpoints listen (loopback unless
    #: told otherwise), and the port of the gcs's (0: any free one).
    metrics_export_host: str = "127.0.0.1"
    metrics_export_port: int = 0
    #: Seconds between a core worker's reports of its user metrics to its raylet.
    metrics_report_interval_s: float = 5.0
    #: Where the gcs keeps its tables: memory (a private cluster's default),
    #: sqlite (in the session; ``runtime start --head``'s default), sqlite:///path,
    #: or redis://[user:password@]host:port/db.
    gcs_storage: str = ""
    #: How long raylets and core workers wait for a lost gcs to come back (with a
    #: durable storage; with ``memory`` a gcs death ends the cluster at once),
    #: and how long a restarted gcs waits for a running job's driver.
    gcs_reconnect_timeout_s: float = 60.0
    #: Where the dashboard listens (as Ray's, port 8265; loopback unless told
    #: otherwise). A taken port falls back to a free one.
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8265

    def __post_init__(self) -> None:
        # Every number here is a count, a size, a port, a fraction or seconds:
        # a negative one (or NaN) is a mistake, said where it was made.
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isnan(value) or value < 0:
                raise ValueError(
                    f"configuration option {field.name!r} must be 0 or more, got {value!r}"
                )
        if not 0 < self.object_spilling_threshold <= 1:
            raise ValueError(
                "configuration option 'object_spilling_threshold' must be above 0 and at "
                f"most 1, got {self.object_spilling_threshold!r}"
            )

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None) -> Config:
        """Builds the configuration from ``overrides``, then the environment."""
        values: dict[str, Any] = {}
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name, field in fields.items():
            raw = os.environ.get(ENV_PREFIX + name.upper())
            if raw is not None:
                values[name] = _parse(name, field.type, raw)
        if "address" not in values and os.environ.get("RAY_ADDRESS"):
            values["address"] = os.environ["RAY_ADDRESS"]  # Ray programs set this one
        for name in _RAY_ENV_NAMES:  # and these (RAY_DEDUP_LOGS=0 before importing)
            raw = os.environ.get("RAY_" + name.upper())
            if name not in values and raw is not None:
                values[name] = _parse(name, fields[name].type, raw)
        for name, value in (overrides or {}).items():
            if name not in fields:
                raise ValueError(f"unknown configuration option {name!r}")
            values[name] = _check(name, fields[name].type, value)
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The environment that hands this configuration to a child process."""
        return {
            ENV_PREFIX + f.name.upper(): str(getattr(self, f.name))
            for f in dataclasses.fields(self)
        }


_TYPES: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool}


def _parse(name: str, type_name: Any, raw: str) -> Any:
    kind = _TYPES[str(type_name)]
    try:
        if kind is bool:
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if kind is int:
            try:
                return int(raw)
            except ValueError:
                return _integral(float(raw))  # a size written as 7e8
        return kind(raw)
    except ValueError:
        raise ValueError(
            f"environment variable {ENV_PREFIX}{name.upper()}={raw!r} "
            f"is not a valid {kind.__name__}"
        ) from None


def _check(name: str, type_name: Any, value: Any) -> Any:
    kind = _TYPES[str(type_name)]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)  # sizes written as 700e6
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(
            f"configuration option {name!r} must be {kind.__name__}, got {type(value).__name__}"
        )
    return value


def _integral(value: float) -> int:
    if not value.is_integer():
        raise ValueError(f"{value} is not a whole number")
    return int(value)


def spill_folder(where: str, path: Any) -> str:
    """``object_spilling_directory``, checked and made (so that a node does not
    fail to start over it): its absolute path."""
    if not isinstance(path, str) or not path:
        raise TypeError(f"{where}: object_spilling_directory must be a folder's path, got {path!r}")
    folder = os.path.abspath(path)
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{where}: object_spilling_directory {folder!r}: {e}") from e
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{where}: object_spilling_directory {folder!r} is not writable")
    return folder
