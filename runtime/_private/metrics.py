"""Prometheus metrics: the families a component exports, and the endpoint that serves them.

A component describes its metrics as plain :class:`Family` values, built on
its own loop from its own state (no lock: the loop owns that state). The
endpoint is prometheus_client's WSGI app on a thread of its own; at each
scrape its collector asks the loop for the families and waits for them, so
a scrape never touches the component's state from another thread.

The endpoint listens on loopback unless told otherwise and, like every port
of the cluster, refuses requests without the cluster's token
(``Authorization: Bearer <token>``); with TLS configured it serves HTTPS.
prometheus_client is imported when the endpoint starts, off the loop.
"""

from __future__ import annotations

import asyncio
import bisect
import contextvars
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import auth, tls

#: What a histogram sample is: (label values, per-bucket counts, sum); the
#: counts are not cumulative, one per bound and a last one for +Inf.
HistogramSample = tuple[tuple[str, ...], list[int], float]

#: How long closing the endpoint may wait for its thread to notice.
SHUTDOWN_POLL_S = 0.1

#: Milliseconds: the buckets of RPC handling times.
RPC_BUCKETS_MS = (0.1, 0.5, 1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0)


@dataclass
class Family:
    name: str
    kind: str  # "counter", "gauge" or "histogram"
    doc: str
    labels: tuple[str, ...]
    samples: list[Any] = field(default_factory=list)  # (label values, value) or HistogramSample
    buckets: tuple[float, ...] = ()  # histograms: the upper bounds

    def add(self, values: tuple[str, ...], value: float) -> None:
        self.samples.append((values, value))


class Histogram:
    """A histogram kept on one loop (no lock): counts per label values."""

    def __init__(self, name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]):
        self.name, self.doc, self.labels, self.buckets = name, doc, labels, buckets
        self._data: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def observe(self, values: tuple[str, ...], value: float) -> None:
        entry = self._data.get(values)
        if entry is None:
            entry = self._data[values] = ([0] * (len(self.buckets) + 1), [0.0])
        entry[0][bisect.bisect_left(self.buckets, value)] += 1
        entry[1][0] += value

    def family(self) -> Family:
        samples = [(values, list(c), total[0]) for values, (c, total) in self._data.items()]
        return Family(self.name, "histogram", self.doc, self.labels, samples, self.buckets)


#: Handling times of this process's RPC servers, by method (``time_rpcs``).
RPC_LATENCY = Histogram(
    "ray_grpc_server_req_process_time_ms",
    "Time to handle an RPC, by method (milliseconds)",
    ("Method",),
    RPC_BUCKETS_MS,
)
_started: contextvars.ContextVar[tuple[str, float] | None] = contextvars.ContextVar(
    "runtime_rpc_started", default=None
)


def time_rpcs(server: Any) -> None:
    """Times every call ``server`` handles into :data:`RPC_LATENCY`."""
    from grpclib.events import RecvRequest, SendTrailingMetadata, listen

    async def started(event: RecvRequest) -> None:
        _started.set((event.method_name, time.perf_counter()))

    async def ended(event: SendTrailingMetadata) -> None:
        began = _started.get()
        if began is not None:
            RPC_LATENCY.observe((began[0],), (time.perf_counter() - began[1]) * 1000.0)

    listen(server, RecvRequest, started)
    listen(server, SendTrailingMetadata, ended)


class MetricsServer:
    """Serves ``collect()``'s families (called on ``loop``) at ``/metrics``."""

    def __init__(
        self,
        collect: Callable[[], list[Family]],
        host: str = "127.0.0.1",
        port: int = 0,
        common: dict[str, str] | None = None,
    ) -> None:
        self._collect = collect
        self._host = host
        self._port = port
        self._common = dict(common or {})
        self._server: Any = None
        self.port = 0

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self.port = await asyncio.to_thread(self._serve, loop)
        return self.port

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await asyncio.to_thread(_shutdown, server)

    def _serve(self, loop: asyncio.AbstractEventLoop) -> int:
        from wsgiref.simple_server import WSGIRequestHandler, make_server

        from prometheus_client import CollectorRegistry, make_wsgi_app
        from prometheus_client.exposition import ThreadingWSGIServer

        class Quiet(WSGIRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes every few seconds would fill the log

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_LoopCollector(self, loop))
        app = _guard(make_wsgi_app(registry))
        server = make_server(self._host, self._port, app, ThreadingWSGIServer, handler_class=Quiet)
        context = tls.server_context()
        if context is not None:
            server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_S},
            name="runtime-metrics",
            daemon=True,
        ).start()
        self._server = server
        return int(server.server_port)

    async def families(self) -> list[Family]:
        families = self._collect()
        families.append(RPC_LATENCY.family())
        return families

    def common(self) -> dict[str, str]:
        return self._common


def _shutdown(server: Any) -> None:
    server.shutdown()
    server.server_close()


class _LoopCollector:
    """prometheus_client's collector: the families, made on the component's loop."""

    def __init__(self, owner: MetricsServer, loop: asyncio.AbstractEventLoop) -> None:
        self._owner = owner
        self._loop = loop

    def collect(self) -> Iterator[Any]:
        future = asyncio.run_coroutine_threadsafe(self._owner.families(), self._loop)
        families = future.result(timeout=10.0)
        yield from to_prometheus(families, self._owner.common())


