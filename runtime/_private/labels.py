"""Node labels and label selectors, as in Ray (its beta label scheduling).

A node has string labels: ``ray.io/node-id`` (its id, hex),
``ray.io/accelerator-type`` (from an ``accelerator_type:<type>`` resource; ""
on a node without one) and those it was started with (``init(labels=...)``,
``runtime start --labels k=v,...`` or a JSON object, ``--labels-file`` YAML).
Keys and values follow Kubernetes' label syntax; keys under ``ray.io/`` are
the runtime's own.

A task's or actor's ``label_selector`` is a dict of key to condition, all of
which must hold on the node it runs on:

- ``"v"``: the node's label is ``v``;  ``"!v"``: it is not (or is absent);
- ``"in(a, b)"``: it is one of these;  ``"!in(a, b)"``: it is none of them;
- ``"exists()"``: the node has the label;  ``"!exists()"``: it has not (what
  Ray's ``NodeLabelSchedulingStrategy`` says with ``Exists()`` and
  ``DoesNotExist()``; Ray's selectors have no word for it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

RESERVED_PREFIX = "ray.io/"
NODE_ID_KEY = "ray.io/node-id"
ACCELERATOR_KEY = "ray.io/accelerator-type"
#: The resource that names a node's accelerator type (``accelerator_type`` option).
ACCELERATOR_RESOURCE = "accelerator_type:"

_NAME = r"[a-zA-Z0-9](?:[a-zA-Z0-9_.-]{0,61}[a-zA-Z0-9])?"
_NAME_RE = re.compile(_NAME)
_PREFIX_RE = re.compile(rf"{_NAME}(?:\.{_NAME})*")
_SELECTOR_RE = re.compile(
    rf"(!?)(?:in\(\s*({_NAME}(?:\s*,\s*{_NAME})*)\s*\)|(exists\(\))|({_NAME}))"
)

SYNTAX = (
    "63 characters at most, starting and ending with a letter or digit, with letters, "
    "digits, '-', '_' and '.' between"
)


def key_error(key: Any) -> str:
    """Why ``key`` is not a label key ("" if it is one)."""
    if not isinstance(key, str):
        return f"label keys are str, got {type(key).__name__}"
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _PREFIX_RE.fullmatch(prefix)):
        return f"label key {key!r}: its prefix must be DNS labels separated by dots"
    if not _NAME_RE.fullmatch(name):
        return f"label key {key!r}: its name must be {SYNTAX}"
    return ""


def check_node_labels(labels: Any, what: str = "labels") -> dict[str, str]:
    """A node's custom labels, checked (ValueError/TypeError says what is wrong)."""
    if labels is None:
        return {}
    if not isinstance(labels, Mapping):
        raise TypeError(f"{what} must be a dict of str to str, got {type(labels).__name__}")
    out: dict[str, str] = {}
    for key, value in labels.items():
        bad = key_error(key)
        if bad:
            raise ValueError(f"{what}: {bad}")
        if key.startswith(RESERVED_PREFIX):
            raise ValueError(f"{what}: label keys under {RESERVED_PREFIX!r} are reserved: {key!r}")
        if not isinstance(value, str):
            raise TypeError(f"{what}: the value of {key!r} must be a str, got {value!r}")
        if value and not _NAME_RE.fullmatch(value):
            raise ValueError(f"{what}: the value {value!r} of {key!r} must be {SYNTAX}")
        out[key] = value
    return out


def defaults(node_id: bytes, resources: Mapping[str, float]) -> dict[str, str]:
    """The labels every node has (an accelerator type a label cannot hold is left out)."""
    kinds = sorted(
        kind
        for k in resources
        if k.startswith(ACCELERATOR_RESOURCE)
        and _NAME_RE.fullmatch(kind := k[len(ACCELERATOR_RESOURCE) :])
    )
    return {NODE_ID_KEY: node_id.hex(), ACCELERATOR_KEY: kinds[0] if kinds else ""}


def parse_labels(text: str) -> dict[str, str]:
    """``"k=v,k2=v2"`` or a JSON object (the command line's forms), checked."""
    if text.strip().startswith("{"):
        try:
            return check_node_labels(json.loads(text))
        except json.JSONDecodeError as e:
            raise ValueError(f"labels: not a JSON object: {e}") from None
    labels: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"labels: {pair!r} is not key=value")
        labels[key.strip()] = value.strip()
    return check_node_labels(labels)


