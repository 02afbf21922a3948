"""Ray's ``ray.util.metrics``: user-defined Counter, Gauge and Histogram,
exported on the node's Prometheus endpoint (see the README's metrics setup)."""

from ..api import metrics_api as _api

Metric = _api.Metric
Counter = _api.Counter
Gauge = _api.Gauge
Histogram = _api.Histogram

__all__ = ["Counter", "Gauge", "Histogram", "Metric"]
