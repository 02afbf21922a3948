"""The ``runtime`` command: start, stop and inspect clusters; benchmarks."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from typing import Any

from .._private import auth, cluster, placement, process, rpc, tls
from .._private import labels as node_labels
from .._private.config import Config, spill_folder
from .._private.session import Session
from .._private.version import __version__
from ..gcs import open_storage
from ..protocol.rt import PlacementGroupInfo, PlacementGroupState
from . import _job, _state


def _cmd_start(args: argparse.Namespace) -> int:
    if args.head == bool(args.address):
        print(
            "runtime start: give either --head (a new cluster) or --address=HEAD:PORT (join one)",
            file=sys.stderr,
        )
        return 2
    if args.host in ("0.0.0.0", "::", "*"):
        suggestion = cluster.local_address_towards(("192.0.2.1", 9))
        print(
            f"runtime start: --host {args.host} is not an address other machines can reach; "
            f"give this machine's address on their network (for example --host {suggestion})",
            file=sys.stderr,
        )
        return 2
    for flag, name in (
        (args.tls_cert, tls.CERT_ENV),
        (args.tls_key, tls.KEY_ENV),
        (args.tls_ca, tls.CA_ENV),
    ):
        if flag:
            os.environ[name] = os.path.abspath(flag)  # the processes it starts inherit it
    try:
        tls.check()
    except ValueError as e:
        print(f"runtime start: {e}", file=sys.stderr)
        return 2
    overrides: dict[str, Any] = {}
    if args.dashboard_host is not None:
        overrides["dashboard_host"] = args.dashboard_host
    if args.dashboard_port is not None:
        overrides["dashboard_port"] = args.dashboard_port
    if args.object_spilling_directory:
        try:
            folder = spill_folder("runtime start", args.object_spilling_directory)
        except (TypeError, ValueError) as e:
            print(e, file=sys.stderr)
            return 2
        overrides["object_spilling_directory"] = folder
    config = Config.load(overrides)
    try:
        resources = json.loads(args.resources) if args.resources else {}
    except json.JSONDecodeError as e:
        print(f"runtime start: --resources is not valid JSON: {e}", file=sys.stderr)
        return 2
    if not isinstance(resources, dict):
        print("runtime start: --resources must be a JSON object", file=sys.stderr)
        return 2
    try:
        labels = {
            **node_labels.read_labels_file(args.labels_file),
            **node_labels.parse_labels(args.labels),
        }
    except (OSError, TypeError, ValueError) as e:
        print(f"runtime start: --labels: {e}", file=sys.stderr)
        return 2
    if args.address:
        return _join(config, args, resources, labels)
    port = config.gcs_port if args.port is None else args.port
    if port and not _port_free(args.host, port):
        print(
            f"runtime start: port {port} on {args.host} is in use (a cluster already runs "
            "there, or another program); stop it, or choose another with --port",
            file=sys.stderr,
        )
        return 1
    storage = args.storage or (
        f"sqlite://{os.path.abspath(args.storage_dir)}" if args.storage_dir else ""
    )
    try:
        open_storage(storage, session_dir=".")  # a bad spec is told here, not by the gcs's log
    except ValueError as e:
        print(f"runtime start: {e}", file=sys.stderr)
        return 2
    if args.storage_dir:
        os.makedirs(args.storage_dir, mode=0o700, exist_ok=True)
    token, token_path = _standing_token()
    head = cluster.start_head(
        config,
        host=args.host,
        port=port,
        resources=cluster.default_resources(args.num_cpus, args.num_gpus, resources, args.host),
        standing=True,
        object_store_memory=args.object_store_memory,
        token=token,
        include_dashboard=args.include_dashboard,
        storage=storage,
        labels=labels,
    )
    address = f"{head.gcs_address[0]}:{head.gcs_address[1]}"
    print(f"Started a runtime cluster; its gcs listens on {address}.")
    print(f"Session directory: {head.session.path}")
    if head.dashboard_url:
        print(f"Dashboard: {head.dashboard_url} (open {head.dashboard_url}/?token=<the token>)")
    sd_file = os.path.join(head.session.path, "prom_metrics_service_discovery.json")
    print(f"Prometheus targets (file_sd_configs): {sd_file}")
    if token:
        print(f"Its token is in {token_path} (only you can read it): drivers and nodes of")
        print("this machine find it; elsewhere, set RUNTIME_AUTH_TOKEN to its content.")
    else:
        print("Authentication is DISABLED (RUNTIME_AUTH_MODE=disabled): anyone who reaches")
        print("its ports can run code in it.")
    print("Connect from Python on this machine with:")
    print("    import runtime")
    print("    runtime.init(address='auto')")
    print(f"or from anywhere that reaches it: runtime.init(address='{address}')")
    print("Stop it with: runtime stop")
    return 0


def _yes_no(text: str) -> bool:
    if text.lower() in ("true", "yes", "1", "on"):
        return True
    if text.lower() in ("false", "no", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _standing_token() -> tuple[str, str]:
    """A standing cluster's token and its file: RUNTIME_AUTH_TOKEN, else the
    user's token file, else a new token written there."""
    path = auth.user_token_path()
    if not auth.enabled():
        return "", path
    token = os.environ.get(auth.TOKEN_ENV) or auth.read_token_file(path)
    if not token:
        token = auth.new_token()
        auth.write_token_file(path, token)
    return token, path


