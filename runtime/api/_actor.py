"""``@runtime.remote`` on a class: actors, their handles and methods."""

from __future__ import annotations

import hashlib
import inspect
import pickle
from dataclasses import dataclass
from typing import Any

import cloudpickle

from .._private import serialization
from ..core_worker import OwnerAddress, Reference, check_blocking_allowed
from ..protocol.rt import ActorInfo
from . import _context, _options, _scheduling, _signature
from ._object_ref import ObjectRef


@dataclass(frozen=True)
class MethodMeta:
    num_returns: int = 1
    is_async: bool = False
    # The method's parameters (without ``self``), to check calls against.
    signature: _signature.SignatureSpec | None = None


def method_table(cls: type) -> dict[str, MethodMeta]:
    table = {}
    for name, member in inspect.getmembers(cls, inspect.isfunction):
        if name.startswith("__") and name.endswith("__"):
            continue
        options = getattr(member, "__runtime_method_options__", {})
        static = isinstance(inspect.getattr_static(cls, name, None), staticmethod)
        table[name] = MethodMeta(
            num_returns=options.get("num_returns", 1),
            is_async=inspect.iscoroutinefunction(member),
            signature=_signature.spec_of(member, drop_first=not static),
        )
    return table


def _constructor_check(cls: type) -> _signature.CallCheck | None:
    # spec_of(cls): the constructor's parameters, without self.
    return _signature.call_check(_signature.spec_of(cls), f"{cls.__name__}.__init__()")


