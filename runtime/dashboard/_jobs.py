"""Submitted jobs, in the dashboard: each one's runner, status and output.

A job's entrypoint runs under a runner (``_job_runner.py``) that the dashboard
starts tied to itself, so no job outlives the dashboard, nor anything a job
started. The entrypoint finds the cluster through its environment (its gcs's
address and token) and learns its submission (id, runtime_env, metadata) from
``JOB_SUBMISSION_ENV``, which its ``init()`` reads.

States: PENDING (its runner is starting) -> RUNNING -> SUCCEEDED | FAILED |
STOPPED; PENDING -> FAILED when the runner cannot start.

Records live in the gcs's key-value store (namespace ``job_submission``), so a
restarted dashboard still lists them; a job a previous dashboard was running
ended with it (its runner followed it), and is marked FAILED saying so.

Invariant: a job has an entry in ``_runs`` exactly while its runner lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import job_submission as js
from .._private import auth, packaging
from .._private import runtime_env as renv
from .._private.config import JOB_SUBMISSION_ENV
from .._private.state import JOB_INDEX_KEY as INDEX_KEY
from .._private.state import JOB_KV_NAMESPACE as KV_NAMESPACE
from .._private.state import StateReader
from .._private.tasks import TaskSet
from ..protocol.rt import KvGetRequest, KvPutRequest

logger = logging.getLogger(__name__)

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
#: The most of a job's output one ``logs`` answer carries (its end).
MAX_LOG_BYTES = 8 * 1024 * 1024
#: How long a stopped job's processes get between SIGTERM and SIGKILL.
STOP_GRACE_S = 3.0
#: How long the runner may take to say it is ready (it is a small script).
RUNNER_START_S = 30.0
_RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_job_runner.py")
_ENTRYPOINT_RESOURCES = (
    "entrypoint_num_cpus",
    "entrypoint_num_gpus",
    "entrypoint_memory",
    "entrypoint_resources",
)


class BadRequest(ValueError):
    """What the client sent is not a valid request (HTTP 400, with this message)."""


@dataclass
class JobRecord:
    submission_id: str
    entrypoint: str
    status: str = js.JobStatus.PENDING.value
    message: str = ""
    start_time: int | None = None
    end_time: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    runtime_env: dict[str, Any] = field(default_factory=dict)
    driver_exit_code: int | None = None
    error_type: str | None = None

    def details(self) -> dict[str, Any]:
        return {"type": "SUBMISSION", "job_id": None, **asdict(self)}


class JobManager:
    def __init__(self, reader: StateReader, gcs_address: tuple[str, int], session_dir: str) -> None:
        self._reader = reader
        self._gcs = reader.gcs
        self._gcs_address = gcs_address
        self._logs_dir = os.path.join(session_dir, "logs")
        # Uploaded working_dirs, unpacked for their jobs (removed when each ends).
        self._folders_dir = os.path.join(session_dir, "runtime_resources", "jobs")
        self._jobs: dict[str, JobRecord] = {}
        self._runs: dict[str, asyncio.subprocess.Process] = {}
        self._ties: dict[str, int] = {}
        self._stopping: set[str] = set()
        self._follows: dict[str, asyncio.Task[None]] = {}
        self._tasks = TaskSet()

    # -- the records ------------------------------------------------------------------
    async def load(self) -> None:
        """Reads the records an earlier dashboard of this cluster left (and
        removes the folders it unpacked: their jobs ended with it)."""
        await asyncio.to_thread(shutil.rmtree, self._folders_dir, True)
        for row in await self._reader.submissions():
            record = JobRecord(**row)
            if not js.JobStatus(record.status).is_terminal():
                self._end(record, js.JobStatus.FAILED, "the dashboard running it ended")
                await self._save(record)
            self._jobs[record.submission_id] = record

    def get(self, submission_id: str) -> dict[str, Any] | None:
        record = self._jobs.get(submission_id)
        return None if record is None else record.details()

    def all(self) -> list[dict[str, Any]]:
        return [record.details() for record in self._jobs.values()]

    def log_path(self, submission_id: str) -> str:
        return os.path.join(self._logs_dir, f"job-driver-{submission_id}.log")

    def is_running(self, submission_id: str) -> bool:
        return submission_id in self._runs

    # -- requests -----------------------------------------------------------------
    async def submit(self, body: Any) -> str:
        record, cwd = self._parse(body)
        if cwd is not None and packaging.is_uri(cwd):
            cwd = await self._unpack(cwd, record.submission_id)
        self._jobs[record.submission_id] = record
        await self._save(record, new=True)
        # (A dashboard started with no session folder has no logs folder yet.)
        await asyncio.to_thread(os.makedirs, self._logs_dir, 0o700, True)
        try:
            await self._start(record, cwd)
        except OSError as e:
            self._end(record, js.JobStatus.FAILED, f"its runner could not start: {e}")
            record.error_type = js.JobErrorType.JOB_ENTRYPOINT_COMMAND_START_ERROR.value
            folder = os.path.join(self._folders_dir, record.submission_id)
            await asyncio.to_thread(shutil.rmtree, folder, True)
        await self._save(record)
        return record.submission_id

    async def stop(self, submission_id: str) -> bool:
        """Stops the job's processes; False if it had ended already."""
        if submission_id not in self._jobs:
            raise KeyError(submission_id)
        run = self._runs.get(submission_id)
        if run is None:
            return False
        self._stopping.add(submission_id)
        with contextlib.suppress(ProcessLookupError):
            run.send_signal(signal.SIGTERM)
        return True

    async def delete(self, submission_id: str) -> bool:
        record = self._jobs.get(submission_id)
        if record is None:
            raise KeyError(submission_id)
        if not js.JobStatus(record.status).is_terminal():
            raise BadRequest(f"job {submission_id} is {record.status}: stop it first")
        del self._jobs[submission_id]
        await self._kv_put(submission_id.encode(), b"null")
        await self._save_index()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.log_path(submission_id))
        return True

    async def close(self) -> None:
        """Ends every running job (the dashboard is stopping)."""
        for submission_id in list(self._runs):
            await self.stop(submission_id)
        follows = list(self._follows.values())
        if follows:  # each records its job's end (the runner ends the group within the grace)
            await asyncio.wait(follows, timeout=STOP_GRACE_S + 5)
        await self._tasks.close()

    # -- running one ------------------------------------------------------------------
    def _parse(self, body: Any) -> tuple[JobRecord, str | None]:
        if not isinstance(body, dict):
            raise BadRequest("a job submission is a JSON object")
        known = {"entrypoint", "submission_id", "runtime_env", "metadata", "job_id"}
        unknown = set(body) - known - set(_ENTRYPOINT_RESOURCES)
        if unknown:
            raise BadRequest(f"unknown fields: {', '.join(sorted(unknown))}")
        entrypoint = body.get("entrypoint")
        if not isinstance(entrypoint, str) or not entrypoint.strip():
            raise BadRequest("entrypoint must be a non-empty shell command")
        for name in _ENTRYPOINT_RESOURCES:
            if body.get(name):
                raise BadRequest(
                    f"{name} is not supported: the entrypoint runs on the head node and "
                    "reserves nothing (its tasks and actors ask for what they need)"
                )
        submission_id = body.get("submission_id") or body.get("job_id")
        if submission_id is None:
            submission_id = f"rtjob_{secrets.token_hex(8)}"
        if not isinstance(submission_id, str) or not _ID.match(submission_id):
            raise BadRequest(
                "submission_id must be 1-128 letters, digits, '_', '.' or '-', "
                f"starting with a letter or digit; got {submission_id!r:.80}"
            )
        if submission_id in self._jobs:
            raise BadRequest(f"a job with submission_id {submission_id!r} already exists")
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise BadRequest("metadata must be an object of str to str")
        try:
            env = renv.check(body.get("runtime_env"), "job submission")
        except (TypeError, ValueError) as e:
            raise BadRequest(str(e)) from None
        cwd = env.get("working_dir")
        if cwd is not None and not packaging.is_uri(cwd) and not os.path.isdir(cwd):
            raise BadRequest(
                f"runtime_env working_dir {cwd!r} is not a folder on the head node, "
                "where the job runs"
            )
        record = JobRecord(submission_id, entrypoint, metadata=metadata, runtime_env=env)
        return record, cwd

    async def _start(self, record: JobRecord, cwd: str | None) -> None:
        host, port = self._gcs_address
        env = dict(os.environ)
        env.update(record.runtime_env.get("env_vars", {}))
        env.update(auth.env(auth.token()))
        env["RUNTIME_ADDRESS"] = f"{host}:{port}"
        env.pop("RAY_ADDRESS", None)
        env[JOB_SUBMISSION_ENV] = json.dumps(
            {
                "submission_id": record.submission_id,
                "runtime_env": record.runtime_env,
                "metadata": record.metadata,
            }
        )
        env["PYTHONUNBUFFERED"] = "1"
        # `python` in the entrypoint is the cluster's own interpreter (its venv's).
        here = os.path.dirname(sys.executable)
        env["PATH"] = os.pathsep.join(
            [here, *(p for p in env.get("PATH", "").split(os.pathsep) if p)]
        )
        tie_r, tie_w = os.pipe()
        try:
            argv = [sys.executable, "-P", _RUNNER]
            argv += ["--parent-fd", str(tie_r), "--log", self.log_path(record.submission_id)]
            argv += ["--grace", str(STOP_GRACE_S)]
            if cwd is not None:
                argv += ["--cwd", cwd]
            run = await asyncio.create_subprocess_exec(
                *argv,
                record.entrypoint,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                env=env,
                pass_fds=(tie_r,),
                start_new_session=True,
            )
        except BaseException:
            os.close(tie_w)
            raise
        finally:
            os.close(tie_r)
        try:
            assert run.stdout is not None
            ready = await asyncio.wait_for(run.stdout.readline(), RUNNER_START_S)
        except TimeoutError:
            ready = b""
        if ready.strip() != b"ready":
            os.close(tie_w)  # (it exits when this closes, if it lives)
            with contextlib.suppress(ProcessLookupError):
                run.kill()
            code = await run.wait()
            raise OSError(f"the job's runner exited with {code} before it was ready")
        self._runs[record.submission_id] = run
        self._ties[record.submission_id] = tie_w
        record.status = js.JobStatus.RUNNING.value
        record.start_time = int(time.time() * 1000)
        self._follows[record.submission_id] = self._tasks.spawn(self._follow(record, run))

    async def _unpack(self, uri: str, submission_id: str) -> str:
        """An uploaded working_dir, unpacked for this job: where it runs."""
        data = await self._kv_get(uri.encode(), packaging.KV_NAMESPACE)
        if data is None:
            raise BadRequest(f"working_dir {uri} was not uploaded (PUT /api/packages/...)")
        dest = os.path.join(self._folders_dir, submission_id)
        await asyncio.to_thread(os.makedirs, self._folders_dir, 0o700, True)
        await asyncio.to_thread(packaging.unpack, uri, data, dest)
        return dest

    async def _follow(self, record: JobRecord, run: asyncio.subprocess.Process) -> None:
        code = await run.wait()
        submission_id = record.submission_id
        folder = os.path.join(self._folders_dir, submission_id)
        await asyncio.to_thread(shutil.rmtree, folder, True)
        self._runs.pop(submission_id, None)
        self._follows.pop(submission_id, None)
        with contextlib.suppress(OSError):
            os.close(self._ties.pop(submission_id))
        record.driver_exit_code = code
        if submission_id in self._stopping:
            self._stopping.discard(submission_id)
            self._end(record, js.JobStatus.STOPPED, "stopped by the user")
        elif code == 0:
            self._end(record, js.JobStatus.SUCCEEDED, "the entrypoint exited with 0")
        else:
            self._end(record, js.JobStatus.FAILED, f"the entrypoint exited with {code}")
            record.error_type = js.JobErrorType.JOB_ENTRYPOINT_COMMAND_ERROR.value
        if submission_id in self._jobs:  # (not deleted meanwhile)
            await self._save(record)

    def _end(self, record: JobRecord, status: js.JobStatus, message: str) -> None:
        record.status = status.value
        record.message = message
        record.end_time = int(time.time() * 1000)
        logger.info("job %s: %s (%s)", record.submission_id, status.value, message)

    # -- the gcs's key-value store ---------------------------------------------------
    async def _save(self, record: JobRecord, new: bool = False) -> None:
        await self._kv_put(record.submission_id.encode(), json.dumps(asdict(record)).encode())
        if new:
            await self._save_index()

    async def _save_index(self) -> None:
        await self._kv_put(INDEX_KEY, json.dumps(list(self._jobs)).encode())

    async def _kv_put(self, key: bytes, value: bytes) -> None:
        request = KvPutRequest(namespace=KV_NAMESPACE, key=key, value=value, overwrite=True)
        await self._gcs.kv_put(request)

    async def _kv_get(self, key: bytes, namespace: str = KV_NAMESPACE) -> bytes | None:
        reply = await self._gcs.kv_get(KvGetRequest(namespace=namespace, key=key))
        if not reply.found or reply.value == b"null":
            return None
        return bytes(reply.value)