def _join(
    config: Config, args: argparse.Namespace, resources: dict[str, Any], labels: dict[str, str]
) -> int:
    try:
        gcs_address = cluster.parse_address(args.address)
    except ValueError as e:
        print(f"runtime start: {e}", file=sys.stderr)
        return 2
    host = args.host if args.host_given else cluster.local_address_towards(gcs_address)
    try:
        session, raylet = cluster.start_worker_node(
            config,
            host=host,
            gcs_address=gcs_address,
            resources=cluster.default_resources(args.num_cpus, args.num_gpus, resources, host),
            object_store_memory=args.object_store_memory,
            labels=labels,
        )
    except (OSError, RuntimeError, TimeoutError) as e:
        print(f"runtime start: could not join {args.address}: {e}", file=sys.stderr)
        return 1
    print(f"Started a runtime node at {host} (node {raylet.info['node_id'][:12]}).")
    print(f"It joined the cluster whose gcs listens on {args.address}.")
    print(f"Session directory: {session.path}")
    print("Stop it with: runtime stop")
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    config = Config.load()
    victims: list[tuple[int, str]] = []
    for session in Session.all(config.session_root):
        for pid, role in session.pids():
            if process.pid_alive(pid) and process.is_runtime_process(pid):
                victims.append((pid, role))
    # Raylets first (their workers follow them), then the gcs.
    # The supervisor before the gcs, or it would start the gcs again.
    order = {"gcs-supervisor": 1, "gcs": 2}
    victims.sort(key=lambda v: order.get(v[1], 0))
    for pid, _ in victims:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + args.grace
    while time.monotonic() < deadline and any(process.pid_alive(p) for p, _ in victims):
        time.sleep(0.05)
    for pid, _ in victims:
        if process.pid_alive(pid) and process.is_runtime_process(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    print(f"Stopped {len(victims)} runtime process(es).")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    config = Config.load()
    try:
        address = cluster.resolve_address(args.address, config, standing_only=False)
        nodes, groups = asyncio.run(cluster.cluster_state(address, 5.0))
    except (ConnectionError, OSError, TimeoutError, ValueError) as e:
        print(f"runtime status: {e}", file=sys.stderr)
        return 1
    alive = [n for n in nodes if n.alive]
    print(f"Cluster at {address[0]}:{address[1]}")
    print(f"Nodes: {len(alive)} alive, {len(nodes) - len(alive)} dead")
    for node in nodes:
        state = "alive" if node.alive else "dead"
        role = "  head" if node.is_head else ""
        cpus = node.resources_total.get("CPU", 0.0)
        print(
            f"  {node.node_id.hex()[:12]}  {node.host}:{node.raylet_port}  {state}{role}"
            f"  ({cpus:g} CPU)"
        )
    totals: dict[str, float] = {}
    avail: dict[str, float] = {}
    for node in alive:
        for k, v in node.resources_total.items():
            totals[k] = totals.get(k, 0.0) + v
        for k, v in node.resources_available.items():
            avail[k] = avail.get(k, 0.0) + v
    live = [g for g in groups if g.state is not PlacementGroupState.REMOVED]
    reserved: dict[str, float] = {}
    for group in live:
        for bundle in group.bundles:
            if bundle.node_id:
                for k, v in bundle.resources.items():
                    reserved[k] = reserved.get(k, 0.0) + v
    print("Resources (used / total):")
    for name in sorted(totals):
        if name.startswith("node:") or placement.is_group_resource(name):
            continue
        used = totals[name] - avail.get(name, 0.0)
        if name in _BYTE_RESOURCES:
            line = f"  {_bytes(used)}/{_bytes(totals[name])} {name}"
        else:
            line = f"  {used:g}/{totals[name]:g} {name}"
        if reserved.get(name):
            line += f" ({reserved[name]:g} reserved in placement groups)"
        print(line)
    stored = sum(n.object_store_used for n in alive)
    capacity = sum(n.object_store_memory for n in alive)
    print(f"Object store: {_bytes(stored)}/{_bytes(capacity)} in use")
    print("Pending demands:")
    demands = [d for n in alive for d in n.pending]
    if not demands:
        print("  (none)")
    for demand in demands:
        shape = ", ".join(
            f"{k}: {_bytes(v) if k in _BYTE_RESOURCES else f'{v:g}'}"
            for k, v in sorted(demand.resources.items())
        )
        note = "  (infeasible: no node has these resources)" if demand.infeasible else ""
        print(f"  {{{shape}}} x {demand.count}{note}")
    _print_groups(live)
    return 0


def _print_groups(groups: list[PlacementGroupInfo]) -> None:
    """Placement groups not removed: state, strategy and each bundle's node."""
    print("Placement groups:")
    if not groups:
        print("  (none)")
    for group in groups:
        name = f" {group.name!r}" if group.name else ""
        state = group.state.name
        strategy = group.strategy.name
        print(f"  {group.placement_group_id.hex()[:12]}{name}  {state}  {strategy}")
        for bundle in sorted(group.bundles, key=lambda b: b.index):
            where = bundle.node_id.hex()[:12] if bundle.node_id else "(not placed)"
            shape = ", ".join(f"{k}: {v:g}" for k, v in sorted(bundle.resources.items()))
            print(f"    bundle {bundle.index} {{{shape}}} on {where}")
        if group.pending_reason:
            print(f"    {group.pending_reason}")


#: Resources counted in bytes (shown as such).
_BYTE_RESOURCES = frozenset({"memory", "object_store_memory"})


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.2f}{unit}"
        n /= 1024
    return f"{n:.2f}GiB"


