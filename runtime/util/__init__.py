"""Views of the cluster's state for users and tests, and Ray's utilities."""

from ..api import list_actors, list_actors_async, memory_async, memory_summary, memory_tables

__all__ = ["list_actors", "list_actors_async", "memory_async", "memory_summary", "memory_tables"]
