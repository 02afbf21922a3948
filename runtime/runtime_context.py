"""``runtime.runtime_context``: Ray's ``ray.runtime_context`` names."""

from .api import RuntimeContext, get_runtime_context

__all__ = ["RuntimeContext", "get_runtime_context"]
