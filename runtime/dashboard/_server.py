"""The dashboard's HTTP server: a page and the JSON it reads, over the state API.

An aiohttp application on the dashboard process's loop. Every route but the
login asks for the cluster's token: a browser gives it once (``/?token=...``
or the login form) and gets an HttpOnly cookie; scripts send
``Authorization: Bearer <token>``. The JSON comes from one long-lived
:class:`~runtime._private.state.StateReader` (its channels are reused).
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .._private import auth, log_reader, packaging, rpc, stacks, state, tls, version
from .._private import task_events as te
from ..protocol.rt import KvPutRequest
from ._jobs import MAX_LOG_BYTES, BadRequest, JobManager

logger = logging.getLogger(__name__)

COOKIE = "runtime_dashboard_token"
#: Task rows the page asks for at most (the newest attempts), and the timeline's window.
MAX_TASK_ROWS = 1000
TIMELINE_WINDOW_MS = 60_000
MAX_UPLOAD_BYTES = packaging.MAX_PACKAGE_BYTES + 1024 * 1024
#: How often a job's log is read for new output while it is followed.
TAIL_POLL_S = 0.2
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css", "index.html": "text/html"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _static(name: str) -> bytes:
    return importlib.resources.files(__package__).joinpath("static", name).read_bytes()


def _authorized(request: web.Request) -> bool:
    wanted = auth.token()
    if not wanted:
        return True
    given = request.cookies.get(COOKIE, "")
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        given = header[len("Bearer ") :]
    return auth.token_matches(given, wanted)


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path == "/login" or _authorized(request):
        return await handler(request)
    token = request.query.get("token")
    if token is not None and request.path == "/":
        return _login(token)
    if request.path.startswith("/api/"):
        return web.json_response({"error": f"unauthenticated: {auth.HOW_TO}"}, status=401)
    return web.Response(text=LOGIN_PAGE, content_type="text/html", status=401)


def _login(token: str) -> web.StreamResponse:
    wanted = auth.token()
    if not auth.token_matches(token, wanted):
        return web.Response(text=LOGIN_PAGE, content_type="text/html", status=401)
    response = web.HTTPSeeOther("/")
    response.set_cookie(COOKIE, token, httponly=True, samesite="Strict")
    return response


LOGIN_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>runtime dashboard</title>
<link rel="stylesheet" href="/login.css"></head><body class="login">
<form method="post" action="/login"><h1>runtime dashboard</h1>
<p>This cluster needs its token (<code>runtime start</code> printed where it is kept).</p>
<input type="password" name="token" placeholder="token" autofocus>
<button type="submit">Open</button></form></body></html>"""


