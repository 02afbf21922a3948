"""``inspect_serializability``: which part of a function, class or object does
not pickle (Ray's ``ray.util.inspect_serializability``).

A remote function travels pickled by value with what it refers to (globals,
closure cells); an argument with its attributes. When that fails, the error
names the outermost thing; this walks inward (a function's globals and closure
variables, a class's methods and attributes, an object's attributes, up to
``depth`` levels) and reports the innermost parts that fail by themselves.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

import cloudpickle


@dataclass(frozen=True, eq=False)  # (by identity: the parts may be unhashable)
class FailureTuple:
    """A part that does not pickle: ``obj``, its ``name``, and the ``parent`` holding it."""

    obj: Any
    name: str
    parent: Any

    def __repr__(self) -> str:
        return f"FailTuple({self.name} [obj={self.obj!r}, parent={self.parent!r}])"


_RULE = "=" * 60


def inspect_serializability(
    base_obj: Any, name: str | None = None, depth: int = 3, print_file: TextIO | None = None
) -> tuple[bool, set[FailureTuple]]:
    """Whether ``base_obj`` pickles as the runtime pickles it, and if not, the
    innermost parts found that do not; a report is printed as it goes."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ValueError(f"depth must be an int >= 0, got {depth!r}")
    out = sys.stdout if print_file is None else print_file
    label = name or getattr(base_obj, "__qualname__", None) or type(base_obj).__name__
    print(f"{_RULE}\nChecking serializability of {label}\n{_RULE}", file=out)
    failures: set[FailureTuple] = set()
    ok = _inspect(base_obj, label, None, depth, failures, out, indent="")
    if failures:
        found = "\n".join(f"    {failure!r}" for failure in failures)
        print(
            f"{_RULE}\nThese parts were found not to pickle (there may be others):\n\n"
            f"{found}\n\nMove their creation into the function or class that uses them, "
            f"or pass them in another form.\n{_RULE}",
            file=out,
        )
    return ok, failures


def _inspect(
    obj: Any,
    name: str,
    parent: Any,
    depth: int,
    failures: set[FailureTuple],
    out: TextIO,
    indent: str,
) -> bool:
    error = _pickle_error(obj)
    if error is None:
        return True
    print(f"{indent}!!! FAIL serialization: {error}", file=out)
    before = len(failures)
    if depth > 0:
        for part, child in _parts(obj):
            path = f"{name}{part}" if part.startswith("[") else f"{name}.{part}"
            print(f"{indent}    Serializing {path} {_short(child)}...", file=out)
            _inspect(child, path, obj, depth - 1, failures, out, indent + "    ")
    if len(failures) == before:  # nothing inside fails alone: this is the culprit
        failures.add(FailureTuple(obj, name, parent))
    return False


def _pickle_error(obj: Any) -> str | None:
    try:
        cloudpickle.dumps(obj)
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return None


def _parts(obj: Any) -> Iterator[tuple[str, Any]]:
    """What ``obj`` carries with it when pickled by value."""
    if inspect.isfunction(obj):
        closure = inspect.getclosurevars(obj)
        yield from closure.nonlocals.items()
        yield from closure.globals.items()
        return
    if inspect.isclass(obj):
        for key, value in vars(obj).items():
            if not (key.startswith("__") and key.endswith("__")):
                yield key, value
        return
    try:
        attributes = vars(obj)
    except TypeError:  # no __dict__: its slots, if any
        slots = getattr(type(obj), "__slots__", ())
        attributes = {s: getattr(obj, s) for s in slots if hasattr(obj, s)}
    yield from attributes.items()
    if isinstance(obj, list | tuple | set | frozenset):
        yield from ((f"[{i}]", item) for i, item in enumerate(obj))
    elif isinstance(obj, dict):
        yield from ((f"[{key!r}]", value) for key, value in obj.items())


def _short(obj: Any) -> str:
    text = repr(obj)
    return text if len(text) <= 80 else text[:77] + "..."
