"""Starting a cluster's head processes (gcs and raylet) on this machine."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import subprocess
from dataclasses import dataclass

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from .. import exceptions
from ..protocol.rt import Empty, GcsStub, NodeInfo, PlacementGroupInfo
from . import auth, process, rpc, worker_template
from .config import Config
from .session import Session

logger = logging.getLogger(__name__)


@dataclass
class HeadProcesses:
    session: Session
    gcs: process.ChildProcess
    raylet: process.ChildProcess
    gcs_address: tuple[str, int]
    raylet_address: tuple[str, int]
    token: str  # the cluster's secret ("" with authentication disabled)
    dashboard: process.ChildProcess | None = None

    @property
    def dashboard_url(self) -> str | None:
        return None if self.dashboard is None else str(self.dashboard.info["url"])

    def release_ties(self) -> None:
        """In a process forked from the one that started them (see ``release_tie``)."""
        for child in (self.dashboard, self.raylet, self.gcs):
            if child is not None:
                child.release_tie()

    def stop(self) -> None:
        # The dashboard, then the raylet (its workers follow it), then the gcs.
        if self.dashboard is not None:
            self.dashboard.stop()
        self.raylet.stop()
        self.gcs.stop()
        # Nothing listens on them any more (a raylet killed outright left its own).
        with contextlib.suppress(OSError):
            for name in os.listdir(self.session.sockets):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.session.sockets, name))


def default_object_store_memory() -> int:
    """30% of the machine's memory, at most the size of /dev/shm (as in Ray)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    memory = int(total * 0.3)
    try:
        shm = os.statvfs("/dev/shm")
        memory = min(memory, int(shm.f_frsize * shm.f_blocks * 0.95))
    except OSError:
        pass
    return memory


def default_memory(object_store_memory: int) -> int:
    """The ``memory`` resource of a node: the memory available for tasks and
    actors, that is what the machine has free less the object store (as in Ray)."""
    available = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if not available:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    return max(0, available - object_store_memory)


def default_resources(
    num_cpus: float | None, num_gpus: float | None, resources: dict[str, float] | None, host: str
) -> dict[str, float]:
    cpus = num_cpus if num_cpus is not None else (os.cpu_count() or 1)
    total: dict[str, float] = {"CPU": float(cpus)}
    if num_gpus:
        total["GPU"] = float(num_gpus)
    total.update(resources or {})
    total[f"node:{host}"] = 1.0
    return total


def launch_raylet(
    config: Config,
    session: Session,
    *,
    host: str,
    gcs_address: str | int,
    resources: dict[str, float],
    object_store_memory: int | None,
    standing: bool,
    head: bool,
    token: str,
    log_name: str = "raylet",
    labels: dict[str, str] | None = None,
) -> process.Launched:
    """Starts one node's raylet, which registers with the gcs at ``gcs_address``
    (``HOST:PORT``, or a pipe's read end the address will come down: the raylet
    imports while its gcs starts); ``wait_ready`` waits until it serves."""
    where = (
        ["--gcs-address", gcs_address]
        if isinstance(gcs_address, str)
        else ["--gcs-address-fd", str(gcs_address)]
    )
    args = [
        "--host",
        host,
        *where,
        "--resources",
        json.dumps(resources),
        "--session-dir",
        session.path,
        "--object-store-memory",
        str(object_store_memory or default_object_store_memory()),
    ]
    if head:
        args.append("--head")
    if labels:
        args += ["--labels", json.dumps(labels)]
    env = {**config.to_env(), **auth.env(token)}
    log_path = os.path.join(session.logs, f"{log_name}.log")
    pass_fds = [] if isinstance(gcs_address, str) else [gcs_address]
    # Its worker template starts beside it too: the template's imports overlap
    # the raylet's, so a new job's first workers are forked that much sooner.
    template = None
    ends: tuple[socket.socket, socket.socket] | None = None
    if config.worker_template:
        ends = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            template = _launch_template(ends[1].fileno(), session, env, log_path)
        except OSError:
            logger.exception("could not start a worker template; workers start on their own")
        else:
            args += ["--template-fd", str(ends[0].fileno())]
            pass_fds.append(ends[0].fileno())
    try:
        raylet = process.Launched(
            "runtime.raylet",
            args,
            env=env,
            log_path=log_path,
            tie_to_parent=not standing,
            pass_fds=pass_fds,
        )
    except BaseException:
        if template is not None:
            template.kill()
            template.wait()
        raise
    finally:
        for end in ends or ():
            end.close()  # the template ends when the raylet's end closes
    if template is not None:
        # Not in the session's pids (those must all live for the cluster to be
        # found): it ends with its raylet, which `runtime stop` ends.
        raylet.companions.append(template)
    session.record_pid(raylet.popen.pid, "raylet")
    return raylet