class Dashboard:
    def __init__(self, gcs_address: tuple[str, int], session_dir: str = "") -> None:
        self.gcs_address = gcs_address
        self.session_dir = session_dir
        self.reader: state.StateReader | None = None
        self.jobs: JobManager | None = None
        self.started = time.time()

    def app(self) -> web.Application:
        # (A package a job submission uploads may be this big; JSON bodies are small.)
        app = web.Application(middlewares=[_guard], client_max_size=MAX_UPLOAD_BYTES)
        app.on_startup.append(self._open)
        app.on_cleanup.append(self._close)
        get = app.router.add_get
        get("/", self._page)
        get("/static/{name}", self._static)
        get("/login.css", self._login_css)
        app.router.add_post("/login", self._login_form)
        get("/api/cluster", self._cluster)
        get("/api/nodes", self._list("nodes"))
        get("/api/jobs", self._list("jobs"))
        get("/api/actors", self._list("actors"))
        get("/api/placement_groups", self._list("placement_groups"))
        get("/api/workers", self._list("workers"))
        get("/api/cluster_events", self._list("cluster_events"))
        get("/api/runtime_envs", self._list("runtime_envs"))
        get("/api/tasks", self._tasks)
        get("/api/summary", self._summary)
        get("/api/timeline", self._timeline)
        get("/api/logs", self._logs)
        get("/api/log", self._log)
        get("/api/stacks", self._stacks)
        # Ray's job submission API (``runtime.job_submission``); the page's own
        # list of drivers is /api/jobs, without the slash.
        get("/api/version", self._version)
        app.router.add_post("/api/jobs/", self._submit_job)
        get("/api/jobs/", self._list_submissions)
        get("/api/jobs/{id}", self._job_info)
        app.router.add_post("/api/jobs/{id}/stop", self._stop_job)
        app.router.add_delete("/api/jobs/{id}", self._delete_job)
        get("/api/jobs/{id}/logs", self._job_logs)
        get("/api/jobs/{id}/logs/tail", self._tail_job_logs)
        app.router.add_put("/api/packages/{uri:.+}", self._put_package)
        return app

    async def _open(self, app: web.Application) -> None:
        self.reader = state.StateReader(self.gcs_address)
        session = self.session_dir or os.getcwd()
        self.jobs = JobManager(self.reader, self.gcs_address, session)
        await self.jobs.load()

    async def _close(self, app: web.Application) -> None:
        if self.jobs is not None:
            await self.jobs.close()
        if self.reader is not None:
            await self.reader.__aexit__()

    def _state(self) -> state.StateReader:
        assert self.reader is not None
        return self.reader

    # -- the page ---------------------------------------------------------------------------
    async def _page(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=_static("index.html"), content_type="text/html")

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        kind = STATIC_FILES.get(name)
        if kind is None or name == "index.html":
            raise web.HTTPNotFound()
        return web.Response(body=_static(name), content_type=kind)

    async def _login_css(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=_static("style.css"), content_type="text/css")

    async def _login_form(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        token = form.get("token")
        return _login(token if isinstance(token, str) else "")

    # -- the JSON -----------------------------------------------------------------------
    async def _cluster(self, request: web.Request) -> web.StreamResponse:
        nodes = await self._state().nodes()
        return web.json_response(
            {
                "gcs_address": f"{self.gcs_address[0]}:{self.gcs_address[1]}",
                "session": self.session_dir,
                "nodes": nodes,
                "now_ms": int(time.time() * 1000),
            }
        )

    def _list(self, resource: str) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            rows, _, _ = await self._state().read(resource, [], 0, True)
            return web.json_response(rows)

        return handler

    async def _tasks(self, request: web.Request) -> web.StreamResponse:
        filters: list[te.Filter] = []
        for key in ("state", "name", "job_id", "type"):
            value = request.query.get(key)
            if value:
                filters.append((key, "=", value))
        limit = _int(request.query.get("limit"), MAX_TASK_ROWS, MAX_TASK_ROWS)
        rows, total, dropped = await self._state().tasks(filters, limit, True, newest_first=True)
        return web.json_response({"rows": rows, "total": total, "dropped": dropped}, dumps=_dumps)

    async def _summary(self, request: web.Request) -> web.StreamResponse:
        tasks = await self._state().task_summary([])
        actors = await self._state().actors()
        return web.json_response({"tasks": tasks, "actors": state.summarize_actors(actors)})

    async def _timeline(self, request: web.Request) -> web.StreamResponse:
        # The chart shows the last minute: what ran then, or runs still.
        since = int(time.time() * 1000) - TIMELINE_WINDOW_MS
        running, _, _ = await self._state().tasks([("state", "=", "RUNNING")], 0, True)
        ended, _, _ = await self._state().tasks([("end_time_ms", ">=", since)], 0, True)
        return web.json_response(state.chrome_trace(running + ended), dumps=_dumps)

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        node = request.query.get("node_id") or None
        return web.json_response(await log_reader.list_logs(self._state(), node))

    async def _log(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        tail = _int(query.get("tail"), 1000, 100_000)
        try:
            target = await log_reader.resolve(
                self._state(),
                filename=query.get("name") or None,
                node_id=query.get("node_id") or None,
                actor_id=query.get("actor_id") or None,
                task_id=query.get("task_id") or None,
                pid=_int(query.get("pid"), 0, 1 << 31) or None,
                err=query.get("err") == "1",
            )
            lines = [
                line
                async for chunk in log_reader.read(self._state(), target, tail)
                for line in chunk
            ]
        except ValueError as e:
            return web.json_response({"error": str(e)}, status=404)
        return web.json_response({"node_id": target.node_id, "name": target.name, "lines": lines})

    async def _stacks(self, request: web.Request) -> web.StreamResponse:
        """Where a process's threads and coroutines are now (``runtime stack``)."""
        pid = _int(request.query.get("pid"), 0, 1 << 31) or None
        found = await stacks.collect(self.gcs_address, pid=pid)
        if not found:
            which = f"process {pid}" if pid else "any process"
            return web.json_response({"error": f"no answer from {which}"}, status=404)
        return web.json_response({"text": stacks.render(found)})

    # -- submitted jobs -------------------------------------------------------------
    def _jobs(self) -> JobManager:
        assert self.jobs is not None
        return self.jobs

    async def _version(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"version": version.__version__})

    async def _submit_job(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "the body is not JSON"}, status=400)
        try:
            submission_id = await self._jobs().submit(body)
        except BadRequest as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response({"submission_id": submission_id, "job_id": submission_id})

    async def _with_drivers(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each job's driver (its job id), once its ``init()`` connected."""
        drivers = {
            row["submission_id"]: row
            for row in await self._state().drivers()
            if row["submission_id"]
        }
        for row in rows:
            driver = drivers.get(row["submission_id"])
            if driver is not None:
                row["job_id"], row["driver_info"] = driver["job_id"], driver["driver_info"]
        return rows

    async def _list_submissions(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(await self._with_drivers(self._jobs().all()))

    def _known(self, request: web.Request) -> str:
        submission_id = request.match_info["id"]
        if self._jobs().get(submission_id) is None:
            raise web.HTTPNotFound(
                text=json.dumps({"error": f"no job with submission_id {submission_id!r}"}),
                content_type="application/json",
            )
        return submission_id

    async def _job_info(self, request: web.Request) -> web.StreamResponse:
        row = self._jobs().get(self._known(request))
        assert row is not None
        return web.json_response((await self._with_drivers([row]))[0])

    async def _stop_job(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"stopped": await self._jobs().stop(self._known(request))})

    async def _delete_job(self, request: web.Request) -> web.StreamResponse:
        try:
            deleted = await self._jobs().delete(self._known(request))
        except BadRequest as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response({"deleted": deleted})

    async def _put_package(self, request: web.Request) -> web.StreamResponse:
        uri = request.match_info["uri"]
        data = await request.read()
        if not packaging.matches(uri, data):
            error = f"{uri!r:.100} is not the package URI of what was sent (its hash)"
            return web.json_response({"error": error}, status=400)
        await self._state().gcs.kv_put(
            KvPutRequest(namespace=packaging.KV_NAMESPACE, key=uri.encode(), value=data)
        )
        return web.json_response({"uri": uri})

    async def _job_logs(self, request: web.Request) -> web.StreamResponse:
        path = self._jobs().log_path(self._known(request))
        data, _ = await asyncio.to_thread(_read_end, path, 0)  # (up to MAX_LOG_BYTES: off the loop)
        return web.json_response({"logs": data.decode(errors="replace")})

    async def _tail_job_logs(self, request: web.Request) -> web.StreamResponse:
        submission_id = self._known(request)
        path = self._jobs().log_path(submission_id)
        response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        await response.prepare(request)
        offset = 0
        while True:
            running = self._jobs().is_running(submission_id)
            data, offset = await asyncio.to_thread(_read_end, path, offset)
            if data:
                await response.write(data)
            elif not running:
                break  # (read once more after it ended: nothing is lost)
            else:
                await asyncio.sleep(TAIL_POLL_S)
        await response.write_eof()
        return response


def _read_end(path: str, offset: int) -> tuple[bytes, int]:
    """The file's bytes from ``offset`` (its last MAX_LOG_BYTES at most), and where they end."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(offset, size - MAX_LOG_BYTES)
            f.seek(start)
            data = f.read(size - start)
    except FileNotFoundError:
        return b"", offset
    return data, start + len(data)


def _int(text: str | None, default: int, limit: int) -> int:
    try:
        value = int(text) if text else default
    except ValueError:
        raise web.HTTPBadRequest(text=f"not a number: {text!r}") from None
    return max(0, min(value, limit))


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


async def serve(dashboard: Dashboard, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Starts serving; the runner (to clean up) and the port it listens on.
    A taken port falls back to a free one (several clusters on one machine)."""
    runner = web.AppRunner(dashboard.app(), access_log=None)
    await runner.setup()
    try:
        sock = rpc.bind_socket(host, port)
    except OSError as e:
        if not port:
            raise
        logger.warning("dashboard port %d is taken (%s); using a free one", port, e)
        sock = rpc.bind_socket(host, 0)
    site = web.SockSite(runner, sock, ssl_context=tls.server_context())
    await site.start()
    return runner, int(sock.getsockname()[1])
