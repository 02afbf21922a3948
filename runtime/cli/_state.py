"""``runtime list|get|summary|timeline``: the state API on the command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from .._private import cluster, log_reader, rpc, state
from .._private import task_events as te
from .._private.config import Config

ADDRESS_HELP = "HOST:PORT of the gcs (default: the newest local cluster)"
#: Ray's CLI shows this many rows unless told otherwise.
DEFAULT_LIMIT = 100
#: Columns a table shows (detail shows every column, as YAML).
_TABLE = {
    "tasks": ("task_id", "attempt_number", "name", "state", "job_id", "type", "node_id",
              "worker_pid", "error_type"),
    "actors": ("actor_id", "class_name", "state", "job_id", "name", "node_id", "pid",
               "num_restarts"),
    "nodes": ("node_id", "node_ip", "is_head_node", "state", "resources_total"),
    "jobs": ("job_id", "type", "status", "entrypoint", "start_time", "end_time"),
    "workers": ("worker_id", "is_alive", "worker_type", "node_id", "pid", "job_id", "exit_type"),
    "objects": ("object_id", "object_size", "reference_type", "call_site", "type", "pid"),
    "placement_groups": ("placement_group_id", "name", "creator_job_id", "state", "strategy"),
    "cluster_events": ("time", "severity", "source_type", "message"),
    "runtime_envs": ("runtime_env", "success", "creation_time_ms", "node_id", "ref_cnt"),
}  # fmt: skip


def _resource(name: str) -> str:
    """Ray's CLI takes singular and plural names, and dashes."""
    name = name.replace("-", "_")
    if name in state.COLUMNS:
        return name
    if name + "s" in state.COLUMNS:
        return name + "s"
    raise argparse.ArgumentTypeError(
        f"unknown resource {name!r}; choose one of {', '.join(state.RESOURCES)}"
    )


def _address(args: argparse.Namespace) -> tuple[tuple[str, int], str]:
    config = Config.load()
    gcs = cluster.resolve_address(args.address, config, standing_only=False)
    return gcs, cluster.token_for(gcs, config)


async def _read(
    args: argparse.Namespace, resource: str, filters: list[te.Filter], limit: int, detail: bool
) -> tuple[list[dict[str, Any]], int, int]:
    gcs, token = _address(args)
    async with state.StateReader(gcs, token) as reader:
        return await reader.read(resource, filters, limit, detail)


def _fail(command: str, error: BaseException) -> int:
    print(f"runtime {command}: {error}", file=sys.stderr)
    return 1


ERRORS = (ConnectionError, OSError, TimeoutError, ValueError)


def cmd_list(args: argparse.Namespace) -> int:
    try:
        filters = [te.parse_filter(f) for f in args.filter]
        rows, total, dropped = asyncio.run(
            _read(args, args.resource, filters, args.limit, args.detail)
        )
    except ERRORS as e:
        return _fail("list", e)
    fmt = args.format or ("yaml" if args.detail else "table")
    print(render(rows, fmt, None if args.detail else _TABLE[args.resource]))
    if total > len(rows):
        print(f"({len(rows)} of {total} shown; raise --limit to see more)", file=sys.stderr)
    if dropped:
        print(f"({dropped} task attempt(s) dropped by the cluster: not shown)", file=sys.stderr)
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    column = state.ID_COLUMNS.get(args.resource)
    if column is None:
        hint = f"runtime list {args.resource.replace('_', '-')}"
        return _fail("get", ValueError(f"{args.resource} have no id: use `{hint}`"))
    try:
        rows, _, _ = asyncio.run(_read(args, args.resource, [(column, "=", args.id)], 0, True))
    except ERRORS as e:
        return _fail("get", e)
    if not rows:
        return _fail("get", LookupError(f"no {args.resource[:-1]} with id {args.id}"))
    print(render(rows, args.format or "yaml", None))
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    try:
        if args.resource == "tasks":
            summary = asyncio.run(_task_summary(args))["cluster"]
        else:
            rows, _, _ = asyncio.run(_read(args, args.resource, [], 0, False))
            summary = state.summarize_actors(rows)["cluster"]
    except ERRORS as e:
        return _fail("summary", e)
    if args.resource == "tasks":
        key, header = "func_or_class_name", "FUNC_OR_CLASS_NAME"
        print(
            f"Tasks: {summary['total_tasks']}, actor tasks: {summary['total_actor_tasks']}, "
            f"actors scheduled: {summary['total_actor_scheduled']}"
        )
    else:
        key, header = "class_name", "CLASS_NAME"
        print(f"Actors: {summary['total_actors']}")
    lines = [
        {header: entry[key], "STATE_COUNTS": _counts(entry["state_counts"])}
        for entry in summary["summary"].values()
    ]
    print(render(lines, args.format or "table", None))
    return 0


async def _task_summary(args: argparse.Namespace) -> dict[str, Any]:
    gcs, token = _address(args)
    async with state.StateReader(gcs, token) as reader:
        return await reader.task_summary([])


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name}: {n}" for name, n in sorted(counts.items()))