class ActorClass:
    """A class whose instances are actors: ``Cls.remote(...)`` creates one."""

    def __init__(self, cls: type, options: dict[str, Any]) -> None:
        self._cls = cls
        self._options = _options.validate(options, _options.ACTOR_OPTIONS, "an actor class")
        _options.check_actor_options(self._options)
        self._name = cls.__name__
        self._methods = method_table(cls)
        self._check = _constructor_check(cls)
        self._pickled: tuple[bytes, bytes] | None = None
        self.__doc__ = cls.__doc__
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__module__ = cls.__module__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"actor class {self._name} cannot be instantiated directly; "
            f"use {self._name}.remote(...) to create an actor"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_pickled"] = None
        return state

    def options(self, **options: Any) -> _ActorClassOptions:
        merged = {**self._options, **options}
        _options.validate(options, _options.ACTOR_OPTIONS, "an actor class")
        _options.check_actor_options(merged)
        return _ActorClassOptions(self, merged)

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle:
        return self._create(self._options, args, kwargs)

    def _definition(self) -> tuple[bytes, bytes]:
        pickled = self._pickled
        if pickled is None:
            try:
                data = cloudpickle.dumps(self._cls, protocol=5)
            except Exception as e:
                raise TypeError(f"actor class {self._name} could not be serialized: {e}") from e
            pickled = self._pickled = (hashlib.sha256(data).digest()[:16], data)
        return pickled

    def _create(
        self, options: dict[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> ActorHandle:
        if self._check is not None:
            self._check(args, kwargs)
        worker = _context.current_or_init()
        class_id, data = self._definition()
        max_task_retries = options.get("max_task_retries", 0)
        max_pending_calls = options.get("max_pending_calls", -1)
        handle_state = (self._name, self._methods, max_task_retries, max_pending_calls)
        key, ref = worker.actor_client.create_actor(
            class_name=self._name,
            class_id=class_id,
            class_data=data,
            args=args,
            kwargs=kwargs,
            options=options,
            resources=_options.task_resources(options, 0.0),
            strategy=_scheduling.to_message(options.get("scheduling_strategy")),
            handle_state=pickle.dumps(handle_state),
        )
        return ActorHandle(key, *handle_state, ref=ref)


class _ActorClassOptions:
    def __init__(self, actor_class: ActorClass, options: dict[str, Any]) -> None:
        self._actor_class = actor_class
        self._options = options

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle:
        return self._actor_class._create(self._options, args, kwargs)


class ActorHandle:
    """A reference to an actor; call its methods with ``handle.method.remote()``.

    Handles can be passed to tasks and other actors. Each process's calls
    through its handles run in the order that process made them.
    """

    def __init__(
        self,
        key: bytes,
        class_name: str,
        methods: dict[str, MethodMeta],
        max_task_retries: int,
        max_pending_calls: int,
        *,
        ref: Reference | None,
    ) -> None:
        self._key = key
        self._class_name = class_name
        self._methods = methods
        self._max_task_retries = max_task_retries
        self._max_pending_calls = max_pending_calls
        # A ref to the actor's handle object: while any lives, in any process,
        # the actor does (None: not counted, as a detached actor's).
        self._ref = ref
        # Per method: the check of its calls' arguments (made on first use).
        self._checks: dict[str, _signature.CallCheck | None] = {}

    @property
    def _actor_id(self) -> bytes:
        return _context.current().actor_client.actor_id_of(self._key)

    def __getattr__(self, name: str) -> ActorMethod:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        meta = self.__dict__.get("_methods", {}).get(name)
        if meta is None:
            raise AttributeError(f"actor {self.__dict__.get('_class_name')} has no method {name!r}")
        return ActorMethod(self, name, meta)

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
            serialization.note_ref(ref)  # passed on: borrowed where it lands
            counted = (ref.binary(), ref.owner_address)
        state = (
            worker.actor_client.actor_id_of(self._key),
            self._class_name,
            self._methods,
            self._max_task_retries,
            self._max_pending_calls,
            counted,
        )
        return (_rebuild_handle, state)

    def _call(
        self, method: str, meta: MethodMeta, options: dict[str, Any], args: Any, kwargs: Any
    ) -> Any:
        try:
            check = self._checks[method]
        except KeyError:
            what = f"{self._class_name}.{method}()"
            check = self._checks[method] = _signature.call_check(meta.signature, what)
        if check is not None:
            check(args, kwargs)
        worker = _context.current()
        num_returns = options.get("num_returns", meta.num_returns)
        refs = worker.actor_client.submit_actor_call(
            self._key,
            self._class_name,
            method,
            args,
            kwargs,
            num_returns=num_returns,
            name=options.get("name") or f"{self._class_name}.{method}",
            max_task_retries=self._max_task_retries,
            max_pending_calls=self._max_pending_calls,
            handle_ref=self._ref,
        )
        if num_returns == 1:
            return refs[0]
        if num_returns == 0:
            return None
        return refs


def _rebuild_handle(
    actor_id: bytes,
    class_name: str,
    methods: dict[str, MethodMeta],
    max_task_retries: int,
    max_pending_calls: int,
    counted: tuple[bytes, OwnerAddress] | None = None,
) -> ActorHandle:
    ref = None
    if counted is not None:
        ref = Reference(counted[0], counted[1], _context.current())
    return ActorHandle(actor_id, class_name, methods, max_task_retries, max_pending_calls, ref=ref)


class ActorMethod:
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
        self._options = options or {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"actor method {self._name}() cannot be called directly; use .{self._name}.remote(...)"
        )

    def remote(self, *args: Any, **kwargs: Any) -> ObjectRef | list[ObjectRef] | None:
        result: ObjectRef | list[ObjectRef] | None = self._handle._call(
            self._name, self._meta, self._options, args, kwargs
        )
        return result

    def options(self, **options: Any) -> ActorMethod:
        unknown = set(options) - {"num_returns", "name"}
        if unknown:
            raise ValueError(f"invalid option(s) for an actor method: {', '.join(sorted(unknown))}")
        if "num_returns" in options:
            _options.TASK_OPTIONS["num_returns"]("num_returns", options["num_returns"])
        return ActorMethod(self._handle, self._name, self._meta, {**self._options, **options})


def handle_from_record(info: ActorInfo) -> ActorHandle:
    """A handle (not owning) to the actor a gcs record describes (``get_actor``)."""
    return _rebuild_handle(info.actor_id, *pickle.loads(info.handle_state))


# -- killing and finding actors ------------------------------------------------------


def kill(actor: Any, *, no_restart: bool = True) -> None:
    """Kills an actor at once: calls in flight and later calls raise ActorDiedError.

    With ``no_restart=False`` the actor is restarted (if ``max_restarts``
    allows), as if its process had died.
    """
    if not isinstance(actor, ActorHandle):
        raise TypeError(f"kill() takes an actor handle, got {type(actor).__name__}")
    worker = _context.current()
    worker.post(worker.actor_client.kill_actor, actor._key, no_restart)


def get_actor(name: str, namespace: str | None = None) -> Any:
    """The handle of the named actor; ValueError if there is none."""
    if not isinstance(name, str) or not name:
        raise TypeError("get_actor() takes the actor's name, a non-empty str")
    check_blocking_allowed("get_actor", "await runtime.get_actor_async(name)")
    worker = _context.current_or_init()
    info = worker.bridge.run_blocking(worker.actor_client.get_actor(name, namespace))
    return handle_from_record(info)


async def get_actor_async(name: str, namespace: str | None = None) -> Any:
    if not isinstance(name, str) or not name:
        raise TypeError("get_actor_async() takes the actor's name, a non-empty str")
    worker = _context.current_or_init()
    info = await worker.bridge.on_own_loop(worker.actor_client.get_actor(name, namespace))
    return handle_from_record(info)
