"""``@runtime.remote`` on a class: actors, their handles and methods."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import pickle
from typing import Any, Generic, TypeVar

from .. import exceptions
from .._private import serialization
from ..core_worker import check_blocking_allowed
from ..protocol.rt import ActorInfo, ActorState, Empty
from . import _context, _dag, _options, _runtime_env, _scheduling, _signature
from ._actor_handle import ActorHandle, MethodMeta, handle_from_record

#: Special methods that are Python's protocol with the handle itself (made,
#: copied, pickled, its attributes): never remote calls. Any other special
#: method the class defines is one, as in Ray (``handle.__call__.remote()``).
_NOT_REMOTE = frozenset(
    {
        "__init__", "__new__", "__del__", "__init_subclass__", "__class_getitem__",
        "__getattr__", "__getattribute__", "__setattr__", "__delattr__", "__dir__",
        "__copy__", "__deepcopy__", "__getstate__", "__setstate__", "__reduce__",
        "__reduce_ex__", "__getnewargs__", "__getnewargs_ex__", "__subclasshook__",
    }
)  # fmt: skip


def method_table(cls: type) -> dict[str, MethodMeta]:
    table = {}
    for name, member in inspect.getmembers(cls, _is_method):
        if name in _NOT_REMOTE:
            continue
        options = getattr(member, "__runtime_method_options__", {})
        raw = inspect.getattr_static(cls, name, None)
        # A static method takes no self; a class method comes bound to the class.
        static = isinstance(raw, staticmethod | classmethod)
        generator = _is_generator(member)
        _options.check_generator_returns(options, generator, f"{cls.__name__}.{name}()")
        table[name] = MethodMeta(
            num_returns=options.get("num_returns", "streaming" if generator else 1),
            is_async=inspect.iscoroutinefunction(member),
            signature=_signature.spec_of(member, drop_first=not static),
            concurrency_group=options.get("concurrency_group"),
            max_task_retries=options.get("max_task_retries"),
            retry_exceptions=_options.retry_policy(options.get("retry_exceptions", False)),
            enable_task_events=options.get("enable_task_events"),
            is_generator=generator,
        )
    return table


def _with_events_off(methods: dict[str, MethodMeta]) -> dict[str, MethodMeta]:
    """An actor made with ``enable_task_events=False``: its methods' calls record
    none, except those whose ``@method`` turns them on."""
    return {
        name: meta
        if meta.enable_task_events is not None
        else dataclasses.replace(meta, enable_task_events=False)
        for name, meta in methods.items()
    }


def _check_groups(class_name: str, methods: dict[str, MethodMeta], groups: tuple[str, ...]) -> None:
    """Every method's concurrency group is one of the class's."""
    for name, meta in methods.items():
        group = meta.concurrency_group
        if group is not None and group not in groups:
            known = ", ".join(repr(g) for g in groups) or "none"
            raise ValueError(
                f"{class_name}.{name}: concurrency group {group!r} is not one of the "
                f"class's concurrency_groups ({known})"
            )


def _is_generator(member: Any) -> bool:
    return inspect.isgeneratorfunction(member) or inspect.isasyncgenfunction(member)


def _is_method(member: Any) -> bool:
    return inspect.isfunction(member) or inspect.ismethod(member)


def _constructor_check(cls: type) -> _signature.CallCheck | None:
    # spec_of(cls): the constructor's parameters, without self.
    return _signature.call_check(_signature.spec_of(cls), f"{cls.__name__}.__init__()")


class _ClassMethodView:
    """``Cls.method`` on an actor class: the plain function (callable as it is),
    whose ``.remote`` says that calls go through an actor's handle."""

    def __init__(self, fn: Any, class_name: str, name: str) -> None:
        self._fn, self._class_name, self._name = fn, class_name, name
        self.__wrapped__ = fn  # (inspect.signature and help() see the function)
        self.__doc__ = getattr(fn, "__doc__", None)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        if attr in ("remote", "options", "bind"):
            raise TypeError(
                f"{self._class_name}.{self._name} is a method of actor class "
                f"{self._class_name}: create an actor first (a = {self._class_name}.remote()), "
                f"then call a.{self._name}.remote()"
            )
        return getattr(self._fn, attr)


C = TypeVar("C")


