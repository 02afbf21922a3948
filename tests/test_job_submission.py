"""Ray's job submission: the dashboard runs a command as a driver of its cluster,
keeps its status and output, stops it, and nothing it started outlives it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import assert_no_orphans, process_running, run_cli, wait_until

import runtime
from runtime._private import auth, process
from runtime.job_submission import JobErrorType, JobStatus, JobSubmissionClient, JobType

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def head() -> Iterator[Any]:
    ctx = runtime.init(num_cpus=2, include_dashboard=True, _system_config={"dashboard_port": 0})
    try:
        yield ctx
    finally:
        runtime.shutdown()
        assert_no_orphans(ctx.session_dir)


def _client(ctx: Any) -> JobSubmissionClient:
    return JobSubmissionClient(f"http://{ctx.dashboard_url}")


def _ended(client: JobSubmissionClient, submission_id: str) -> Any:
    wait_until(
        lambda: client.get_job_status(submission_id).is_terminal(),
        what=f"job {submission_id} to end",
        timeout=90,
    )
    return client.get_job_info(submission_id)


SCRIPT = textwrap.dedent(
    """
    import os
    import runtime
    import helper  # from the job's working_dir

    runtime.init()

    @runtime.remote
    def task(x):
        import helper  # the workers have the working_dir too
        return helper.double(x), os.environ["GREETING"]

    print("result", runtime.get(task.remote(21)), helper.double(1), flush=True)
    """
)


def test_a_job_runs_as_a_driver_of_the_cluster(head: Any, tmp_path: Any) -> None:
    (tmp_path / "job.py").write_text(SCRIPT)
    (tmp_path / "helper.py").write_text("def double(x):\n    return 2 * x\n")
    client = _client(head)
    submission_id = client.submit_job(
        entrypoint=f"{sys.executable} job.py",
        runtime_env={"working_dir": str(tmp_path), "env_vars": {"GREETING": "hello"}},
        metadata={"owner": "test"},
    )
    info = _ended(client, submission_id)
    logs = client.get_job_logs(submission_id)
    assert info.status is JobStatus.SUCCEEDED, logs
    assert "result (42, 'hello') 2" in logs
    assert info.driver_exit_code == 0 and info.metadata == {"owner": "test"}
    # Its driver is a job of the cluster, named by its submission.
    assert info.job_id not in (None, runtime.get_runtime_context().get_job_id())
    assert info.type is JobType.SUBMISSION and info.driver_info is not None
    assert info.driver_info.id == info.job_id and info.driver_info.pid.isdigit()
    jobs = runtime.util.state.list_jobs()
    submitted = [j for j in jobs if j.submission_id == submission_id]
    assert len(submitted) == 1 and submitted[0].type == "SUBMISSION"
    assert submitted[0].job_id == info.job_id
    assert [j.submission_id for j in client.list_jobs()] == [submission_id]
    # The job ran in an uploaded copy of its working_dir, removed once it ended.
    copies = os.path.join(head.session_dir, "runtime_resources", "jobs")
    assert not os.path.exists(copies) or os.listdir(copies) == []
    # Its output, followed: everything, then the end.

    async def tail() -> str:
        return "".join([text async for text in client.tail_job_logs(submission_id)])

    assert "result (42" in asyncio.run(tail())
    assert client.delete_job(submission_id) and client.list_jobs() == []


def test_a_failing_job_and_bad_submissions_say_why(head: Any) -> None:
    client = _client(head)
    failing = client.submit_job(entrypoint="echo about to fail; exit 3", submission_id="fails")
    info = _ended(client, failing)
    assert info.status is JobStatus.FAILED and info.driver_exit_code == 3
    assert info.error_type is JobErrorType.JOB_ENTRYPOINT_COMMAND_ERROR
    assert "exited with 3" in info.message and "about to fail" in client.get_job_logs(failing)
    refusals = [
        ({"entrypoint": " "}, "entrypoint must be a non-empty"),
        ({"entrypoint": "true", "submission_id": "fails"}, "already exists"),
        ({"entrypoint": "true", "submission_id": "a b"}, "submission_id must be"),
        ({"entrypoint": "true", "runtime_env": {"conda": "x"}}, "not supported"),
        ({"entrypoint": "true", "runtime_env": {"working_dir": "/no/such"}}, "not here"),
        ({"entrypoint": "true", "entrypoint_num_cpus": 1}, "reserves nothing"),
        ({"entrypoint": "true", "metadata": {"k": 1}}, "metadata must be"),
    ]
    for fields, message in refusals:
        with pytest.raises((RuntimeError, ValueError), match=message):
            client.submit_job(**fields)
    # An upload is checked against its URI (its content's hash); a URI never
    # uploaded is refused.
    uri = "gcs://_runtime_env_" + "0" * 32 + ".zip"
    with pytest.raises(RuntimeError, match="is not the package URI"):
        client._request("PUT", "/api/packages/" + uri.replace("/", "%2F"), b"not it")
    with pytest.raises(RuntimeError, match="was not uploaded"):
        client.submit_job(entrypoint="true", runtime_env={"working_dir": uri})
    with pytest.raises(RuntimeError, match="404: no job with submission_id 'nope'"):
        client.get_job_info("nope")
    with pytest.raises(ConnectionError, match="refused"):
        JobSubmissionClient(
            f"http://{head.dashboard_url}", headers={"Authorization": "Bearer wrong"}
        )
    with pytest.raises(ValueError, match="not an http"):
        JobSubmissionClient("ftp://127.0.0.1:1")
    assert [j.submission_id for j in client.list_jobs()] == ["fails"]
    # The state API lists it too, though no driver of it ever connected.
    rows = [row for row in runtime.util.state.list_jobs() if row.submission_id]
    assert [(row.submission_id, row.status, row.job_id) for row in rows] == [
        ("fails", "FAILED", None)
    ]


def _job_pid(tmp_path: Any) -> int:
    path = tmp_path / "pid"
    wait_until(lambda: path.exists() and path.read_text().strip(), what="the job's pid")
    return int(path.read_text())


def test_stopping_a_job_ends_what_it_started(head: Any, tmp_path: Any) -> None:
    client = _client(head)
    # A child in the background: stopping the job ends it too.
    entrypoint = f"sleep 300 & echo $! > {tmp_path}/pid; wait"
    submission_id = client.submit_job(entrypoint=entrypoint)
    pid = _job_pid(tmp_path)
    assert client.get_job_status(submission_id) is JobStatus.RUNNING
    assert client.stop_job(submission_id)
    info = _ended(client, submission_id)
    assert info.status is JobStatus.STOPPED
    wait_until(lambda: not process_running(pid), what="the job's child to end")
    assert not client.stop_job(submission_id)  # it had ended


def test_a_killed_dashboard_takes_its_jobs_with_it(head: Any, tmp_path: Any) -> None:
    client = _client(head)
    client.submit_job(entrypoint=f"sleep 300 & echo $! > {tmp_path}/pid; wait")
    pid = _job_pid(tmp_path)
    dashboards = [
        int(name)
        for name in os.listdir("/proc")
        if name.isdigit()
        and _cmdline(int(name)).startswith(sys.executable.encode())
        and b"runtime.dashboard" in _cmdline(int(name))
        and head.session_dir.encode() in _cmdline(int(name))
    ]
    assert len(dashboards) == 1
    os.kill(dashboards[0], signal.SIGKILL)
    wait_until(lambda: not process_running(pid), what="the job's child to end")
    wait_until(lambda: not _runners(head.session_dir), what="the job's runner to end")
    # A new dashboard of the cluster lists it, ended with the one that ran it.
    gcs = runtime.get_runtime_context().gcs_address
    log = os.path.join(head.session_dir, "logs", "dashboard-again.log")
    args = ["--gcs-address", gcs, "--port", "0", "--session-dir", head.session_dir]
    env = auth.env(auth.token())
    again = process.spawn(
        "runtime.dashboard", args, env=env, log_path=log, tie_to_parent=True, timeout=60
    )
    try:
        (job,) = JobSubmissionClient(again.info["url"]).list_jobs()
        assert job.status is JobStatus.FAILED and "dashboard running it ended" in job.message
    finally:
        again.stop()


def _runners(session_dir: str) -> list[int]:
    return [
        int(name)
        for name in os.listdir("/proc")
        if name.isdigit()
        and b"_job_runner.py" in _cmdline(int(name))
        and session_dir.encode() in _cmdline(int(name))
    ]


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ")
    except OSError:
        return b""


def test_the_command_line(head: Any, tmp_path: Any) -> None:
    env = {
        **os.environ,
        "RUNTIME_DASHBOARD_ADDRESS": f"http://{head.dashboard_url}",
        auth.TOKEN_ENV: auth.token(),
    }
    done = run_cli("job", "submit", "--submission-id", "cli", "--", "echo", "from the cli", env=env)
    assert done.returncode == 0, done.stderr
    assert "from the cli" in done.stdout and "succeeded" in done.stdout
    listed = run_cli("job", "list", env=env)
    assert listed.returncode == 0 and "cli\tSUCCEEDED" in listed.stdout
    failed = run_cli("job", "submit", "--", "exit 2", env=env)
    assert failed.returncode == 1 and "failed: the entrypoint exited with 2" in failed.stdout
    missing = run_cli("job", "status", "nope", env=env)
    assert missing.returncode == 1 and "no job with submission_id 'nope'" in missing.stderr
    assert "Traceback" not in missing.stderr