def to_prometheus(families: list[Family], common: dict[str, str]) -> Iterator[Any]:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    extra_names, extra_values = tuple(common), tuple(common.values())
    for f in families:
        labels = [*f.labels, *extra_names]
        out: Any
        if f.kind == "histogram":
            out = HistogramMetricFamily(f.name, f.doc, labels=labels)
            for values, counts, total in f.samples:
                cumulative, running = [], 0
                for bound, count in zip((*f.buckets, float("inf")), counts, strict=True):
                    running += count
                    cumulative.append((_bound(bound), running))
                out.add_metric([*values, *extra_values], cumulative, total)
        else:
            kind = CounterMetricFamily if f.kind == "counter" else GaugeMetricFamily
            out = kind(f.name, f.doc, labels=labels)
            for values, value in f.samples:
                out.add_metric([*values, *extra_values], value)
        yield out


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def _guard(app: Callable[..., Any]) -> Callable[..., Any]:
    """The app, refusing requests without the cluster's token (when auth is on)."""

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        wanted = auth.token()
        if wanted:
            given = str(environ.get("HTTP_AUTHORIZATION", "")).encode()
            if not auth.token_matches(given, f"Bearer {wanted}"):
                start_response(
                    "401 Unauthorized",
                    [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")],
                )
                return [f"unauthenticated: {auth.HOW_TO}\n".encode()]
        return app(environ, start_response)

    return guarded


# -- service discovery ----------------------------------------------------------------

#: As Ray's: Prometheus's file_sd_configs reads it (``runtime start`` prints its path).
SD_FILE = "prom_metrics_service_discovery.json"


def write_service_discovery(session_dir: str, targets: list[str]) -> None:
    """Every metrics target of the cluster, for one Prometheus scrape config."""
    path = os.path.join(session_dir, SD_FILE)
    tmp = f"{path}.tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        json.dump([{"labels": {"job": "runtime"}, "targets": sorted(targets)}], f)
    os.replace(tmp, path)


# -- user metrics (runtime.util.metrics): a core worker's report to its raylet -------

#: Metric and tag names (Prometheus's rule).
NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
KINDS = ("counter", "gauge", "histogram")
MAX_METRICS = 1000
MAX_SERIES = 10_000  # label value sets per metric
MAX_TEXT = 1024

#: One user metric as reported: (name, kind, description, tag keys, bucket
#: bounds, samples). Samples of counters and gauges: [tag values, value];
#: of histograms: [tag values, per-bucket counts (one more than bounds), sum].
UserMetric = tuple[str, str, str, tuple[str, ...], tuple[float, ...], list[Any]]


def encode_user_metrics(metrics: list[UserMetric]) -> bytes:
    return json.dumps(metrics, separators=(",", ":")).encode()


def decode_user_metrics(data: bytes) -> list[UserMetric]:
    """A worker's report, checked; ValueError names what is wrong."""
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"metrics are not JSON: {e}") from None
    if not isinstance(raw, list) or len(raw) > MAX_METRICS:
        raise ValueError(f"metrics must be a JSON array of at most {MAX_METRICS} metrics")
    return [_check_metric(m) for m in raw]


def _check_metric(m: Any) -> UserMetric:
    if not isinstance(m, list) or len(m) != 6:
        raise ValueError("a metric is [name, kind, description, tag_keys, boundaries, samples]")
    name, kind, doc, keys, bounds, samples = m
    if not isinstance(name, str) or not NAME_RE.match(name) or len(name) > MAX_TEXT:
        raise ValueError(f"bad metric name {name!r}")
    if kind not in KINDS or not isinstance(doc, str) or len(doc) > MAX_TEXT:
        raise ValueError(f"metric {name}: bad kind or description")
    if not isinstance(keys, list) or not all(isinstance(k, str) and NAME_RE.match(k) for k in keys):
        raise ValueError(f"metric {name}: bad tag keys")
    if not isinstance(bounds, list) or not all(_finite(b) for b in bounds):
        raise ValueError(f"metric {name}: bad boundaries")
    if not isinstance(samples, list) or len(samples) > MAX_SERIES:
        raise ValueError(f"metric {name}: too many series")
    width = len(bounds) + 1
    for sample in samples:
        ok = isinstance(sample, list) and len(sample) == (3 if kind == "histogram" else 2)
        ok = ok and isinstance(sample[0], list) and len(sample[0]) == len(keys)
        ok = ok and all(isinstance(v, str) and len(v) <= MAX_TEXT for v in sample[0])
        if ok and kind == "histogram":
            counts = sample[1]
            ok = isinstance(counts, list) and len(counts) == width and _finite(sample[2])
            ok = ok and all(type(c) is int and c >= 0 for c in counts)
        elif ok:
            ok = _finite(sample[1])
        if not ok:
            raise ValueError(f"metric {name}: a bad sample")
    return name, kind, doc, tuple(keys), tuple(float(b) for b in bounds), samples


def _finite(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)