def _launch_template(
    fd: int, session: Session, env: dict[str, str], log_path: str
) -> subprocess.Popen[bytes]:
    with process.open_log(log_path) as log:
        return subprocess.Popen(
            worker_template.command(fd, session.path),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=[fd],
            env=process.child_env(env),
            start_new_session=True,
        )


def start_head(
    config: Config,
    *,
    host: str,
    port: int,
    resources: dict[str, float],
    standing: bool,
    object_store_memory: int | None = None,
    token: str | None = None,
    include_dashboard: bool = False,
    storage: str = "",
    labels: dict[str, str] | None = None,
) -> HeadProcesses:
    """Starts a gcs and a raylet; ``standing``: they outlive this process.
    ``token``: the cluster's secret (None: a new one, unless authentication is
    disabled); it is kept in the session folder for drivers of this machine."""
    session = Session.create(config.session_root)
    if token is None:
        token = auth.new_token() if auth.enabled() else ""
    if not auth.enabled():
        logger.warning(
            "authentication is disabled (%s=disabled): anyone who can reach this cluster's "
            "ports can run code in it",
            auth.MODE_ENV,
        )
    if token:
        auth.write_token_file(os.path.join(session.path, auth.SESSION_FILE), token)
    # The gcs's tables: a standing cluster's survive its gcs (sqlite by default).
    storage = storage or config.gcs_storage or ("sqlite" if standing else "memory")
    args = [
        "--host",
        host,
        "--port",
        str(port),
        "--session-dir",
        session.path,
        "--storage",
        storage,
    ]
    supervised = storage != "memory"  # a gcs that dies is started again, on its storage
    # The raylet starts beside the gcs (their interpreters and imports overlap)
    # and learns the gcs's address down a pipe once the gcs listens.
    address_r, address_w = os.pipe()
    try:
        launched = launch_raylet(
            config,
            session,
            host=host,
            gcs_address=address_r,
            resources=resources,
            object_store_memory=object_store_memory,
            standing=standing,
            head=True,
            token=token,
            labels=labels,
        )
    except BaseException:
        os.close(address_w)
        raise
    finally:
        os.close(address_r)
    try:
        gcs = process.spawn(
            "runtime.gcs",
            [*args, "--supervise"] if supervised else args,
            env={**config.to_env(), **auth.env(token)},
            log_path=os.path.join(session.logs, "gcs.log"),
            tie_to_parent=not standing,
            timeout=config.process_start_timeout_s,
        )
    except BaseException:
        os.close(address_w)
        launched.kill()
        raise
    session.record_pid(gcs.pid, "gcs-supervisor" if supervised else "gcs")
    gcs_address = (host, int(gcs.info["port"]))
    try:
        try:
            with contextlib.suppress(BrokenPipeError):  # it ended: wait_ready says why
                os.write(address_w, f"{gcs_address[0]}:{gcs_address[1]}\n".encode())
        finally:
            os.close(address_w)
        raylet = launched.wait_ready(config.process_start_timeout_s)
    except BaseException:
        launched.kill()
        gcs.stop()
        raise
    raylet_address = (host, int(raylet.info["port"]))
    head = HeadProcesses(session, gcs, raylet, gcs_address, raylet_address, token)
    if include_dashboard:
        try:
            head.dashboard = start_dashboard(config, session, gcs_address, standing, token)
        except BaseException:
            head.stop()
            raise
    info = {"gcs_address": f"{gcs_address[0]}:{gcs_address[1]}", "standing": standing}
    if head.dashboard_url:
        info["dashboard_url"] = head.dashboard_url
    session.write_cluster_info(info)
    return head


def start_dashboard(
    config: Config,
    session: Session,
    gcs_address: tuple[str, int],
    standing: bool,
    token: str,
) -> process.ChildProcess:
    """Starts the dashboard (``config.dashboard_host``/``dashboard_port``)."""
    dashboard = process.spawn(
        "runtime.dashboard",
        [
            "--gcs-address",
            f"{gcs_address[0]}:{gcs_address[1]}",
            "--host",
            config.dashboard_host,
            "--port",
            str(config.dashboard_port),
            "--session-dir",
            session.path,
        ],
        env={**config.to_env(), **auth.env(token)},
        log_path=os.path.join(session.logs, "dashboard.log"),
        tie_to_parent=not standing,
        timeout=config.process_start_timeout_s,
    )
    session.record_pid(dashboard.pid, "dashboard")
    return dashboard