def cmd_timeline(args: argparse.Namespace) -> int:
    try:
        rows, _, _ = asyncio.run(_read(args, "tasks", [], 0, True))
    except ERRORS as e:
        return _fail("timeline", e)
    events = state.chrome_trace(rows)
    path = args.output or "timeline.json"
    with open(path, "w") as f:
        json.dump(events, f)
    slices = sum(1 for e in events if e["ph"] == "X")
    print(f"Wrote {slices} task slice(s) to {path}: open it in https://ui.perfetto.dev")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_logs(args))
    except KeyboardInterrupt:  # the way out of --follow
        return 0
    except (*ERRORS, rpc.GRPCError) as e:
        message = getattr(e, "message", None) or e
        return _fail("logs", message if isinstance(message, BaseException) else ValueError(message))


async def _logs(args: argparse.Namespace) -> int:
    gcs, token = _address(args)
    async with state.StateReader(gcs, token) as reader:
        if not (args.filename or args.actor_id or args.task_id or args.pid is not None):
            listing = await log_reader.list_logs(reader, args.node_id)
            for node, files in listing.items():
                print(f"node {node}:")
                for f in files:
                    print(f"  {f['name']:40} {f['size']:>10}")
            return 0
        target = await log_reader.resolve(
            reader,
            filename=args.filename,
            node_id=args.node_id,
            actor_id=args.actor_id,
            task_id=args.task_id,
            pid=args.pid,
            err=args.err,
        )
        async for lines in log_reader.read(reader, target, args.tail, args.follow):
            for line in lines:
                print(line, flush=args.follow)
    return 0


def render(rows: list[dict[str, Any]], fmt: str, columns: tuple[str, ...] | None) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2, default=str)
    if fmt == "yaml":
        import yaml  # only here: the CLI's other formats do not need it

        return str(yaml.safe_dump(rows, sort_keys=False, default_flow_style=False)).rstrip()
    if not rows:
        return "(none)"
    cols = list(columns or rows[0].keys())
    cells = [[_cell(row.get(c)) for c in cols] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return ", ".join(
            f"{k}: {v:.12g}" if isinstance(v, float) else f"{k}: {v}" for k, v in value.items()
        )
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def add_commands(sub: Any) -> None:
    """Adds ``list``, ``get``, ``summary`` and ``timeline`` to the command line."""
    formats = ("table", "json", "yaml")
    listing = sub.add_parser("list", help="list tasks, actors, objects, nodes, jobs, workers")
    listing.add_argument("resource", type=_resource, help=", ".join(state.RESOURCES))
    listing.add_argument(
        "--filter",
        action="append",
        default=[],
        help='a predicate such as "state=FAILED" or "name!=f" (repeat for several)',
    )
    listing.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help="rows shown at most")
    listing.add_argument("--detail", action="store_true", help="every column (as YAML)")
    listing.add_argument("--format", choices=formats, default=None, help="table, json or yaml")
    listing.add_argument("--address", default="auto", help=ADDRESS_HELP)
    listing.set_defaults(func=cmd_list)

    get = sub.add_parser("get", help="one task, actor, node, job, worker or group, in detail")
    get.add_argument("resource", type=_resource)
    get.add_argument("id", help="its id (hex)")
    get.add_argument("--format", choices=formats, default=None, help="table, json or yaml")
    get.add_argument("--address", default="auto", help=ADDRESS_HELP)
    get.set_defaults(func=cmd_get)

    summary = sub.add_parser("summary", help="tasks or actors counted by name and state")
    summary.add_argument("resource", type=_resource, choices=("tasks", "actors"))
    summary.add_argument("--format", choices=formats, default=None, help="table, json or yaml")
    summary.add_argument("--address", default="auto", help=ADDRESS_HELP)
    summary.set_defaults(func=cmd_summary)

    logs = sub.add_parser(
        "logs", help="list the log files, or print one (by name, actor, task or pid)"
    )
    logs.add_argument("filename", nargs="?", default=None, help="a file's name (from the list)")
    logs.add_argument("--node-id", default=None, help="the node (an id or its first characters)")
    logs.add_argument("--actor-id", default=None, help="the output of this actor's worker")
    logs.add_argument("--task-id", default=None, help="the lines this task printed")
    logs.add_argument("--pid", type=int, default=None, help="the output of this worker process")
    logs.add_argument("--err", action="store_true", help="stderr instead of stdout")
    logs.add_argument("--tail", type=int, default=1000, help="the last N lines (0: all)")
    logs.add_argument("--follow", "-f", action="store_true", help="then new lines as they come")
    logs.add_argument("--address", default="auto", help=ADDRESS_HELP)
    logs.set_defaults(func=cmd_logs)

    timeline = sub.add_parser("timeline", help="write a Chrome trace of the tasks that ran")
    timeline.add_argument("--output", "-o", default=None, help="file (default timeline.json)")
    timeline.add_argument("--address", default="auto", help=ADDRESS_HELP)
    timeline.set_defaults(func=cmd_timeline)
