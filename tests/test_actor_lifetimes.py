"""Actor lifetimes as in Ray: handles anywhere keep an actor alive, owners take
their actors along, detached actors stay."""

from __future__ import annotations

import os

import pytest
from conftest import process_running, wait_until

import runtime

pytestmark = pytest.mark.timeout(120)


@runtime.remote(num_cpus=0)
class Probe:
    def pid(self) -> int:
        return os.getpid()


@runtime.remote(num_cpus=0)
class Keeper:
    def __init__(self) -> None:
        self.kept: list = []

    def keep(self, handles: list) -> int:
        self.kept = handles
        return len(handles)

    def drop(self) -> None:
        self.kept = []

    def make(self) -> int:
        self.kept = [Probe.remote()]
        return runtime.get(self.kept[0].pid.remote())

    def pid(self) -> int:
        return os.getpid()


@runtime.remote
def call_through(handle) -> int:
    return runtime.get(handle.pid.remote())


@runtime.remote
def make_and_return_pid() -> int:
    probe = Probe.remote()
    return runtime.get(probe.pid.remote())


def gone(pid: int) -> None:
    wait_until(lambda: not process_running(pid), what=f"actor process {pid} to exit")


def test_a_handle_passed_to_a_task_and_dropped_ends_the_actor(cluster):
    probe = Probe.remote()
    pid = runtime.get(probe.pid.remote())
    assert runtime.get(call_through.remote(probe)) == pid
    del probe
    gone(pid)


def test_a_borrowed_handle_keeps_the_actor_alive(cluster):
    probe = Probe.remote()
    pid = runtime.get(probe.pid.remote())
    keeper = Keeper.remote()
    assert runtime.get(keeper.keep.remote([probe])) == 1
    del probe  # the keeper's copy holds it
    runtime.get(keeper.pid.remote())
    assert process_running(pid)
    runtime.get(keeper.drop.remote())
    gone(pid)


def test_actors_die_with_the_task_or_actor_that_owns_them(cluster):
    # A task's actor: gone when the task's handles are (the task ended).
    pid = runtime.get(make_and_return_pid.remote())
    gone(pid)
    # An actor's actor: gone when its owner is killed.
    keeper = Keeper.remote()
    inner = runtime.get(keeper.make.remote())
    assert process_running(inner)
    runtime.kill(keeper)
    gone(inner)


def test_detached_actors_outlive_their_handles(cluster):
    probe = Probe.options(lifetime="detached", name="stays").remote()
    pid = runtime.get(probe.pid.remote())
    del probe
    again = runtime.get_actor("stays")
    assert runtime.get(again.pid.remote()) == pid
    runtime.kill(again)
    gone(pid)
