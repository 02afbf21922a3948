"""Actor handles: calling an actor's methods, passing handles around.

A handle names its actor by a key (the gcs's actor id, or the creator's
own key until the gcs answers). An owned actor's handles also hold a ref to
its *handle object* (see the core worker's actor client): pickling a handle
passes that ref on, so handles anywhere keep the actor alive.
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from .._private import serialization
from ..core_worker import OwnerAddress, Reference
from ..exceptions import ActorDiedError
from ..protocol.rt import ActorInfo
from . import _context, _dag, _options, _signature
from ._generator import ObjectRefGenerator
from ._object_ref import ObjectRef


@dataclass(frozen=True)
class MethodMeta:
    num_returns: int | str = 1  # or "streaming" (a generator method, unless told)
    is_async: bool = False
    # The method's parameters (without ``self``), to check calls against.
    signature: _signature.SignatureSpec | None = None
    concurrency_group: str | None = None
    max_task_retries: int | None = None  # None: the actor's
    # Application errors retried within max_task_retries (a list: these only).
    retry_exceptions: bool | tuple[type[BaseException], ...] = False
    enable_task_events: bool | None = None  # None: the actor's (on unless it says)
    is_generator: bool = False  # (only a generator method may stream)


#: Methods every actor has, as in Ray: ``__ray_ready__`` (True once
#: constructed), ``__ray_terminate__`` (ends it after the calls before it) and
#: ``__ray_call__`` (``fn(instance, *args, **kwargs)`` run in the actor).
_BUILTIN_METHODS = {
    "__ray_ready__": MethodMeta(),
    "__ray_terminate__": MethodMeta(),
    "__ray_call__": MethodMeta(is_generator=True),  # (its function may be one)
}


C = TypeVar("C")


class ActorHandle(Generic[C]):
    """A reference to an actor; call its methods with ``handle.method.remote()``.

    Handles can be passed to tasks and other actors. Each process's calls
    through its handles run in the order that process made them.
    """

    def __new__(
        cls, key: bytes, class_name: str, methods: dict[str, MethodMeta], *_: Any, **__: Any
    ) -> ActorHandle[C]:
        # A handle is made as the class that has its methods' names (see _MethodAccess).
        return super().__new__(_handle_class(frozenset(methods)) if cls is ActorHandle else cls)

    def __init__(
        self,
        key: bytes,
        class_name: str,
        methods: dict[str, MethodMeta],
        max_task_retries: int,
        max_pending_calls: int,
        groups: tuple[str, ...] = (),
        out_of_order: bool = False,
        *,
        ref: Reference | None,
    ) -> None:
        self._key = key
        self._class_name = class_name
        self._methods = methods
        self._max_task_retries = max_task_retries
        self._max_pending_calls = max_pending_calls
        self._groups = groups  # the actor's concurrency groups
        # Calls leave as soon as their arguments are ready, not in submission
        # order (``allow_out_of_order_execution``).
        self._out_of_order = out_of_order
        # A ref to the actor's handle object: while any lives, in any process,
        # the actor does (None: not counted, as a detached actor's).
        self._ref = ref
        # Per method: the check of its calls' arguments, their default name
        # ("Class.method") and options (made on first use).
        self._plans: dict[str, _CallPlan] = {}
        # The cluster it was made in, by its gcs's port (a host may be spelt two
        # ways): a handle kept across shutdown() and init() of another cluster
        # names no actor there (a local cluster's gcs takes a free port each time).
        worker = _context.current_or_none()
        self._cluster = None if worker is None else worker.gcs_address

    @property
    def _actor_id(self) -> bytes:
        return _context.current().actor_client.actor_id_of(self._key)

    def __getattr__(self, name: str) -> ActorMethod:
        meta = self.__dict__.get("_methods", {}).get(name)
        if name.startswith("__") and name.endswith("__"):
            # (Python's own lookups of special names land here too: no message.)
            meta = meta or _BUILTIN_METHODS.get(name)
            if meta is None:
                raise AttributeError(name)
            return ActorMethod(self, name, meta)
        if meta is None:
            raise AttributeError(f"actor {self.__dict__.get('_class_name')} has no method {name!r}")
        return ActorMethod(self, name, meta)

    def __dir__(self) -> list[str]:
        """The actor's methods (what IPython completes) and the handle's own."""
        return [*self._methods, *super().__dir__()]

    def __repr__(self) -> str:
        return f"Actor({self._class_name}, {self._key.hex()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorHandle) and other._key == self._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __reduce__(self) -> tuple[Any, ...]:
        worker = _context.current()
        ref = self._ref
        counted = None
        if ref is not None:
            if not serialization.note_ref(ref):  # passed on: borrowed where it lands
                worker.objects.pin_out_of_band(ref)  # (or pickled by user code)
            counted = (ref.binary(), ref.owner_address)
        state = (
            worker.actor_client.actor_id_of(self._key),
            self._class_name,
            self._methods,
            self._max_task_retries,
            self._max_pending_calls,
            self._groups,
            self._out_of_order,
            counted,
        )
        return (_rebuild_handle, state)

    def _call(
        self, method: str, meta: MethodMeta, options: dict[str, Any], args: Any, kwargs: Any
    ) -> Any:
        plan = self._plans.get(method)
        if plan is None:
            plan = self._plans[method] = self._plan(method, meta)
        if plan.check is not None:
            plan.check(args, kwargs)
        worker = _context.current()
        if self._cluster is not None and worker.gcs_address[1] != self._cluster[1]:
            host, port = self._cluster
            raise ActorDiedError(
                f"actor {self._class_name}'s handle comes from the cluster at {host}:{port} "
                "(before runtime.shutdown()); its actor is not in this one"
            )
        num_returns, name, retries = plan.num_returns, plan.name, plan.max_task_retries
        retry_exceptions, events, group = plan.retry_exceptions, plan.events, None
        if options:  # (a call's own options, over the method's and the actor's)
            num_returns = options.get("num_returns", num_returns)
            name = options.get("name") or name
            retries = _first_set(options.get("max_task_retries"), retries)
            group = options.get("concurrency_group")
            if "retry_exceptions" in options:
                retry_exceptions = _options.retry_policy(options["retry_exceptions"])
            events = options.get("enable_task_events", events) is not False
        streaming = num_returns == "streaming"
        count = _options.streaming_returns(options) if streaming else cast(int, num_returns)
        refs = worker.actor_client.submit_actor_call(
            self._key,
            self._class_name,
            method,
            args,
            kwargs,
            num_returns=count,
            name=name,
            max_task_retries=retries,
            max_pending_calls=self._max_pending_calls,
            handle_ref=self._ref,
            concurrency_group=group,
            retry_exceptions=retry_exceptions,
            events=events,
            out_of_order=self._out_of_order,
        )
        if streaming:
            return ObjectRefGenerator(cast(ObjectRef, refs[0]), worker)
        if num_returns == 1:
            return refs[0]
        if num_returns == 0:
            return None
        return refs

    def _plan(self, method: str, meta: MethodMeta) -> _CallPlan:
        name = f"{self._class_name}.{method}"
        return _CallPlan(
            check=(
                _check_ray_call
                if method == "__ray_call__"
                else _signature.call_check(meta.signature, f"{name}()")
            ),
            name=name,
            num_returns=meta.num_returns,
            max_task_retries=_first_set(meta.max_task_retries, self._max_task_retries),
            retry_exceptions=meta.retry_exceptions,
            events=meta.enable_task_events is not False,
        )


class _MethodAccess:
    """``handle.method``, as an attribute of the handle's class: Python finds
    it at once, where a name left to ``__getattr__`` first fails the usual
    lookup (an AttributeError made and dropped: most of a call's cost to
    reach its method). Not a data descriptor: the handle's own attributes
    still come first."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __get__(self, handle: ActorHandle[Any] | None, owner: type | None = None) -> Any:
        if handle is None:
            return self
        return ActorMethod(handle, self._name, handle._methods[self._name])


