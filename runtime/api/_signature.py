"""Arguments checked against the callee's signature at ``.remote()``.

As in Ray, a call with a wrong number of arguments or an unknown keyword is a
TypeError at the call site, naming the function, with nothing submitted.

A signature travels with actor handles (to other processes), so it is kept as
plain data (:data:`SignatureSpec`: each parameter's name, kind and whether it
has a default) rather than as ``inspect.Signature``, whose defaults may be
any object. Invariant: a spec of None means "accepts anything" (no check).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

#: Per parameter: (name, inspect.Parameter kind as an int, has a default).
SignatureSpec = tuple[tuple[str, int, bool], ...]

_KINDS = {
    int(kind): kind
    for kind in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.VAR_POSITIONAL,
        inspect.Parameter.KEYWORD_ONLY,
        inspect.Parameter.VAR_KEYWORD,
    )
}
_ANYTHING = frozenset({inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD})
_DEFAULT = object()


def spec_of(fn: Callable[..., Any], drop_first: bool = False) -> SignatureSpec | None:
    """The signature of ``fn`` as data; ``drop_first`` leaves out ``self``."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None  # a builtin or C function: no signature to check against
    params = list(sig.parameters.values())
    if drop_first and params and params[0].kind not in _ANYTHING:
        params = params[1:]
    if {p.kind for p in params} == _ANYTHING:
        return None  # (*args, **kwargs) takes anything
    return tuple((p.name, int(p.kind), p.default is not p.empty) for p in params)


class CallCheck:
    """Checks calls against one signature; the common case (positional
    arguments only, to a function without ``*args`` or keyword-only
    parameters) is two comparisons, the rest goes through ``bind``."""

    __slots__ = ("_max", "_min", "_signature", "_simple", "_spec", "_what")

    def __init__(self, spec: SignatureSpec, what: str) -> None:
        self._spec = spec
        positional = (
            int(inspect.Parameter.POSITIONAL_ONLY),
            int(inspect.Parameter.POSITIONAL_OR_KEYWORD),
        )
        self._what = what
        self._signature = inspect.Signature(
            [
                inspect.Parameter(
                    name, _KINDS[kind], default=_DEFAULT if has_default else inspect.Parameter.empty
                )
                for name, kind, has_default in spec
            ]
        )
        self._simple = all(kind in positional for _, kind, _ in spec)
        self._max = len(spec)
        self._min = sum(1 for _, _, has_default in spec if not has_default)

    def __reduce__(self) -> tuple[Any, ...]:
        return (CallCheck, (self._spec, self._what))

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self._simple and not kwargs and self._min <= len(args) <= self._max:
            return
        try:
            self._signature.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{self._what}: {e}") from None


def call_check(spec: SignatureSpec | None, what: str) -> CallCheck | None:
    """The check for calls of ``what`` (None: it takes anything)."""
    return None if spec is None else CallCheck(spec, what)
