"""``runtime.cloudpickle``: the cloudpickle the runtime pickles with (Ray's
``ray.cloudpickle``), for code that pickles functions, classes or refs itself.

An ``ObjectRef`` pickled with it outside a task's arguments or results is
pinned by its owner for as long as the owner lives (Ray's out-of-band
serialization): the pickle may be read back in any process of the cluster.
"""

from __future__ import annotations

from cloudpickle import (
    CloudPickler,
    Pickler,
    dump,
    dumps,
    load,
    loads,
    register_pickle_by_value,
    unregister_pickle_by_value,
)

__all__ = [
    "CloudPickler",
    "Pickler",
    "dump",
    "dumps",
    "load",
    "loads",
    "register_pickle_by_value",
    "unregister_pickle_by_value",
]
