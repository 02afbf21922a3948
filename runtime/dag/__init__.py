"""``runtime.dag``: Ray's DAG API (``ray.dag``): graphs of calls built with ``.bind()``.

    from runtime.dag import InputNode, MultiOutputNode

    with InputNode() as inp:
        dag = combine.bind(double.bind(inp), double.bind(inp))
    runtime.get(dag.execute(3))

Built on the public API: ``execute()`` makes the same ``.remote()`` calls a
program would (see ``api/_dag.py``).
"""

from ..api import (
    ClassMethodNode,
    ClassNode,
    DAGInputData,
    DAGNode,
    FunctionNode,
    InputAttributeNode,
    InputNode,
    MultiOutputNode,
)

__all__ = [
    "ClassMethodNode",
    "ClassNode",
    "DAGInputData",
    "DAGNode",
    "FunctionNode",
    "InputAttributeNode",
    "InputNode",
    "MultiOutputNode",
]