def start_worker_node(
    config: Config,
    *,
    host: str,
    gcs_address: tuple[str, int],
    resources: dict[str, float],
    object_store_memory: int | None = None,
    labels: dict[str, str] | None = None,
) -> tuple[Session, process.ChildProcess]:
    """Starts a standing raylet on this machine that joins the cluster at ``gcs_address``."""
    token = token_for(gcs_address, config)
    session = Session.create(config.session_root)
    if token:
        auth.write_token_file(os.path.join(session.path, auth.SESSION_FILE), token)
    raylet = launch_raylet(
        config,
        session,
        host=host,
        gcs_address=f"{gcs_address[0]}:{gcs_address[1]}",
        resources=resources,
        object_store_memory=object_store_memory,
        standing=True,
        head=False,
        token=token,
        labels=labels,
    ).wait_ready(config.process_start_timeout_s)
    session.write_cluster_info(
        {"gcs_address": f"{gcs_address[0]}:{gcs_address[1]}", "standing": True, "head": False}
    )
    return session, raylet


async def list_nodes(gcs_address: tuple[str, int], timeout: float = 10.0) -> list[NodeInfo]:
    """Every node the gcs at ``gcs_address`` knows, alive or dead (one-off, from
    outside a driver); ConnectionError naming the gcs when it cannot be reached."""
    nodes, _ = await cluster_state(gcs_address, timeout)
    return nodes


async def cluster_state(
    gcs_address: tuple[str, int], timeout: float = 10.0
) -> tuple[list[NodeInfo], list[PlacementGroupInfo]]:
    """The nodes and the placement groups the gcs knows (``runtime status``)."""
    channels = rpc.ChannelPool(token_for(gcs_address, Config.load()))
    stub = GcsStub(channels.get(*gcs_address))
    try:
        nodes = await asyncio.wait_for(stub.get_all_nodes(Empty()), timeout)
        groups = await asyncio.wait_for(stub.list_placement_groups(Empty()), timeout)
    except rpc.CONNECTION_ERRORS as e:
        where = f"the gcs at {gcs_address[0]}:{gcs_address[1]}"
        if isinstance(e, GRPCError) and e.status is Status.UNAUTHENTICATED:
            raise exceptions.AuthenticationError(f"{where} refused the call: {e.message}") from e
        if isinstance(e, GRPCError):
            raise ConnectionError(f"{where} refused the call: {e.message}") from e
        raise ConnectionError(f"could not reach {where}: {e}") from e
    finally:
        channels.close()
    return list(nodes.nodes), list(groups.placement_groups)


def local_address_towards(remote: tuple[str, int]) -> str:
    """This machine's address on the route to ``remote`` (no packet is sent)."""
    import socket

    if remote[0] in ("127.0.0.1", "localhost", "::1"):
        return "127.0.0.1"
    family = socket.AF_INET6 if ":" in remote[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(remote)
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def token_for(gcs_address: tuple[str, int], config: Config) -> str:
    """The token of the cluster whose gcs is at ``gcs_address`` (see ``auth``):
    sessions on this machine of that cluster are looked in."""
    wanted = f"{gcs_address[0]}:{gcs_address[1]}"
    sessions = [
        s.path
        for s in reversed(Session.all(config.session_root))
        if s.private() and (s.cluster_info() or {}).get("gcs_address") == wanted
    ]
    return auth.find_token(sessions)


def parse_address(address: str) -> tuple[str, int]:
    scheme, found, _ = address.partition("://")
    if found:
        why = {
            "ray": "Ray Client's, which this runtime does not have",
            "http": "a web address (the dashboard's?)",
            "https": "a web address (the dashboard's?)",
        }.get(scheme.lower(), f"a {scheme}:// URL")
        raise ValueError(
            f"address {address!r} is {why}: give the gcs's HOST:PORT (as "
            "'runtime start --head' prints it), or 'auto' for this machine's cluster"
        )
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"address {address!r} is not of the form HOST:PORT")
    return host, int(port)


def find_cluster(config: Config, *, standing_only: bool) -> tuple[str, int] | None:
    """The gcs of the newest cluster on this machine whose processes all live:
    standing ones only (``runtime start``), or also those a driver's ``init()``
    started."""
    for session in reversed(Session.all(config.session_root)):
        if not session.private():
            continue
        info = session.cluster_info()
        if not info or (standing_only and not info.get("standing")):
            continue
        pids = session.pids()
        if pids and all(process.pid_alive(pid) for pid, _ in pids):
            return parse_address(info["gcs_address"])
    return None


def resolve_address(address: str, config: Config, standing_only: bool = True) -> tuple[str, int]:
    """``"auto"`` (the newest cluster on this machine; ``standing_only``: started
    with ``runtime start``) or ``HOST:PORT``."""
    if address != "auto":
        return parse_address(address)
    if config.address:
        return parse_address(config.address)
    found = find_cluster(config, standing_only=standing_only)
    if found is not None:
        return found
    raise ConnectionError(
        "address='auto' found no running cluster on this machine; start one with "
        "'runtime start --head', or call runtime.init() with no address for a local one"
    )