@functools.lru_cache(maxsize=1024)
def _handle_class(names: frozenset[str]) -> type[ActorHandle[Any]]:
    """The handle class for actors with these methods: ``ActorHandle`` with
    a :class:`_MethodAccess` per name it does not define itself (those, and
    special names, stay with ``__getattr__``, as before: the handle's own
    come first)."""
    access = {
        name: _MethodAccess(name)
        for name in names
        if not (name.startswith("__") and name.endswith("__")) and not hasattr(ActorHandle, name)
    }
    return type("ActorHandle", (ActorHandle,), {"__slots__": (), **access})


def _check_ray_call(args: Any, kwargs: Any) -> None:
    if not args or not callable(args[0]):
        given = type(args[0]).__name__ if args else "nothing"
        raise TypeError(
            f"__ray_call__.remote(fn, *args, **kwargs) takes a callable first (it runs "
            f"fn(actor, *args, **kwargs) in the actor), got {given}"
        )


@dataclass(frozen=True, slots=True)
class _CallPlan:
    """What a method's calls through one handle share when they give no options
    of their own (made at the first call: the per-call path reads it)."""

    check: Callable[[Any, Any], None] | None
    name: str
    num_returns: int | str
    max_task_retries: int
    retry_exceptions: bool | tuple[type[BaseException], ...]
    events: bool


