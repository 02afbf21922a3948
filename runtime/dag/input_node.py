"""``runtime.dag.input_node``: Ray's module of that name (``InputNode``)."""

from ..api import DAGInputData, InputAttributeNode, InputNode

__all__ = ["DAGInputData", "InputAttributeNode", "InputNode"]
