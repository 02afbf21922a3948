"""``runtime.dag.output_node``: Ray's module of that name (``MultiOutputNode``)."""

from ..api import MultiOutputNode

__all__ = ["MultiOutputNode"]
