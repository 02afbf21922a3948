"""Progress bars of tasks and actors, drawn by their driver (Ray's ``tqdm_ray``).

A worker cannot draw on its driver's terminal: its output reaches the driver as
lines. So a bar in a worker prints its state as one line, ``MAGIC`` and JSON,
at most once per interval and when it closes; the driver takes those lines out
of the output it prints and draws the bars with tqdm, one per (worker, bar),
writing the other lines above them.
"""

from __future__ import annotations

import json
from typing import Any, TextIO

from tqdm.auto import tqdm

#: Starts a bar's state line (never printed by the driver).
MAGIC = "__runtime_progress__ "
#: The most bars one driver draws at once (a runaway loop making bars is capped).
MAX_BARS = 100


def state_line(state: dict[str, Any]) -> str:
    return MAGIC + json.dumps(state, separators=(",", ":"))


def parse(line: str) -> dict[str, Any] | None:
    """A bar's state, if ``line`` is a bar's state line (else None)."""
    if not line.startswith(MAGIC):
        return None
    try:
        state = json.loads(line[len(MAGIC) :])
    except ValueError:
        return None
    if not isinstance(state, dict) or not isinstance(state.get("uuid"), str):
        return None
    return state


class BarManager:
    """The driver's bars, by (worker, bar). Runs on the driver's loop thread."""

    def __init__(self) -> None:
        self._bars: dict[tuple[str, str], tqdm[Any]] = {}

    def active(self) -> bool:
        return bool(self._bars)

    def update(self, source: str, label: str, state: dict[str, Any]) -> None:
        """``source``: the worker (its bars' keys); ``label``: what its lines show."""
        key = (source, state["uuid"])
        bar = self._bars.get(key)
        if bar is None:
            if state.get("closed") and not state.get("n"):
                return
            if len(self._bars) >= MAX_BARS:
                return
            bar = self._bars[key] = tqdm(
                total=_number(state.get("total")),
                desc=f"{state.get('desc') or ''} ({label})".strip(),
                unit=str(state.get("unit") or "it"),
                dynamic_ncols=True,
            )
        total = _number(state.get("total"))
        if total is not None:
            bar.total = total
        bar.n = _number(state.get("n")) or 0
        if state.get("desc") is not None:
            bar.set_description(f"{state['desc']} ({label})", refresh=False)
        bar.refresh()
        if state.get("closed"):
            bar.close()
            del self._bars[key]

    def write(self, text: str, out: TextIO) -> None:
        """Prints ``text`` above the bars (as is, when there are none)."""
        if self._bars:
            tqdm.write(text.rstrip("\n"), file=out)
        else:
            out.write(text)
            out.flush()

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()


def _number(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None
