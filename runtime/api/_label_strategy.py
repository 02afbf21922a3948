"""Ray's ``NodeLabelSchedulingStrategy``: where to run, by the nodes' labels.

``NodeLabelSchedulingStrategy(hard, soft=...)`` takes two maps of a label key
to ``In(*values)``, ``NotIn(*values)``, ``Exists()`` or ``DoesNotExist()``.
Every ``hard`` condition must hold on the node a task or actor runs on; the
``soft`` ones are preferred: a node that meets them too is chosen when one
can hold the request, else any node that meets ``hard``. It is the label
selector and fallback of ``_private/labels.py`` under Ray's older names:
``label_selector`` is hard and soft together, its fallback hard alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._private import labels as node_labels


class _Values:
    def __init__(self, *values: str) -> None:
        kind = type(self).__name__
        if not values:
            raise ValueError(f"{kind}() needs at least one value")
        for value in values:
            if not isinstance(value, str) or not value:
                raise ValueError(f"{kind}(): values must be non-empty str, got {value!r}")
        self.values = list(values)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(map(repr, self.values))})"


class In(_Values):
    """The node's label is one of ``values``."""

    def condition(self) -> str:
        return f"in({','.join(self.values)})"


class NotIn(_Values):
    """The node's label is none of ``values`` (or the node has none)."""

    def condition(self) -> str:
        return f"!in({','.join(self.values)})"


class Exists:
    """The node has the label (any value)."""

    def condition(self) -> str:
        return "exists()"

    def __repr__(self) -> str:
        return "Exists()"


class DoesNotExist:
    """The node has no such label."""

    def condition(self) -> str:
        return "!exists()"

    def __repr__(self) -> str:
        return "DoesNotExist()"


Operator = In | NotIn | Exists | DoesNotExist


class NodeLabelSchedulingStrategy:
    """Run on a node whose labels meet ``hard``, preferring one that meets ``soft`` too."""

    def __init__(
        self,
        hard: Mapping[str, Operator] | None,
        *,
        soft: Mapping[str, Operator] | None = None,
    ) -> None:
        self.hard = _selector(hard, "hard")
        self.soft = _selector(soft, "soft")
        if not (self.hard or self.soft):
            raise ValueError(
                "The `hard` and `soft` parameter of NodeLabelSchedulingStrategy cannot both "
                "be empty."
            )

    def selectors(self) -> tuple[dict[str, str], list[dict[str, str]]]:
        """The label selector, and its fallbacks (the hard conditions alone)."""
        if not self.soft:
            return dict(self.hard), []
        return {**self.soft, **self.hard}, [dict(self.hard)]

    def __repr__(self) -> str:
        return f"NodeLabelSchedulingStrategy(hard={self.hard}, soft={self.soft})"


def _selector(expressions: Any, what: str) -> dict[str, str]:
    if expressions is None:
        return {}
    if not isinstance(expressions, Mapping):
        raise ValueError(
            f'The {what} parameter must be a map (e.g. {{"key1": In("value1")}}), '
            f"got {type(expressions).__name__}"
        )
    conditions = {}
    for key, operator in expressions.items():
        if not isinstance(operator, Operator):
            raise ValueError(
                f"The {what} parameter's value for {key!r} must be In(...), NotIn(...), "
                f"Exists() or DoesNotExist(), got {operator!r}"
            )
        conditions[key] = operator.condition()
    return node_labels.check_selector(conditions, f"NodeLabelSchedulingStrategy {what}")
