"""``runtime microbenchmark``: benchmark workloads, apart from the runtime's code."""

from ._microbenchmark import main

__all__ = ["main"]
