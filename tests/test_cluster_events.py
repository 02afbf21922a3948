"""Ray's ``list_cluster_events``: nodes joining and dying, jobs starting and
finishing, and the errors core workers report, on a real cluster."""

from __future__ import annotations

import json

import pytest
from conftest import cluster_of, run_cli, run_driver, wait_until

import runtime
from runtime.util import state

pytestmark = pytest.mark.timeout(120)


@runtime.remote(num_cpus=0)
def anywhere() -> int:
    return 1


def _events(**filters: str) -> list[state.StateRow]:
    return state.list_cluster_events(filters=[(k, "=", v) for k, v in filters.items()], limit=0)


def test_nodes_jobs_and_errors_are_cluster_events() -> None:
    with cluster_of(head_node_args={"num_cpus": 1}) as cluster:
        stopped, crashed = cluster.add_node(num_cpus=1), cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        runtime.init(address=cluster.address)
        job = runtime.get_runtime_context().get_job_id()
        address = cluster.address
        other = run_driver(
            f"import runtime; runtime.init(address={address!r}); "
            "print(runtime.get_runtime_context().get_job_id())"
        )
        assert other.returncode == 0, other.stderr
        other_job = other.stdout.strip().splitlines()[-1]
        unplaceable = anywhere.options(resources={"nowhere": 1}).remote()
        cluster.remove_node(stopped)
        cluster.remove_node(crashed, allow_graceful=False)
        cluster.wait_for_dead(crashed)

        def infeasible() -> list[state.StateRow]:
            return [e for e in _events(severity="WARNING") if "nowhere" in e.message]

        wait_until(lambda: bool(infeasible()), what="the infeasible task's warning")
        (warning,) = infeasible()
        assert warning.source_type == "CORE_WORKER"
        assert warning.custom_fields == {"type": "INFEASIBLE", "job_id": job}
        wait_until(
            lambda: any(
                e.custom_fields.get("job_id") == other_job
                for e in _events()
                if "finished" in e.message
            ),
            what="the other driver's job's end",
        )

        events = _events()
        assert all(e.source_type in ("GCS", "CORE_WORKER") for e in events)
        assert all(e.severity in ("INFO", "WARNING", "ERROR") for e in events)
        assert len({e.event_id for e in events}) == len(events)
        joined = [e.custom_fields["node_id"] for e in events if "joined" in e.message]
        assert sorted(joined) == sorted(
            [n.node_id for n in cluster.nodes] + [stopped.node_id, crashed.node_id]
        )
        dead = {e.custom_fields["node_id"]: e for e in events if "is dead" in e.message}
        assert dead[stopped.node_id].severity == "INFO", dead[stopped.node_id].message
        assert dead[crashed.node_id].severity == "ERROR", dead[crashed.node_id].message
        started = {e.custom_fields.get("job_id") for e in events if "started" in e.message}
        assert {job, other_job} <= started
        errors = _events(severity="ERROR")
        assert errors and all(e.severity == "ERROR" for e in errors)
        assert len(state.list_cluster_events(limit=2)) == 2
        del unplaceable

        table = run_cli("list", "cluster-events", "--address", address)
        assert table.returncode == 0, table.stderr
        assert "WARNING" in table.stdout and "joined" in table.stdout
        listed = run_cli(
            "list", "cluster-events", "--filter", "severity=ERROR", "--format", "json",
            "--address", address,
        )  # fmt: skip
        assert listed.returncode == 0, listed.stderr
        rows = json.loads(listed.stdout)
        assert rows and {r["severity"] for r in rows} == {"ERROR"}
        with pytest.raises(ValueError, match="cannot filter cluster_events on 'nope'"):
            state.list_cluster_events(filters=[("nope", "=", "x")])
