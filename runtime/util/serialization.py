"""Ray's custom serializers: ``register_serializer`` and ``deregister_serializer``.

A registration is this process's own (as in Ray): it changes how this process
pickles instances of the class; the deserializer travels with each pickled
instance (by value when it is defined in a script), so a reader needs no
registration of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._private import serialization

__all__ = ["deregister_serializer", "register_serializer"]


def register_serializer(
    cls: type, *, serializer: Callable[[Any], Any], deserializer: Callable[[Any], Any]
) -> None:
    """Pickles instances of ``cls`` as ``deserializer(serializer(instance))``
    is rebuilt: ``serializer`` turns one into something that pickles (a dict
    of plain values, say); ``deserializer``, itself picklable, makes it back."""
    if not isinstance(cls, type):
        raise TypeError(f"register_serializer() takes a class, got {type(cls).__name__}")
    for what, fn in (("serializer", serializer), ("deserializer", deserializer)):
        if not callable(fn):
            raise TypeError(f"register_serializer(): {what} must be callable, got {fn!r}")

    def reduce(instance: Any) -> tuple[Any, ...]:
        return _rebuild, (deserializer, serializer(instance))

    serialization.register_reducer(cls, reduce)


def deregister_serializer(cls: type) -> None:
    """Drops the serializer registered for ``cls`` (nothing if there is none)."""
    serialization.unregister_reducer(cls)


def _rebuild(deserializer: Callable[[Any], Any], state: Any) -> Any:
    return deserializer(state)
