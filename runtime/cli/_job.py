"""``runtime job submit|status|logs|stop|list|delete``: Ray's ``ray job`` commands."""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import time
from typing import Any

from ..job_submission import JobStatus, JobSubmissionClient

ADDRESS_HELP = (
    "the dashboard's URL (default: RAY_API_SERVER_ADDRESS, RUNTIME_DASHBOARD_ADDRESS, "
    "else http://127.0.0.1:8265)"
)
#: How often `stop` (without --no-wait) looks whether the job has ended.
_STOP_POLL_S = 0.2
_STOP_WAIT_S = 30.0


def _client(args: argparse.Namespace) -> JobSubmissionClient:
    return JobSubmissionClient(args.address)


def _json_arg(text: str | None, what: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as e:
        raise SystemExit(f"runtime job submit: {what} is not JSON: {e}") from None


async def _follow(client: JobSubmissionClient, submission_id: str) -> None:
    async for text in client.tail_job_logs(submission_id):
        sys.stdout.write(text)
        sys.stdout.flush()


def _cmd_submit(args: argparse.Namespace) -> int:
    words = [w for w in args.entrypoint if w != "--"] if args.entrypoint else []
    if not words:
        raise SystemExit("runtime job submit: give the entrypoint after --, as: -- python x.py")
    entrypoint = words[0] if len(words) == 1 else shlex.join(words)
    runtime_env = _json_arg(args.runtime_env_json, "--runtime-env-json") or {}
    if args.working_dir:
        runtime_env["working_dir"] = args.working_dir
    client = _client(args)
    submission_id = client.submit_job(
        entrypoint=entrypoint,
        submission_id=args.submission_id,
        runtime_env=runtime_env or None,
        metadata=_json_arg(args.metadata_json, "--metadata-json"),
    )
    print(f"Job {submission_id!r} submitted.", flush=True)
    if args.no_wait:
        print(f"Follow it with: runtime job logs {submission_id} --follow")
        return 0
    asyncio.run(_follow(client, submission_id))
    info = client.get_job_info(submission_id)
    print(f"Job {submission_id!r} {info.status.value.lower()}: {info.message}")
    return 0 if info.status is JobStatus.SUCCEEDED else 1


def _cmd_status(args: argparse.Namespace) -> int:
    info = _client(args).get_job_info(args.submission_id)
    print(f"Job {info.submission_id!r}: {info.status.value}; {info.message}")
    return 0


def _cmd_logs(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.follow:
        asyncio.run(_follow(client, args.submission_id))
    else:
        sys.stdout.write(client.get_job_logs(args.submission_id))
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    client = _client(args)
    if not client.stop_job(args.submission_id):
        print(f"Job {args.submission_id!r} had ended already.")
        return 0
    if args.no_wait:
        print(f"Job {args.submission_id!r} is being stopped.")
        return 0
    deadline = time.monotonic() + _STOP_WAIT_S
    status = client.get_job_status(args.submission_id)
    while not status.is_terminal() and time.monotonic() < deadline:
        time.sleep(_STOP_POLL_S)
        status = client.get_job_status(args.submission_id)
    print(f"Job {args.submission_id!r}: {status.value}")
    return 0 if status.is_terminal() else 1


def _cmd_list(args: argparse.Namespace) -> int:
    for info in _client(args).list_jobs():
        print(f"{info.submission_id}\t{info.status.value}\t{info.job_id or '-'}\t{info.entrypoint}")
    return 0


def _cmd_delete(args: argparse.Namespace) -> int:
    _client(args).delete_job(args.submission_id)
    print(f"Job {args.submission_id!r} deleted.")
    return 0


def _said(name: str, func: Any) -> Any:
    """``func``, its failures told in one line (no traceback: they are the server's answer)."""

    def run(args: argparse.Namespace) -> int:
        try:
            code: int = func(args)
        except (ConnectionError, RuntimeError, TypeError, ValueError) as e:
            print(f"runtime job {name}: {e}", file=sys.stderr)
            return 1
        return code

    return run


def add_commands(sub: Any) -> None:
    job = sub.add_parser("job", help="submit jobs to a cluster's dashboard, and follow them")
    commands = job.add_subparsers(dest="job_command", required=True)

    def command(name: str, func: Any, help_text: str, with_id: bool = True) -> Any:
        p = commands.add_parser(name, help=help_text)
        p.add_argument("--address", default=None, help=ADDRESS_HELP)
        if with_id:
            p.add_argument("submission_id", help="the job's submission id")
        p.set_defaults(func=_said(name, func))
        return p

    submit = command("submit", _cmd_submit, "run a command on the cluster as a job", False)
    submit.add_argument("--submission-id", default=None, help="the job's id (default: a new one)")
    submit.add_argument("--runtime-env-json", default=None, help="the job's runtime_env, as JSON")
    submit.add_argument(
        "--working-dir", default=None, help="a local folder: uploaded, the job runs in it"
    )
    submit.add_argument("--metadata-json", default=None, help="the job's metadata, as JSON")
    submit.add_argument("--no-wait", action="store_true", help="do not follow its output")
    submit.add_argument("entrypoint", nargs=argparse.REMAINDER, help="-- the command to run")
    command("status", _cmd_status, "show a job's status")
    logs = command("logs", _cmd_logs, "print a job's output")
    logs.add_argument("--follow", "-f", action="store_true", help="follow it until the job ends")
    stop = command("stop", _cmd_stop, "stop a running job")
    stop.add_argument("--no-wait", action="store_true", help="do not wait until it has stopped")
    command("list", _cmd_list, "list the submitted jobs", False)
    command("delete", _cmd_delete, "forget an ended job and its output")
