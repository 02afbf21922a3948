"""``runtime.job_submission``: Ray's job submission (``ray.job_submission``).

A job is a shell command (its *entrypoint*, usually ``python script.py``) that
the cluster's dashboard runs on the head node, as a driver of that cluster:
it finds the cluster by itself (``init()`` with no address). The dashboard
keeps each job's status and output; :class:`JobSubmissionClient` asks it over
its HTTP API (Ray's paths, under ``/api/jobs/``), with the cluster's token.

    client = JobSubmissionClient("http://127.0.0.1:8265")
    job = client.submit_job(entrypoint="python script.py", runtime_env={"env_vars": {...}})
    client.get_job_status(job)  # JobStatus.RUNNING, then SUCCEEDED or FAILED

The same from a shell: ``runtime job submit -- python script.py``.
"""

from __future__ import annotations

import codecs
import dataclasses
import enum
import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Mapping
from typing import Any

from ._private import auth, packaging, tls
from ._private import runtime_env as renv

#: Where the client looks when given no address (Ray's variable, then ours).
ADDRESS_ENVS = ("RAY_API_SERVER_ADDRESS", "RUNTIME_DASHBOARD_ADDRESS")
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
#: The bounded wait of one request (a stop or a submission answers at once).
REQUEST_TIMEOUT_S = 30.0


class JobStatus(enum.StrEnum):
    """A submitted job's state; the last three are final."""

    PENDING = "PENDING"  # accepted; its process is starting
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"  # stopped by stop_job
    SUCCEEDED = "SUCCEEDED"  # its entrypoint exited with 0
    FAILED = "FAILED"  # its entrypoint exited with another code, or could not start

    def is_terminal(self) -> bool:
        return self in (JobStatus.STOPPED, JobStatus.SUCCEEDED, JobStatus.FAILED)


class JobType(enum.StrEnum):
    SUBMISSION = "SUBMISSION"  # submitted through this API
    DRIVER = "DRIVER"  # a driver script that called init() itself


class JobErrorType(enum.StrEnum):
    """Why a job failed (Ray's names; the supervisor ones never occur here:
    a job's entrypoint runs under the dashboard's runner, not an actor)."""

    RUNTIME_ENV_SETUP_FAILURE = "RUNTIME_ENV_SETUP_FAILURE"
    JOB_SUPERVISOR_ACTOR_START_TIMEOUT = "JOB_SUPERVISOR_ACTOR_START_TIMEOUT"
    JOB_SUPERVISOR_ACTOR_START_FAILURE = "JOB_SUPERVISOR_ACTOR_START_FAILURE"
    JOB_SUPERVISOR_ACTOR_UNSCHEDULABLE = "JOB_SUPERVISOR_ACTOR_UNSCHEDULABLE"
    JOB_SUPERVISOR_ACTOR_UNKNOWN_FAILURE = "JOB_SUPERVISOR_ACTOR_UNKNOWN_FAILURE"
    JOB_SUPERVISOR_ACTOR_DIED = "JOB_SUPERVISOR_ACTOR_DIED"
    JOB_ENTRYPOINT_COMMAND_START_ERROR = "JOB_ENTRYPOINT_COMMAND_START_ERROR"
    JOB_ENTRYPOINT_COMMAND_ERROR = "JOB_ENTRYPOINT_COMMAND_ERROR"


@dataclasses.dataclass
class DriverInfo:
    """The driver process of a job, once its ``init()`` connected."""

    id: str  # its job id
    node_ip_address: str
    pid: str


@dataclasses.dataclass
class JobDetails:
    """What the dashboard knows of one submitted job (Ray's fields)."""

    submission_id: str
    entrypoint: str
    status: JobStatus
    type: JobType = JobType.SUBMISSION
    job_id: str | None = None  # the driver's job id, once it connected
    message: str = ""
    error_type: JobErrorType | str | None = None
    start_time: int | None = None  # unix ms
    end_time: int | None = None
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)
    runtime_env: dict[str, Any] = dataclasses.field(default_factory=dict)
    driver_exit_code: int | None = None
    driver_info: DriverInfo | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobDetails:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["status"] = JobStatus(values["status"])
        values["type"] = JobType(values.get("type", JobType.SUBMISSION))
        if values.get("error_type") in JobErrorType.__members__:
            values["error_type"] = JobErrorType(values["error_type"])
        driver = values.get("driver_info")
        if isinstance(driver, Mapping):
            fields = {f.name for f in dataclasses.fields(DriverInfo)}
            values["driver_info"] = DriverInfo(**{k: str(driver.get(k, "")) for k in fields})
        return cls(**values)