def read_labels_file(path: str) -> dict[str, str]:
    """A YAML mapping of labels in the file at ``path`` ({} for no path), checked."""
    if not path:
        return {}
    import yaml  # (only the command line reads such files)

    with open(path, encoding="utf-8") as f:
        try:
            loaded = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ValueError(f"{path} is not YAML: {e}") from None
    return check_node_labels(loaded or {}, f"labels in {path}")


def check_selector(selector: Any, what: str = "label_selector") -> dict[str, str]:
    """A label selector, checked."""
    if not isinstance(selector, Mapping):
        raise TypeError(f"{what} must be a dict of str to str, got {type(selector).__name__}")
    for key, condition in selector.items():
        bad = key_error(key)
        if bad:
            raise ValueError(f"{what}: {bad}")
        if not isinstance(condition, str):
            raise TypeError(f"{what}: the condition on {key!r} must be a str, got {condition!r}")
        if not _SELECTOR_RE.fullmatch(condition):
            raise ValueError(
                f"{what}: {condition!r} (on {key!r}) is not a condition: give 'value', "
                "'!value', 'in(a, b)', '!in(a, b)', 'exists()' or '!exists()', each value " + SYNTAX
            )
    return dict(selector)


def matches(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    """Whether a node with ``labels`` meets every condition of ``selector``."""
    for key, condition in selector.items():
        found = _SELECTOR_RE.fullmatch(condition)
        if found is None:
            return False  # (checked at the call: only a peer's bad message gets here)
        negated, listed, exists, single = found.groups()
        if exists:
            held = key in labels
        else:
            values = [v.strip() for v in listed.split(",")] if listed else [single]
            held = labels.get(key) in values
        if held == bool(negated):
            return False
    return True


def choose_selector(
    primary: Mapping[str, str],
    fallbacks: Sequence[Mapping[str, str]],
    able: Iterable[Mapping[str, str]],
) -> Mapping[str, str]:
    """Ray's ``fallback_strategy``: ``primary`` if one of the nodes ``able`` to
    hold the request (their labels) matches it, else the first fallback one of
    them matches; ``primary`` when none does (the request waits for a node)."""
    if not fallbacks:
        return primary
    candidates = list(able)
    for selector in (primary, *fallbacks):
        if any(matches(labels, selector) for labels in candidates):
            return selector
    return primary


def check_fallback(value: Any, what: str = "fallback_strategy") -> list[dict[str, str]]:
    """A ``fallback_strategy``, checked: a list of ``{"label_selector": {...}}``
    (the one option Ray's accepts there); returns the selectors in order."""
    if not isinstance(value, list | tuple):
        raise TypeError(f"{what} must be a list of dicts, got {type(value).__name__}")
    if len(value) > MAX_ENTRIES:
        raise ValueError(f"{what}: at most {MAX_ENTRIES} fallbacks")
    selectors = []
    for i, entry in enumerate(value):
        if not isinstance(entry, Mapping) or not entry:
            raise TypeError(f"{what}[{i}] must be a non-empty dict, got {entry!r}")
        unknown = set(entry) - {"label_selector"}
        if unknown:
            raise ValueError(
                f"{what}[{i}]: unsupported option(s) {sorted(unknown)}; only 'label_selector' "
                "is (as in Ray)"
            )
        selectors.append(check_selector(entry["label_selector"], f"{what}[{i}]['label_selector']"))
    return selectors


#: The most labels a node, or conditions a selector, may have on the wire.
MAX_ENTRIES = 64


def wire_error(labels: Mapping[str, str], *, selector: bool) -> str:
    """Why labels (or a selector) a peer sent are malformed ("" if they are not)."""
    if len(labels) > MAX_ENTRIES:
        return f"more than {MAX_ENTRIES} labels"
    for key, value in labels.items():
        bad = key_error(key)
        if bad:
            return bad
        pattern = _SELECTOR_RE if selector else _NAME_RE
        if (selector or value) and not pattern.fullmatch(value):
            return f"label {key!r} has a malformed value"
    return ""
