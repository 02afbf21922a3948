"""``runtime.remote_function``: Ray's ``ray.remote_function`` name (the remote function type)."""

from .api import RemoteFunction

__all__ = ["RemoteFunction"]