class ActorClass(Generic[C]):
    """A class whose instances are actors: ``Cls.remote(...)`` creates one.

    Typed as ``ActorClass[C]``; its handles are ``ActorHandle[C]``, whose
    methods type checkers see as ``Any`` (``.remote`` goes through
    ``__getattr__``): annotate the refs they return, ``ref: ObjectRef[int]``.
    """

    def __init__(self, cls: type, options: dict[str, Any]) -> None:
        self._cls = cls
        self._options = _options.validate(options, _options.ACTOR_OPTIONS, "an actor class")
        _options.check_actor_options(self._options)
        self._name = cls.__name__
        self._methods = method_table(cls)
        _check_groups(
            self._name, self._methods, tuple(self._options.get("concurrency_groups") or {})
        )
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

    def __getattr__(self, name: str) -> Any:
        """The plain class's attributes (class attributes, static and class
        methods) through the decorated class, as ``Cls.LIMIT`` reads them."""
        cls = self.__dict__.get("_cls")
        if cls is None or (name.startswith("__") and name.endswith("__")):
            raise AttributeError(name)
        value = getattr(cls, name)
        if name in self.__dict__.get("_methods", {}) and inspect.isfunction(
            inspect.getattr_static(cls, name, None)
        ):
            return _ClassMethodView(value, self._name, name)
        return value

    @property
    def __ray_actor_class__(self) -> type:
        """The plain class (to inherit from, or to run outside the runtime)."""
        return self._cls

    def __mro_entries__(self, bases: tuple[Any, ...]) -> tuple[type, ...]:
        raise TypeError(
            f"cannot inherit from actor class {self._name}: inherit from its plain class "
            f"({self._name}.__ray_actor_class__) and decorate the subclass with @runtime.remote"
        )

    def options(self, **options: Any) -> _ActorClassOptions[C]:
        merged = {**self._options, **options}
        _options.validate(options, _options.ACTOR_OPTIONS, "an actor class")
        _options.check_actor_options(merged)
        return _ActorClassOptions(self, merged)

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle[C]:
        return self._create(self._options, args, kwargs)

    def bind(self, *args: Any, **kwargs: Any) -> _dag.ClassNode:
        """A node of a DAG that creates this actor (Ray's DAG API; see ``runtime.dag``)."""
        return _dag.ClassNode(self, args, kwargs, {})

    def _definition(self) -> tuple[bytes, bytes]:
        pickled = self._pickled
        if pickled is None:
            try:
                data = serialization.dumps(self._cls)
            except Exception as e:
                raise TypeError(
                    f"actor class {self._name} could not be serialized: {e} "
                    f"({serialization.INSPECT_HINT})"
                ) from e
            pickled = self._pickled = (hashlib.sha256(data).digest()[:16], data)
        return pickled

    def _create(
        self, options: dict[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> ActorHandle[C]:
        if self._check is not None:
            self._check(args, kwargs)
        worker = _context.current_or_init()
        if options.get("lifetime") is None and worker.default_actor_lifetime == "detached":
            options = {**options, "lifetime": "detached"}  # the job's JobConfig says so
        class_id, data = self._definition()
        max_task_retries = options.get("max_task_retries", 0)
        max_pending_calls = options.get("max_pending_calls", -1)
        groups = tuple(options.get("concurrency_groups") or {})
        _check_groups(self._name, self._methods, groups)
        methods = self._methods
        if options.get("enable_task_events") is False:
            methods = _with_events_off(methods)
        out_of_order = _out_of_order(self._cls, self._name, options)
        handle_state = (
            self._name,
            methods,
            max_task_retries,
            max_pending_calls,
            groups,
            out_of_order,
        )
        resources, strategy, placement = _scheduling.resolve(
            options,
            _options.task_resources(options, 0.0),
            _context.current_placement(worker),
            f"actor {self._name}",
        )
        key, ref = worker.actor_client.create_actor(
            class_name=self._name,
            class_id=class_id,
            class_data=data,
            args=args,
            kwargs=kwargs,
            options=options,
            resources=resources,
            strategy=strategy,
            handle_state=pickle.dumps(handle_state),
            placement=placement,
            runtime_env=_runtime_env.resolve(options, worker),
        )
        return ActorHandle(key, *handle_state, ref=ref)


def _out_of_order(cls: type, name: str, options: dict[str, Any]) -> bool:
    """Whether calls leave each caller as soon as their arguments are ready
    (Ray's ``allow_out_of_order_execution``): by default, for the actors that
    run calls concurrently anyway (async, or ``max_concurrency > 1``), which
    may not be told otherwise."""
    concurrent = (
        "async"
        if any(
            inspect.iscoroutinefunction(m) or inspect.isasyncgenfunction(m)
            for _, m in inspect.getmembers(cls, inspect.isfunction)
        )
        else "threaded"
        if options.get("max_concurrency", 1) > 1
        else ""
    )
    allowed = options.get("allow_out_of_order_execution")
    if allowed is False and concurrent:
        raise ValueError(
            f"actor {name} is {concurrent}: its calls cannot run in submission order; "
            "leave allow_out_of_order_execution unset (or True)"
        )
    return bool(concurrent) if allowed is None else allowed


class _ActorClassOptions(Generic[C]):
    def __init__(self, actor_class: ActorClass[C], options: dict[str, Any]) -> None:
        self._actor_class = actor_class
        self._options = options

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle[C]:
        return self._actor_class._create(self._options, args, kwargs)

    def bind(self, *args: Any, **kwargs: Any) -> _dag.ClassNode:
        return _dag.ClassNode(self._actor_class, args, kwargs, self._options)

    def get_or_create(self, *args: Any, **kwargs: Any) -> ActorHandle[C]:
        """The named actor if it lives, else a new one made with these arguments
        (Ray's ``options(name=...).get_or_create(...)``: ``get_if_exists=True``)."""
        if not self._options.get("name"):
            raise ValueError("get_or_create() needs a name: Cls.options(name=...).get_or_create()")
        return self._actor_class._create({**self._options, "get_if_exists": True}, args, kwargs)


# -- killing and finding actors ------------------------------------------------------


def kill(actor: Any, *, no_restart: bool = True) -> None:
    """Kills an actor at once: calls in flight and later calls raise ActorDiedError.

    With ``no_restart=False`` the actor is restarted (if ``max_restarts``
    allows), as if its process had died.
    """
    if not isinstance(actor, ActorHandle):
        kind = type(actor).__name__
        raise exceptions.ArgumentTypeError(f"kill() takes an actor handle, got {kind}")
    worker = _context.current()
    if worker.bridge.on_loop_thread():
        # (Not waited for on the runtime's loop: what this process does next,
        # a name's lookup or reuse included, still sees it.)
        worker.post(worker.actor_client.kill_actor, actor._key, no_restart)
        return
    # As in Ray, it returns once the gcs has it: another process no longer
    # finds the actor by its name.
    worker.bridge.run_blocking(worker.actor_client.kill_and_wait(actor._key, no_restart))


def _check_lookup(what: str, name: Any, namespace: Any) -> None:
    if not isinstance(name, str):
        raise TypeError(f"{what}() takes the actor's name, a str, got {type(name).__name__}")
    if not name:
        raise ValueError(f"{what}() takes the actor's name, a non-empty str")
    _options.check_namespace(f"{what}(): namespace", namespace)


def get_actor(name: str, namespace: str | None = None) -> Any:
    """The handle of the named actor; ValueError if there is none."""
    _check_lookup("get_actor", name, namespace)
    check_blocking_allowed(
        "get_actor", "await runtime.get_actor_async(name)", _context.runtime_loop()
    )
    worker = _context.current_or_init()
    info = worker.bridge.run_blocking(worker.actor_client.get_actor(name, namespace))
    return handle_from_record(info)


async def get_actor_async(name: str, namespace: str | None = None) -> Any:
    _check_lookup("get_actor_async", name, namespace)
    worker = _context.current_or_init()
    info = await worker.bridge.on_own_loop(worker.actor_client.get_actor(name, namespace))
    return handle_from_record(info)


def list_named_actors(all_namespaces: bool = False) -> list[str] | list[dict[str, str]]:
    """The names of the live named actors of this job's namespace, or with
    ``all_namespaces`` every namespace's as ``{"name", "namespace"}`` dicts
    (Ray's ``ray.util.list_named_actors``)."""
    _check_all_namespaces(all_namespaces)
    check_blocking_allowed(
        "util.list_named_actors",
        "await runtime.util.list_named_actors_async()",
        _context.runtime_loop(),
    )
    worker = _context.current_or_init()
    reply = worker.bridge.run_blocking(worker.gcs.list_actors(Empty()))
    return _named(reply.actors, worker.namespace, all_namespaces)


async def list_named_actors_async(
    all_namespaces: bool = False,
) -> list[str] | list[dict[str, str]]:
    _check_all_namespaces(all_namespaces)
    worker = _context.current_or_init()
    reply = await worker.bridge.on_own_loop(worker.gcs.list_actors(Empty()))
    return _named(reply.actors, worker.namespace, all_namespaces)


def _check_all_namespaces(all_namespaces: Any) -> None:
    if not isinstance(all_namespaces, bool):
        raise TypeError(f"all_namespaces must be a bool, got {type(all_namespaces).__name__}")


def _named(
    actors: list[ActorInfo], namespace: str, all_namespaces: bool
) -> list[str] | list[dict[str, str]]:
    live = [a for a in actors if a.name and a.state is not ActorState.DEAD]
    if all_namespaces:
        return [{"name": a.name, "namespace": a.namespace} for a in live]
    return [a.name for a in live if a.namespace == namespace]
