"""Ray's DAG API: ``.bind(...)`` records a call, ``execute(...)`` submits the graph.

``f.bind(x)``, ``Cls.bind(...)``, ``node.method.bind(...)`` and
``handle.method.bind(...)`` each make a node: one call, with arguments that may
be other nodes or the graph's input (``InputNode`` and what is read from it:
``inp[0]``, ``inp["k"]``, ``inp.k``). ``root.execute(*args, **kwargs)`` submits
every node the root reaches, dependencies first, each once per execution (a
node used twice runs once), and gives the root's result: a ref, an actor
handle for a class node, a list for a ``MultiOutputNode``. A node's result
goes to the calls that use it as its ref, so each runs as soon as its inputs
are ready, as a chain of ``.remote()`` calls does; a node nested in a list,
tuple or dict argument passes as its ref inside it, which the call reads with
``get`` (as any nested ref, in Ray too). A class node makes a new actor at each
execution, as in Ray. Method calls bound on one class node are chained in
the order they were bound, as in Ray: running one runs those bound before it
first (so ``a.inc.bind(2); a.get.bind()`` counts the increment).

Invariants: a node's call and arguments never change once made
(``options()`` makes a new node), so the graph has no cycles; a graph has at
most one ``InputNode``.
"""

from __future__ import annotations

from typing import Any

#: The containers searched for nodes in a call's arguments (as deep as they nest).
_CONTAINERS = (list, tuple, dict)


class DAGNode:
    """One call of a graph, with its arguments (nodes among them)."""

    def __init__(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> None:
        self._bound_args = args
        self._bound_kwargs = kwargs
        self._bound_options = options

    def get_args(self) -> tuple[Any, ...]:
        return self._bound_args

    def get_kwargs(self) -> dict[str, Any]:
        return dict(self._bound_kwargs)

    def get_options(self) -> dict[str, Any]:
        return dict(self._bound_options)

    def options(self, **options: Any) -> DAGNode:
        """The same call with these options too (checked now, as ``.options()`` is)."""
        raise TypeError(f"{type(self).__name__} takes no options")

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        """Submits the graph this node ends, given the input ``InputNode`` stands for."""
        order = _topological(self)
        inputs = [node for node in order if isinstance(node, InputNode)]
        if len(inputs) > 1:
            raise ValueError("a DAG takes one InputNode; read several values from it instead")
        if inputs and not args and not kwargs:
            raise TypeError("this DAG reads an InputNode: pass its input to execute(...)")
        given = args[0] if len(args) == 1 and not kwargs else DAGInputData(*args, **kwargs)
        results: dict[int, Any] = {}
        for node in order:
            if isinstance(node, InputNode):
                results[id(node)] = given
                continue
            call_args = _substitute(node._bound_args, results)
            call_kwargs = _substitute(node._bound_kwargs, results)
            results[id(node)] = node._run(call_args, call_kwargs, results)
        return results[id(self)]

    # -- for subclasses -----------------------------------------------------------
    def _children(self) -> list[DAGNode]:
        found: list[DAGNode] = []
        _collect((self._bound_args, self._bound_kwargs), found)
        return found

    def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any], results: dict[int, Any]) -> Any:
        raise NotImplementedError

    def __reduce__(self) -> Any:
        raise TypeError(
            f"a {type(self).__name__} cannot be sent to a task or put; "
            "call execute() and pass what it returns"
        )


class FunctionNode(DAGNode):
    """A task: ``f.bind(...)``."""

    def __init__(
        self, function: Any, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> None:
        super().__init__(args, kwargs, options)
        self._function = function
        if function._check is not None:
            function._check(args, kwargs)  # a missing argument fails here, not at execute
        self._target = function.options(**options) if options else function

    def options(self, **options: Any) -> FunctionNode:
        merged = {**self._bound_options, **options}
        return FunctionNode(self._function, self._bound_args, self._bound_kwargs, merged)

    def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any], results: dict[int, Any]) -> Any:
        return self._target.remote(*args, **kwargs)

    def __repr__(self) -> str:
        return f"FunctionNode({self._function._name})"


class ClassNode(DAGNode):
    """An actor's creation: ``Cls.bind(...)``; ``node.method.bind(...)`` calls it."""

    def __init__(
        self,
        actor_class: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: dict[str, Any],
    ) -> None:
        super().__init__(args, kwargs, options)
        self._actor_class = actor_class
        if actor_class._check is not None:
            actor_class._check(args, kwargs)
        self._target = actor_class.options(**options) if options else actor_class
        # The method call bound on it last: the next one bound runs after it.
        self._last_call: ClassMethodNode | None = None

    def options(self, **options: Any) -> ClassNode:
        merged = {**self._bound_options, **options}
        return ClassNode(self._actor_class, self._bound_args, self._bound_kwargs, merged)

    def __getattr__(self, name: str) -> _UnboundMethod:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        actor_class = self.__dict__.get("_actor_class")
        if actor_class is None or name not in actor_class._methods:
            owner = getattr(actor_class, "_name", "?")
            raise AttributeError(f"actor class {owner} has no method {name!r}")
        return _UnboundMethod(self, name, {})

    def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any], results: dict[int, Any]) -> Any:
        return self._target.remote(*args, **kwargs)

    def __repr__(self) -> str:
        return f"ClassNode({self._actor_class._name})"