#: Ray's name of a job's record (its ``JobDetails`` adds the type and ids).
JobInfo = JobDetails


class JobSubmissionClient:
    """Submits jobs to a cluster's dashboard, and follows them.

    ``address``: the dashboard's URL (``http://host:8265``); by default
    ``RAY_API_SERVER_ADDRESS`` or ``RUNTIME_DASHBOARD_ADDRESS``, else the local
    one. The token is ``RUNTIME_AUTH_TOKEN`` or this machine's token file (as a
    driver finds it). ``metadata`` is added to every job's; ``headers`` and
    ``cookies`` go with every request; ``verify``: check the dashboard's TLS
    certificate (or a CA file's path). Fails at once (ConnectionError) if the dashboard does not
    answer, or refuses the token.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        create_cluster_if_needed: bool = False,
        cookies: Mapping[str, str] | None = None,
        metadata: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        verify: bool | str = True,
    ) -> None:
        if create_cluster_if_needed:
            raise ValueError(
                "JobSubmissionClient: create_cluster_if_needed is not supported; start the "
                "cluster with `runtime start --head` (its dashboard takes the jobs)"
            )
        if address is None:
            address = next((os.environ[e] for e in ADDRESS_ENVS if os.environ.get(e)), None)
        address = address or DEFAULT_ADDRESS
        if not isinstance(address, str):
            raise TypeError(f"JobSubmissionClient: address must be a str, got {address!r:.80}")
        if "://" not in address:
            address = "http://" + address
        parsed = urllib.parse.urlsplit(address)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"JobSubmissionClient: {address!r} is not an http(s) address")
        self.address = address.rstrip("/")
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        if cookies:
            self._headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        #: Every submission's metadata, under its own (Ray's ``metadata`` argument).
        self._metadata = dict(metadata or {})
        token = auth.token() or auth.find_token([])
        if token and "Authorization" not in self._headers:
            self._headers["Authorization"] = f"Bearer {token}"
        self._ssl = _ssl_context(verify) if parsed.scheme == "https" else None
        self._request("GET", "/api/version")  # fails now, not at the first submission

    # -- jobs -------------------------------------------------------------------------
    def submit_job(
        self,
        *,
        entrypoint: str,
        submission_id: str | None = None,
        runtime_env: dict[str, Any] | None = None,
        metadata: dict[str, str] | None = None,
        entrypoint_num_cpus: float | None = None,
        entrypoint_num_gpus: float | None = None,
        entrypoint_memory: int | None = None,
        entrypoint_resources: dict[str, float] | None = None,
    ) -> str:
        """Starts ``entrypoint`` on the head node; its submission id.

        ``runtime_env`` becomes the job's (its driver's ``init()`` default):
        ``env_vars`` are also set for the entrypoint itself; local folders it
        names (``working_dir``, ``py_modules``) are packed here and uploaded,
        and the entrypoint runs in the ``working_dir``'s copy.
        """
        if runtime_env is not None:
            runtime_env = self._upload_folders(renv.check(runtime_env, "submit_job()"))
        body: dict[str, Any] = {"entrypoint": entrypoint}
        optional = {
            "submission_id": submission_id,
            "runtime_env": runtime_env,
            "metadata": {**self._metadata, **(metadata or {})} or None,
            "entrypoint_num_cpus": entrypoint_num_cpus,
            "entrypoint_num_gpus": entrypoint_num_gpus,
            "entrypoint_memory": entrypoint_memory,
            "entrypoint_resources": entrypoint_resources,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        return str(self._request("POST", "/api/jobs/", body)["submission_id"])

    def get_job_info(self, job_id: str) -> JobDetails:
        return JobDetails.from_json(self._request("GET", f"/api/jobs/{_quoted(job_id)}"))

    def get_job_status(self, job_id: str) -> JobStatus:
        return self.get_job_info(job_id).status

    def list_jobs(self) -> list[JobDetails]:
        return [JobDetails.from_json(row) for row in self._request("GET", "/api/jobs/")]

    def get_job_logs(self, job_id: str) -> str:
        """Everything the job's entrypoint printed so far (stdout and stderr)."""
        return str(self._request("GET", f"/api/jobs/{_quoted(job_id)}/logs")["logs"])

    async def tail_job_logs(self, job_id: str) -> AsyncIterator[str]:
        """The job's output as it comes, until the job ends (``async for``)."""
        import aiohttp  # (the dashboard's own dependency; only this method needs it)

        url = f"{self.address}/api/jobs/{_quoted(job_id)}/logs/tail"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=REQUEST_TIMEOUT_S)
        ssl_arg = self._ssl if self._ssl is not None else True
        async with (
            aiohttp.ClientSession(headers=self._headers, timeout=timeout) as session,
            session.get(url, ssl=ssl_arg) as r,
        ):
            if r.status != 200:
                raise RuntimeError(_failure(r.status, await r.text()))
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            async for chunk in r.content.iter_any():
                text = decoder.decode(chunk)
                if text:
                    yield text
            rest = decoder.decode(b"", final=True)
            if rest:
                yield rest

    def stop_job(self, job_id: str) -> bool:
        """Stops a running job (its whole process group); False if it had ended."""
        return bool(self._request("POST", f"/api/jobs/{_quoted(job_id)}/stop")["stopped"])

    def delete_job(self, job_id: str) -> bool:
        """Forgets an ended job and its output; a running one must be stopped first."""
        return bool(self._request("DELETE", f"/api/jobs/{_quoted(job_id)}")["deleted"])

    def _upload_folders(self, env: dict[str, Any]) -> dict[str, Any]:
        """``env`` with its local folders (``working_dir``, ``py_modules``) packed and
        uploaded to the dashboard, as the URIs the cluster fetches them by."""
        excludes = tuple(env.pop("excludes", None) or ())

        def upload(path: str, keep_top: bool) -> str:
            if packaging.is_uri(path):
                return path
            if not os.path.exists(path):
                raise ValueError(f"submit_job(): runtime_env names {path!r}, which is not here")
            uri, data = packaging.pack(path, () if keep_top else excludes, keep_top=keep_top)
            quoted = urllib.parse.quote(uri, safe="")
            self._request("PUT", f"/api/packages/{quoted}", data, "application/octet-stream")
            return uri

        if env.get("working_dir"):
            env["working_dir"] = upload(env["working_dir"], False)
        if env.get("py_modules"):
            env["py_modules"] = [upload(path, True) for path in env["py_modules"]]
        return env

    # -- HTTP -------------------------------------------------------------------------
    def _request(
        self, method: str, path: str, body: Any = None, content_type: str | None = None
    ) -> Any:
        if isinstance(body, bytes):
            data: bytes | None = body
        else:
            data = None if body is None else json.dumps(body).encode()
        headers = (
            self._headers
            if content_type is None
            else {**self._headers, "Content-Type": content_type}
        )
        request = urllib.request.Request(
            self.address + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(
                request, timeout=REQUEST_TIMEOUT_S, context=self._ssl
            ) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            if e.code == 401:
                raise ConnectionError(f"the dashboard at {self.address} refused: {text}") from None
            raise RuntimeError(_failure(e.code, text)) from None
        except urllib.error.URLError as e:
            raise ConnectionError(
                f"could not reach the dashboard at {self.address}: {e.reason}"
            ) from None


def _quoted(job_id: str) -> str:
    if not isinstance(job_id, str) or not job_id:
        raise TypeError(f"a job's submission id is a non-empty str, got {job_id!r:.80}")
    return urllib.parse.quote(job_id, safe="")


def _failure(code: int, text: str) -> str:
    try:
        text = str(json.loads(text).get("error", text))
    except (ValueError, AttributeError):
        pass
    return f"request failed with status code {code}: {text}"


def _ssl_context(verify: bool | str) -> ssl.SSLContext:
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    if not verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return tls.client_context() or ssl.create_default_context()


__all__ = [
    "DriverInfo",
    "JobDetails",
    "JobErrorType",
    "JobInfo",
    "JobStatus",
    "JobSubmissionClient",
    "JobType",
]
