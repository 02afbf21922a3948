"""``@runtime.remote`` on a function: a :class:`RemoteFunction`."""

from __future__ import annotations

import functools
import hashlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, ParamSpec, TypeVar, cast

from .._private import serialization
from ..core_worker import failure_object
from . import _context, _dag, _options, _runtime_env, _scheduling, _signature
from ._generator import ObjectRefGenerator
from ._object_ref import ObjectRef
from ._objects import put

P = ParamSpec("P")
Out = TypeVar("Out", covariant=True)


class RemoteFunction(Generic[P, Out]):
    """A function that runs as a task: call ``.remote(...)`` to submit it.

    Typed as ``RemoteFunction[P, Out]``: ``.remote`` takes the function's
    arguments (P) and gives ``Out``: ``ObjectRef[R]`` for a function returning
    R (awaited, for an ``async def``), ``ObjectRefGenerator[Y]`` for a
    generator of Y. With ``num_returns=N`` it gives a list of refs, which type
    checkers cannot tell: cast it.
    """

    def __init__(self, function: Callable[..., Any], options: dict[str, Any]) -> None:
        self._function = function
        self._options = _options.validate(options, _options.TASK_OPTIONS, "a remote function")
        self._name = getattr(function, "__qualname__", getattr(function, "__name__", "function"))
        self._pickled: tuple[bytes, bytes] | None = None
        self._pickled_dynamic: tuple[bytes, bytes] | None = None
        # A generator function streams its items unless told otherwise (as in Ray).
        self._generator = inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(
            function
        )
        # (A callable object's generator-ness cannot be told: it is let through.)
        self._yields = self._generator or not inspect.isroutine(function)
        _options.check_generator_returns(self._options, self._yields, f"{self._name}()")
        self._check = _signature.call_check(_signature.spec_of(function), f"{self._name}()")
        functools.update_wrapper(self, function)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"remote function {self._name}() cannot be called directly; "
            f"use {self._name}.remote(...) to run it as a task"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_pickled"] = None  # re-made on first use where it lands
        state["_pickled_dynamic"] = None
        return state

    def options(self, **options: Any) -> _BoundOptions[P, Out]:
        """The same function with some options overridden for one call."""
        _options.validate(options, _options.TASK_OPTIONS, "a remote function")
        _options.check_generator_returns(options, self._yields, f"{self._name}()")
        return _BoundOptions(self, {**self._options, **options})

    def remote(self, *args: P.args, **kwargs: P.kwargs) -> Out:
        return cast(Out, self._submit(self._options, args, kwargs))

    def bind(self, *args: Any, **kwargs: Any) -> _dag.FunctionNode:
        """A node of a DAG that calls this function (Ray's DAG API; see ``runtime.dag``)."""
        return _dag.FunctionNode(self, args, kwargs, {})

    def _definition(self) -> tuple[bytes, bytes]:
        pickled = self._pickled
        if pickled is None:
            pickled = self._pickled = self._pickle(self._function)
        return pickled

    def _dynamic_definition(self) -> tuple[bytes, bytes]:
        """What a ``num_returns="dynamic"`` call runs: the function, each item stored."""
        pickled = self._pickled_dynamic
        if pickled is None:
            pickled = self._pickled_dynamic = self._pickle(DynamicCall(self._function))
        return pickled

    def _pickle(self, function: Any) -> tuple[bytes, bytes]:
        try:
            data = serialization.dumps(function)
        except Exception as e:
            raise TypeError(
                f"remote function {self._name}() could not be serialized: {e} "
                f"({serialization.INSPECT_HINT})"
            ) from e
        return hashlib.sha256(data).digest()[:16], data

    def _submit(
        self, options: dict[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if self._check is not None:
            self._check(args, kwargs)
        worker = _context.current_or_init()
        num_returns = options.get("num_returns", "streaming" if self._generator else 1)
        if num_returns == "dynamic":
            function_id, data = self._dynamic_definition()
            wire_returns = 1
        else:
            function_id, data = self._definition()
            streaming = num_returns == "streaming"
            wire_returns = _options.streaming_returns(options) if streaming else num_returns
        max_retries = options.get("max_retries")
        # As in Ray: unlimited (0), but 1 for GPU tasks unless told (to free
        # what a library holds).
        max_calls = options.get("max_calls")
        if max_calls is None:
            max_calls = 1 if options.get("num_gpus") else 0
        resources, strategy, placement = _scheduling.resolve(
            options,
            _options.task_resources(options, 1.0),
            _context.current_placement(worker),
            f"{self._name}()",
        )
        refs = worker.tasks.submit_task(
            function_id=function_id,
            function_data=data,
            name=options.get("name") or self._name,
            args=args,
            kwargs=kwargs,
            num_returns=wire_returns,
            resources=resources,
            max_retries=worker.config.default_max_retries if max_retries is None else max_retries,
            retry_exceptions=_options.retry_policy(options.get("retry_exceptions", False)),
            strategy=strategy,
            max_calls=max_calls,
            placement=placement,
            runtime_env=_runtime_env.resolve(options, worker),
            events=options.get("enable_task_events", True),
        )
        if num_returns == "streaming":
            return ObjectRefGenerator(cast(ObjectRef, refs[0]), worker)
        return _returns(cast(list[ObjectRef], refs), wire_returns)


class _BoundOptions(Generic[P, Out]):
    def __init__(self, function: RemoteFunction[P, Out], options: dict[str, Any]) -> None:
        self._function = function
        self._options = options

    def remote(self, *args: P.args, **kwargs: P.kwargs) -> Out:
        return cast(Out, self._function._submit(self._options, args, kwargs))

    def bind(self, *args: Any, **kwargs: Any) -> _dag.FunctionNode:
        return _dag.FunctionNode(self._function, args, kwargs, self._options)


def _returns(refs: list[ObjectRef], num_returns: int) -> ObjectRef | list[ObjectRef] | None:
    if num_returns == 1:
        return refs[0]
    if num_returns == 0:
        return None
    return refs


class DynamicObjectRefGenerator:
    """The value of a ``num_returns="dynamic"`` task (Ray's legacy form): the
    refs of the items it yielded, iterated once the task is done."""

    def __init__(self, refs: list[ObjectRef]) -> None:
        self._refs = refs

    def __iter__(self) -> Iterator[ObjectRef]:
        return iter(self._refs)

    def __len__(self) -> int:
        return len(self._refs)


class DynamicCall:
    """Runs a generator function in a task and stores each item as its own
    object: what a ``num_returns="dynamic"`` task runs."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function

    def __call__(self, *args: Any, **kwargs: Any) -> DynamicObjectRefGenerator:
        refs: list[ObjectRef] = []
        try:
            for item in self.function(*args, **kwargs):
                refs.append(put(item))  # noqa: PERF401 (each kept as it comes, error or not)
        except Exception as e:  # as in Ray: its last ref holds the error
            worker = _context.current()
            refs.append(cast(ObjectRef, worker.objects.put_serialized(failure_object(e), "error")))
        return DynamicObjectRefGenerator(refs)