def _rebuild_handle(
    actor_id: bytes,
    class_name: str,
    methods: dict[str, MethodMeta],
    max_task_retries: int,
    max_pending_calls: int,
    groups: tuple[str, ...] = (),
    out_of_order: bool = False,
    counted: tuple[bytes, OwnerAddress] | None = None,
) -> ActorHandle:
    ref = None
    if counted is not None:
        ref = Reference(counted[0], counted[1], _context.current())
    return ActorHandle(
        actor_id,
        class_name,
        methods,
        max_task_retries,
        max_pending_calls,
        groups,
        out_of_order,
        ref=ref,
    )


class ActorMethod:
    # One is made per ``handle.method`` access, so per call: no __dict__.
    __slots__ = ("_handle", "_meta", "_name", "_options")

    def __init__(
        self,
        handle: ActorHandle,
        name: str,
        meta: MethodMeta,
        options: dict[str, Any] | None = None,
    ):
        self._handle = handle
        self._name = name
        self._meta = meta
        self._options = options if options is not None else _NO_OPTIONS

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"actor method {self._name}() cannot be called directly; use .{self._name}.remote(...)"
        )

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """An ``ObjectRef`` (a list for ``num_returns=N``, an ``ObjectRefGenerator``
        for a generator method); typed ``Any``: annotate what you keep."""
        return self._handle._call(self._name, self._meta, self._options, args, kwargs)

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        """A node of a DAG that calls this method (Ray's DAG API; see ``runtime.dag``)."""
        return _dag.ClassMethodNode(self._handle, self._name, args, kwargs, dict(self._options))

    def options(self, **options: Any) -> ActorMethod:
        _options.validate(options, _options.METHOD_CALL_OPTIONS, "an actor method's call")
        _options.check_generator_returns(
            options, self._meta.is_generator, f"{self._handle._class_name}.{self._name}()"
        )
        group = options.get("concurrency_group")
        if group is not None and group not in self._handle._groups:
            known = ", ".join(repr(g) for g in self._handle._groups) or "none"
            raise ValueError(
                f"actor {self._handle._class_name} has no concurrency group {group!r} "
                f"(its groups: {known})"
            )
        return ActorMethod(self._handle, self._name, self._meta, {**self._options, **options})


def _first_set(*values: int | None) -> int:
    return next(v for v in values if v is not None)


#: A method's options when none were given (read only: ``options()`` makes a new dict).
_NO_OPTIONS: dict[str, Any] = {}


def handle_from_record(info: ActorInfo) -> ActorHandle:
    """A handle (not owning) to the actor a gcs record describes (``get_actor``)."""
    return handle_from_state(info.actor_id, info.handle_state)


def handle_from_state(actor_id: bytes, handle_state: bytes) -> ActorHandle:
    """A handle (not owning) from an actor's id and its creator's ``handle_state``."""
    return _rebuild_handle(actor_id, *pickle.loads(handle_state))
