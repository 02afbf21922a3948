"""How an actor class behaves as a class: attributes, inheritance, methods listed."""

from __future__ import annotations

import pytest

import runtime

pytestmark = pytest.mark.timeout(60)


@runtime.remote(num_cpus=0)
class Limits:
    LIMIT = 3

    @staticmethod
    def double(x: int) -> int:
        return 2 * x

    @classmethod
    def limit(cls) -> int:
        return cls.LIMIT

    def inside(self) -> tuple[int, int, int]:
        # The decorated class's name, as a method would use it.
        return Limits.LIMIT, Limits.double(2), Limits.limit()


def test_class_attributes_static_and_class_methods(cluster):
    assert Limits.LIMIT == 3 and Limits.double(4) == 8 and Limits.limit() == 3
    assert runtime.get(Limits.remote().inside.remote()) == (3, 4, 3)
    # A method through the class is the plain function; calls go through a handle.
    assert Limits.inside.__name__ == "inside"
    with pytest.raises(TypeError, match=r"create an actor first .* a\.inside\.remote\(\)"):
        Limits.inside.remote()


def test_inherit_from_the_plain_class_not_the_actor_class(cluster):
    with pytest.raises(TypeError, match="__ray_actor_class__"):

        class Bad(Limits):  # type: ignore[misc]
            pass

    @runtime.remote(num_cpus=0)
    class More(Limits.__ray_actor_class__):  # type: ignore[name-defined, misc]
        def more(self) -> int:
            return self.LIMIT + 1

    actor = More.remote()
    assert runtime.get([actor.more.remote(), actor.inside.remote()]) == [4, (3, 4, 3)]


def test_dir_lists_the_methods(cluster):
    names = dir(Limits.remote())
    assert {"inside", "double", "limit"} <= set(names)


@runtime.remote
class Holds:
    def resources(self) -> dict[str, float]:
        return runtime.get_runtime_context().get_assigned_resources()


def test_an_actor_may_ask_for_object_store_memory_as_in_ray(cluster):
    held = Holds.options(object_store_memory=1 << 20, memory=1 << 20).remote()
    assert runtime.get(held.resources.remote()) == {
        "object_store_memory": float(1 << 20),
        "memory": float(1 << 20),
    }
    with pytest.raises(ValueError, match="invalid option 'object_store_memory'"):
        runtime.remote(num_cpus=0)(lambda: 1).options(object_store_memory=1)