def _cmd_memory(args: argparse.Namespace) -> int:
    from .._private import memory

    config = Config.load()
    try:
        address = cluster.resolve_address(args.address, config, standing_only=False)
        tables = asyncio.run(memory.collect(address, cluster.token_for(address, config)))
    except (ConnectionError, OSError, TimeoutError, ValueError) as e:
        print(f"runtime memory: {e}", file=sys.stderr)
        return 1
    print(memory.render(tables))
    return 0


def _cmd_stack(args: argparse.Namespace) -> int:
    from .._private import stacks

    config = Config.load()
    try:
        address = cluster.resolve_address(args.address, config, standing_only=False)
        found = asyncio.run(stacks.collect(address, cluster.token_for(address, config), args.pid))
    except (ConnectionError, OSError, TimeoutError, ValueError) as e:
        print(f"runtime stack: {e}", file=sys.stderr)
        return 1
    if not found:
        which = f"pid {args.pid}" if args.pid is not None else "any driver or worker"
        print(f"runtime stack: no answer from {which} of the cluster", file=sys.stderr)
        return 1
    print(stacks.render(found))
    return 0


def _port_free(host: str, port: int) -> bool:
    """Whether the gcs could listen on ``host:port`` now (checked before any
    session folder is made)."""
    try:
        rpc.bind_socket(host, port).close()
    except OSError:
        return False
    return True


def _cmd_microbenchmark(args: argparse.Namespace) -> int:
    from .. import bench

    return bench.main(args)


