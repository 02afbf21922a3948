"""Ray's DAG API: graphs of calls built with .bind(), submitted by execute()."""

from __future__ import annotations

import os
import pickle

import pytest

import runtime
from runtime.dag import DAGNode, InputNode, MultiOutputNode

pytestmark = pytest.mark.timeout(120)


@runtime.remote
def double(x):
    return 2 * x


@runtime.remote
def combine(a, b=0, *, extra=()):
    # A node nested in an argument arrives as its ref (as any nested ref does).
    return a + b + sum(runtime.get(list(extra)))


@runtime.remote
def pid_and(x):
    return os.getpid(), x


@runtime.remote
class Adder:
    def __init__(self, start):
        self.total = start

    def add(self, x):
        self.total += x
        return self.total

    def pid(self):
        return os.getpid()


def test_a_function_graph_runs_shared_nodes_once_per_execution(cluster):
    with InputNode() as inp:
        shared = pid_and.bind(inp)
        dag = MultiOutputNode([shared, shared, combine.bind(double.bind(inp), double.bind(3))])
    first, again, total = runtime.get(dag.execute(5), timeout=60)
    assert first == again and first[1] == 5  # one task, its ref used twice
    assert total == 2 * 5 + 2 * 3
    # Each execution submits anew; nodes inside containers and keywords are found.
    nested = combine.bind(inp, extra=[double.bind(inp), double.bind(1)])
    assert runtime.get([nested.execute(1), nested.execute(2)], timeout=60) == [5, 8]


def test_input_is_read_by_index_key_and_attribute(cluster):
    with InputNode() as inp:
        dag = combine.bind(inp[0], inp.b)
    assert runtime.get(dag.execute(4, b=6), timeout=60) == 10
    with InputNode() as inp:
        by_key = combine.bind(inp["x"], inp["y"])
        by_attribute = double.bind(inp.real)
    assert runtime.get(by_key.execute({"x": 1, "y": 2}), timeout=60) == 3
    assert runtime.get(by_attribute.execute(7), timeout=60) == 14


def test_actor_nodes_make_an_actor_per_execution_and_live_handles_bind(cluster):
    with InputNode() as inp:
        actor = Adder.bind(10)
        dag = MultiOutputNode([actor.add.bind(inp), actor.add.bind(1)])
    assert runtime.get(dag.execute(1), timeout=60) in ([11, 12], [12, 11])
    # A fresh actor each time, as in Ray (one actor's calls would go on counting).
    assert sorted(runtime.get(dag.execute(1), timeout=60)) == [11, 12]
    assert isinstance(Adder.bind(0).execute(), runtime.actor.ActorHandle)
    live = Adder.remote(100)
    with InputNode() as inp:
        on_live = live.add.bind(double.bind(inp))
    assert runtime.get([on_live.execute(1), on_live.execute(2)], timeout=60) == [102, 106]
    assert runtime.get(live.add.options(name="named").bind(0).execute(), timeout=60) == 106


def test_calls_bound_on_a_class_node_run_in_the_order_bound(cluster):
    # As in Ray: a.add.bind(2) then a.add.bind(4): running the second runs the
    # first before it, on the same actor.
    from runtime.dag.input_node import InputNode as InputNodeByRaysPath

    assert InputNodeByRaysPath is InputNode
    first = Adder.bind(10)
    first.add.bind(2)
    second = Adder.bind(10)
    second.add.bind(6)
    dag = combine.bind(first.add.bind(4), second.add.bind(0))
    assert runtime.get(dag.execute(), timeout=60) == (10 + 2 + 4) + (10 + 6)


def test_options_on_nodes(cluster):
    node = double.options(num_cpus=0).bind(2)
    assert node.get_options() == {"num_cpus": 0}
    assert runtime.get(node.options(name="twice").execute(), timeout=60) == 4
    with pytest.raises(ValueError, match="invalid option 'bogus'"):
        double.bind(1).options(bogus=True)


def test_bad_graphs_fail_at_the_call_site():
    # (No cluster: these fail before anything is submitted.)
    with pytest.raises(TypeError, match="missing a required argument"):
        combine.bind()
    with pytest.raises(AttributeError, match="has no method 'nope'"):
        _ = Adder.bind(1).nope
    with InputNode() as inp:
        dag = double.bind(inp)
    with pytest.raises(TypeError, match="pass its input"):
        dag.execute()
    two = combine.bind(InputNode(), InputNode())
    with pytest.raises(ValueError, match="one InputNode"):
        two.execute(1)
    with pytest.raises(TypeError, match="list of DAG nodes"):
        MultiOutputNode([1])
    with pytest.raises(TypeError, match="cannot be sent"):
        pickle.dumps(dag)
    assert isinstance(dag, DAGNode)


def test_a_long_chain_needs_no_deep_recursion(cluster):
    node = double.bind(1)
    for _ in range(1500):
        node = combine.bind(node)
    assert runtime.get(node.execute(), timeout=60) == 2
