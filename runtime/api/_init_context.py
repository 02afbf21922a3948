"""What ``init()`` returns: Ray's ``RayContext``, with attribute and dict access.

``ctx.address_info`` holds Ray's keys (``address``, ``gcs_address``,
``node_id``, ``session_dir``, ...), readable as ``ctx["address"]`` too; the
same names are attributes. As in Ray, ``with runtime.init(): ...`` shuts the
runtime down at the end of the block.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .._private.version import __version__


class InitContext(Mapping[str, Any]):
    def __init__(self, address_info: dict[str, Any], shutdown: Callable[[], None]) -> None:
        self.address_info = address_info
        self._shutdown = shutdown
        self.python_version = platform.python_version()
        self.runtime_version = __version__
        self.ray_version = __version__  # Ray's name for it
        self.dashboard_url = address_info.get("webui_url")

    def __getitem__(self, key: str) -> Any:
        return self.address_info[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.address_info)

    def __len__(self) -> int:
        return len(self.address_info)

    def __getattr__(self, name: str) -> Any:
        info = self.__dict__.get("address_info", {})
        if name in info:
            return info[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __enter__(self) -> InitContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    def disconnect(self) -> None:
        """Shuts the runtime down in this process (Ray's ``RayContext.disconnect``)."""
        self._shutdown()

    def __repr__(self) -> str:
        return f"InitContext({self.address_info!r})"