def parser() -> argparse.ArgumentParser:
    """The command line: every command and flag, with its help."""
    parser = argparse.ArgumentParser(
        prog="runtime",
        description="Start, stop and inspect runtime clusters; measure them.",
    )
    parser.add_argument("--version", action="version", version=f"runtime {__version__}")
    sub = parser.add_subparsers(dest="command")

    start = sub.add_parser(
        "start", help="start a standing cluster's head, or a node that joins one, on this machine"
    )
    start.add_argument("--head", action="store_true", help="start the head node (gcs + raylet)")
    start.add_argument(
        "--address", default=None, help="HEAD:PORT: start a node that joins that cluster"
    )
    start.add_argument(
        "--host",
        default=None,
        help="address to listen on (head: 127.0.0.1; joining node: the one that reaches the head)",
    )
    start.add_argument("--port", type=int, default=None, help="the gcs port (default 6385)")
    start.add_argument(
        "--num-cpus", type=float, default=None, help="CPUs this node offers (default: all)"
    )
    start.add_argument(
        "--num-gpus", type=float, default=None, help="GPUs this node offers (default: none)"
    )
    start.add_argument("--resources", default=None, help="custom resources as JSON: '{\"x\": 2}'")
    start.add_argument(
        "--labels",
        default="",
        help="this node's labels, for label selectors: 'k=v,k2=v2' or a JSON object",
    )
    start.add_argument(
        "--labels-file", default="", help="a YAML file of this node's labels (key: value)"
    )
    start.add_argument(
        "--object-store-memory", type=int, default=None, help="the object store's capacity in bytes"
    )
    start.add_argument(
        "--object-spilling-directory",
        default=None,
        help="where this node's store spills objects (default: the session's spill/ folder)",
    )
    start.add_argument(
        "--tls-cert", default=None, help="serve TLS with this PEM certificate (RUNTIME_TLS_CERT)"
    )
    start.add_argument("--tls-key", default=None, help="its private key (RUNTIME_TLS_KEY)")
    start.add_argument(
        "--tls-ca",
        default=None,
        help="require peers' certificates signed by this CA: mutual TLS (RUNTIME_TLS_CA)",
    )
    start.add_argument(
        "--storage",
        default=None,
        help="where the gcs keeps its tables: sqlite (default, in the session), "
        "sqlite:///path, redis://[user:password@]host:port/db, or memory",
    )
    start.add_argument(
        "--storage-dir", default=None, help="a folder for the gcs's SQLite file (sqlite storage)"
    )
    start.add_argument(
        "--include-dashboard",
        type=_yes_no,
        default=True,
        help="start the dashboard on the head (true or false; default true)",
    )
    start.add_argument(
        "--dashboard-host", default=None, help="where the dashboard listens (default 127.0.0.1)"
    )
    start.add_argument("--dashboard-port", type=int, default=None, help="its port (default 8265)")
    start.set_defaults(func=_cmd_start)

    stop = sub.add_parser("stop", help="stop the clusters started on this machine")
    stop.add_argument("--grace", type=float, default=5.0, help="seconds before SIGKILL")
    stop.set_defaults(func=_cmd_stop)

    status = sub.add_parser("status", help="show nodes and resources")
    status.add_argument(
        "--address", default="auto", help="HOST:PORT of the gcs (default: the newest local cluster)"
    )
    status.set_defaults(func=_cmd_status)

    memory = sub.add_parser("memory", help="list every live object reference, by process")
    memory.add_argument(
        "--address", default="auto", help="HOST:PORT of the gcs (default: the newest local cluster)"
    )
    memory.set_defaults(func=_cmd_memory)

    stack = sub.add_parser(
        "stack", help="print what every driver and worker is doing: its threads' stacks"
    )
    stack.add_argument(
        "--address", default="auto", help="HOST:PORT of the gcs (default: the newest local cluster)"
    )
    stack.add_argument("--pid", type=int, default=None, help="only this process")
    stack.set_defaults(func=_cmd_stack)

    _state.add_commands(sub)
    _job.add_commands(sub)

    bench = sub.add_parser("microbenchmark", help="measure task and object throughput")
    bench.add_argument("--filter", default="", help="run only rows whose name contains this")
    bench.add_argument("--duration", type=float, default=2.0, help="seconds per row")
    bench.add_argument("--json", default=None, help="also write the rows to this file")
    bench.add_argument(
        "--smoke", action="store_true", help="every row once, at a small scale (for CI)"
    )
    bench.set_defaults(func=_cmd_microbenchmark)
    return parser


def main(argv: list[str] | None = None) -> int:
    command_line = parser()
    args = command_line.parse_args(argv)
    if args.command is None:
        command_line.print_help()
        return 0
    if args.command == "start":
        args.host_given = args.host is not None
        if args.host is None:
            args.host = "127.0.0.1"
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