class _UnboundMethod:
    """``class_node.method``: ``.bind(...)`` it (``.options(...)`` first, if need be)."""

    def __init__(self, parent: ClassNode, name: str, options: dict[str, Any]) -> None:
        self._parent = parent
        self._name = name
        self._options = options

    def options(self, **options: Any) -> _UnboundMethod:
        return _UnboundMethod(self._parent, self._name, {**self._options, **options})

    def bind(self, *args: Any, **kwargs: Any) -> ClassMethodNode:
        parent = self._parent
        node = ClassMethodNode(
            parent, self._name, args, kwargs, self._options, after=parent._last_call
        )
        parent._last_call = node
        return node


class ClassMethodNode(DAGNode):
    """A call of an actor's method: of a class node's actor, or of a live actor's
    (``handle.method.bind(...)``)."""

    def __init__(
        self,
        parent: Any,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: dict[str, Any],
        after: ClassMethodNode | None = None,
    ) -> None:
        super().__init__(args, kwargs, options)
        self._parent = parent  # a ClassNode, or an ActorHandle
        self._method = method
        self._after = after  # the call bound on the same class node before this one

    def options(self, **options: Any) -> ClassMethodNode:
        merged = {**self._bound_options, **options}
        return ClassMethodNode(
            self._parent, self._method, self._bound_args, self._bound_kwargs, merged, self._after
        )

    def get_method_name(self) -> str:
        return self._method

    def _children(self) -> list[DAGNode]:
        found = super()._children()
        if isinstance(self._parent, ClassNode):
            found.append(self._parent)
        if self._after is not None:
            found.append(self._after)
        return found

    def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any], results: dict[int, Any]) -> Any:
        parent = self._parent
        handle = results[id(parent)] if isinstance(parent, ClassNode) else parent
        method = getattr(handle, self._method)
        if self._bound_options:
            method = method.options(**self._bound_options)
        return method.remote(*args, **kwargs)

    def __repr__(self) -> str:
        return f"ClassMethodNode({self._method})"


class InputNode(DAGNode):
    """What ``execute(...)`` was given: its one argument, or (several) a
    ``DAGInputData`` that ``inp[i]`` and ``inp["k"]`` / ``inp.k`` read."""

    def __init__(self) -> None:
        super().__init__((), {}, {})

    def __enter__(self) -> InputNode:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __getitem__(self, key: int | str) -> InputAttributeNode:
        return InputAttributeNode(self, key, "__getitem__")

    def __getattr__(self, key: str) -> InputAttributeNode:
        if key.startswith("_"):
            raise AttributeError(key)
        return InputAttributeNode(self, key, "__getattr__")

    def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any], results: dict[int, Any]) -> Any:
        raise AssertionError("the input is given, not run")

    def __repr__(self) -> str:
        return "InputNode()"


class InputAttributeNode(DAGNode):
    """One value read from the input: ``inp[0]``, ``inp["k"]``, ``inp.k``."""

    def __init__(self, source: InputNode, key: int | str, accessor: str) -> None:
        if not isinstance(key, int | str):
            raise TypeError(f"an input is read with an int or a str key, got {key!r:.80}")
        super().__init__((), {}, {})
        self._source = source
        self._key = key
        self._accessor = accessor

    def _children(self) -> list[DAGNode]:
        return [self._source]

    def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any], results: dict[int, Any]) -> Any:
        given = results[id(self._source)]
        if isinstance(given, DAGInputData):
            return given[self._key]
        if self._accessor == "__getattr__":
            return getattr(given, str(self._key))
        return given[self._key]

    def __repr__(self) -> str:
        return f"InputAttributeNode({self._key!r})"


class MultiOutputNode(DAGNode):
    """Several results at once: ``execute()`` gives the list of them."""

    def __init__(self, outputs: list[DAGNode] | tuple[DAGNode, ...]) -> None:
        if not isinstance(outputs, list | tuple) or not all(
            isinstance(node, DAGNode) for node in outputs
        ):
            raise TypeError("MultiOutputNode takes a list of DAG nodes")
        super().__init__((list(outputs),), {}, {})

    def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any], results: dict[int, Any]) -> Any:
        return list(args[0])

    def __repr__(self) -> str:
        return f"MultiOutputNode({len(self._bound_args[0])})"


class DAGInputData:
    """Several inputs to ``execute``: ``[i]`` reads a positional one, ``["k"]`` a keyword one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._args = list(args)
        self._kwargs = kwargs

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, int):
            return self._args[key]
        return self._kwargs[key]

    def __repr__(self) -> str:
        return f"DAGInputData(args={self._args!r:.80}, kwargs={self._kwargs!r:.80})"


# -- the graph ---------------------------------------------------------------------


def _collect(value: Any, found: list[DAGNode]) -> None:
    if isinstance(value, DAGNode):
        found.append(value)
    elif type(value) in _CONTAINERS:
        for item in value.values() if type(value) is dict else value:
            _collect(item, found)


def _substitute(value: Any, results: dict[int, Any]) -> Any:
    """``value`` with each node in it replaced by its result (containers rebuilt)."""
    if isinstance(value, DAGNode):
        return results[id(value)]
    kind = type(value)
    if kind is dict:
        return {k: _substitute(v, results) for k, v in value.items()}
    if kind is list:
        return [_substitute(v, results) for v in value]
    if kind is tuple:
        return tuple(_substitute(v, results) for v in value)
    return value


def _topological(root: DAGNode) -> list[DAGNode]:
    """The nodes ``root`` reaches, each after those it uses (iterative: a long
    chain needs no deep recursion)."""
    order: list[DAGNode] = []
    seen: set[int] = set()
    stack: list[tuple[DAGNode, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        stack.extend(
            (child, False) for child in reversed(node._children()) if id(child) not in seen
        )
    return order
