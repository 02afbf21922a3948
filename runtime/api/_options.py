"""Validation of ``@remote(...)`` and ``.options(...)`` arguments.

Every option is checked when it is given, not when the task runs: an unknown
name is a ValueError, a value of the wrong type a TypeError, a value out of
range a ValueError, each naming the option.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

from .._private import labels as node_labels
from .._private import placement, runtime_env, task_wire
from .._private.resources import MAX_AMOUNT, finer_than_unit
from . import _scheduling

_Check = Callable[[str, Any], None]


def _number(minimum: float = 0.0) -> _Check:
    def check(name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"option {name!r} must be a number, got {type(value).__name__}")
        amount = float(value)
        if not math.isfinite(amount) or not minimum <= amount <= MAX_AMOUNT:
            raise ValueError(
                f"option {name!r} must be a finite number from {minimum:g} to {MAX_AMOUNT:g}, "
                f"got {value!r}"
            )
        finer = finer_than_unit(amount)
        if finer:
            raise ValueError(f"option {name!r}: {finer}")

    return check


def _gpus(name: str, value: Any) -> None:
    """As in Ray: a share of one GPU, or whole GPUs (a GPU id is not split
    across more than one)."""
    _number()(name, value)
    if value > 1 and not float(value).is_integer():
        raise ValueError(
            f"option {name!r}: GPU amounts above 1 must be whole numbers, got {value!r}"
        )


def _integer(minimum: int) -> _Check:
    def check(name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"option {name!r} must be an int, got {type(value).__name__}")
        if value < minimum:
            raise ValueError(f"option {name!r} must be >= {minimum}, got {value!r}")

    return check


def _string(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"option {name!r} must be a str, got {type(value).__name__}")


def check_namespace(name: str, value: Any) -> None:
    """None (this job's namespace) or a namespace's name; "" names none (as in Ray)."""
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} must be a str or None, got {type(value).__name__}")
    if value == "":
        raise ValueError(f'{name}: "" is not a valid namespace; pass None for the default one')


def _actor_name(name: str, value: Any) -> None:
    _string(name, value)
    if value == "":
        raise ValueError(f"option {name!r}: an actor's name cannot be empty; pass None for none")


def _resources(name: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise TypeError(
            f"option {name!r} must be a dict of resource amounts, got {type(value).__name__}"
        )
    for key, amount in value.items():
        if not isinstance(key, str):
            raise TypeError(f"option {name!r}: resource names must be str, got {key!r}")
        if key in ("CPU", "GPU"):
            raise ValueError(
                f"option {name!r}: use num_cpus / num_gpus rather than {key!r} in resources"
            )
        if placement.is_group_resource(key):
            raise ValueError(
                f"option {name!r}: {key!r} names a placement group's resource; use a "
                "PlacementGroupSchedulingStrategy to run in a group"
            )
        _number()(f"{name}[{key!r}]", amount)


#: An ``accelerator_type`` option asks for a node that has this resource, as
#: in Ray (a node started with ``resources={"accelerator_type:A100": 1}``).
ACCELERATOR_PREFIX = node_labels.ACCELERATOR_RESOURCE
_ACCELERATOR_SHARE = 0.001


def _accelerator_type(name: str, value: Any) -> None:
    _string(name, value)
    if value is not None and (not value or ":" in value):
        raise ValueError(f"option {name!r} must name an accelerator type, got {value!r}")


def _retry_exceptions(name: str, value: Any) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, list | tuple) and all(
        isinstance(c, type) and issubclass(c, BaseException) for c in value
    ):
        return
    raise TypeError(f"option {name!r} must be a bool or a list of exception classes, got {value!r}")


def retry_policy(value: Any) -> bool | tuple[type[BaseException], ...]:
    """A checked ``retry_exceptions`` as the task spec keeps it."""
    return tuple(value) if isinstance(value, list | tuple) else bool(value)


def _bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"option {name!r} must be a bool, got {type(value).__name__}")


def _scheduling_strategy(name: str, value: Any) -> None:
    _scheduling.check(name, value)


def _label_selector(name: str, value: Any) -> None:
    if value is not None:
        node_labels.check_selector(value, f"option {name!r}")


def _fallback_strategy(name: str, value: Any) -> None:
    if value is not None:
        node_labels.check_fallback(value, f"option {name!r}")


def _num_returns(name: str, value: Any) -> None:
    if value in ("streaming", "dynamic"):
        return
    if isinstance(value, str):
        raise ValueError(
            f"option {name!r} must be an int >= 0, 'streaming' or 'dynamic', got {value!r}"
        )
    _integer(0)(name, value)


def _runtime_env(name: str, value: Any) -> None:
    runtime_env.check(value, f"option {name!r}")


def streaming_returns(options: Mapping[str, Any]) -> int:
    """The wire's num_returns of a streaming call (with its backpressure)."""
    return task_wire.streaming_returns(options.get("_generator_backpressure_num_objects") or 0)


def check_generator_returns(options: Mapping[str, Any], is_generator: bool, what: str) -> None:
    """``num_returns="streaming"`` or ``"dynamic"`` is for a generator: refused
    at the call site for anything else (as in Ray), not when the task runs."""
    value = options.get("num_returns")
    if value in ("streaming", "dynamic") and not is_generator:
        raise ValueError(
            f"num_returns={value!r} is for generator functions (ones that use 'yield'); "
            f"{what} is not one"
        )


#: Ray's older way to name a placement group (a strategy is the current one).
_PLACEMENT_OPTIONS: dict[str, _Check] = {
    "placement_group": _scheduling.check_placement_group,
    "placement_group_bundle_index": _scheduling.check_bundle_index,
    "placement_group_capture_child_tasks": _scheduling.check_capture,
}

TASK_OPTIONS: dict[str, _Check] = {
    "num_cpus": _number(),
    "num_gpus": _gpus,
    "accelerator_type": _accelerator_type,
    "resources": _resources,
    "memory": _number(),
    "num_returns": _num_returns,
    "_generator_backpressure_num_objects": _integer(0),
    "max_retries": _integer(-1),
    "max_calls": _integer(0),
    "retry_exceptions": _retry_exceptions,
    "name": _string,
    "scheduling_strategy": _scheduling_strategy,
    "label_selector": _label_selector,
    "fallback_strategy": _fallback_strategy,
    "runtime_env": _runtime_env,
    "enable_task_events": _bool,
    **_PLACEMENT_OPTIONS,
}


def _lifetime(name: str, value: Any) -> None:
    if value not in (None, "detached", "non_detached"):
        raise ValueError(
            f"option {name!r} must be None, 'detached' or 'non_detached', got {value!r}"
        )


def _concurrency_groups(name: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise TypeError(f"option {name!r} must be a dict of group name -> size")
    for group, size in value.items():
        if not isinstance(group, str) or not group:
            raise TypeError(f"option {name!r}: group names must be non-empty str, got {group!r}")
        _integer(1)(f"{name}[{group!r}]", size)


ACTOR_OPTIONS: dict[str, _Check] = {
    "num_cpus": _number(),
    "num_gpus": _gpus,
    "accelerator_type": _accelerator_type,
    "resources": _resources,
    "memory": _number(),
    "object_store_memory": _number(),  # (actors only, as in Ray)
    "name": _actor_name,
    "namespace": lambda name, value: check_namespace(f"option {name!r}", value),
    "lifetime": _lifetime,
    "get_if_exists": _bool,
    "max_restarts": _integer(-1),
    "max_task_retries": _integer(-1),
    "max_concurrency": _integer(1),
    "allow_out_of_order_execution": _bool,
    "concurrency_groups": _concurrency_groups,
    "max_pending_calls": _integer(-1),
    "scheduling_strategy": _scheduling_strategy,
    "label_selector": _label_selector,
    "fallback_strategy": _fallback_strategy,
    "runtime_env": _runtime_env,
    "enable_task_events": _bool,  # the default of its calls (and its creation's)
    **_PLACEMENT_OPTIONS,
}


def _method_num_returns(name: str, value: Any) -> None:
    if value == "streaming":
        return
    if isinstance(value, str):
        raise ValueError(
            f"option {name!r} must be an int >= 0 or 'streaming' for an actor method "
            f"('dynamic' is for remote functions), got {value!r}"
        )
    _integer(0)(name, value)


def _group_name(name: str, value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise TypeError(f"option {name!r} must name a concurrency group (a str), got {value!r}")


#: ``@runtime.method(...)``'s options; a call's ``.options(...)`` takes these and
#: ``name`` and the generators' backpressure.
METHOD_OPTIONS: dict[str, _Check] = {
    "num_returns": _method_num_returns,
    "concurrency_group": _group_name,
    "max_task_retries": _integer(-1),
    # As in Ray: application errors are retried within max_task_retries only if told.
    "retry_exceptions": _retry_exceptions,
    "enable_task_events": _bool,
}
METHOD_CALL_OPTIONS: dict[str, _Check] = {
    **METHOD_OPTIONS,
    "name": _string,
    "_generator_backpressure_num_objects": _integer(0),
}


def check_actor_options(options: Mapping[str, Any]) -> None:
    """Checks that hold between actor options."""
    if options.get("get_if_exists") and not options.get("name"):
        raise ValueError("option 'get_if_exists' needs a 'name' for the actor")


def validate(options: Mapping[str, Any], known: Mapping[str, _Check], what: str) -> dict[str, Any]:
    for name, value in options.items():
        check = known.get(name)
        if check is None:
            valid = ", ".join(sorted(known))
            raise ValueError(f"invalid option {name!r} for {what}; valid options are: {valid}")
        check(name, value)
    return dict(options)


def task_resources(options: Mapping[str, Any], default_cpus: float) -> dict[str, float]:
    """The resources a task asks for: CPU (1 unless told), GPU, memory, custom,
    and a share of its accelerator type's, if it names one."""
    cpus = options.get("num_cpus")
    resources: dict[str, float] = {"CPU": float(default_cpus if cpus is None else cpus)}
    if options.get("num_gpus"):
        resources["GPU"] = float(options["num_gpus"])
    for name in ("memory", "object_store_memory"):  # (bytes, as the nodes advertise them)
        if options.get(name):
            resources[name] = float(options[name])
    for key, amount in (options.get("resources") or {}).items():
        resources[key] = float(amount)
    if options.get("accelerator_type"):
        resources[ACCELERATOR_PREFIX + options["accelerator_type"]] = _ACCELERATOR_SHARE
    return {k: v for k, v in resources.items() if v}


#: Every option of either kind, for checks made before the kind is known.
ANY_OPTIONS: dict[str, _Check] = {**ACTOR_OPTIONS, **TASK_OPTIONS}
