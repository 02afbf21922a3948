"""Runtime environments (env_vars, working_dir, py_modules so far): per job,
task and actor, merged as Ray merges them, packages prepared once per node, and
never sharing a worker across environments."""

from __future__ import annotations

import os
from typing import Any

import pytest
from conftest import cluster_of

import runtime
from runtime.raylet._env_table import RuntimeEnvTable
from runtime.util.scheduling_strategies import NodeAffinitySchedulingStrategy

pytestmark = pytest.mark.timeout(120)


@runtime.remote(num_cpus=0)
def seen() -> tuple[str | None, str | None, int]:
    return os.environ.get("A"), os.environ.get("B"), os.getpid()


@runtime.remote(num_cpus=0)
def child_sees() -> tuple[str | None, str | None, int]:
    return runtime.get(seen.remote())


@runtime.remote(num_cpus=0)
class Holder:
    def seen(self) -> tuple[str | None, str | None]:
        return os.environ.get("A"), os.environ.get("B")


def test_env_vars_of_the_job_task_and_actor_merge() -> None:
    runtime.init(num_cpus=2, runtime_env={"env_vars": {"A": "job", "B": "job"}})
    try:
        assert runtime.get_runtime_context().runtime_env == {"env_vars": {"A": "job", "B": "job"}}
        assert runtime.get(seen.remote())[:2] == ("job", "job")
        own = seen.options(runtime_env={"env_vars": {"B": "task"}})
        assert runtime.get(own.remote())[:2] == ("job", "task")
        # A task's children run in its environment unless told otherwise.
        nested = child_sees.options(runtime_env={"env_vars": {"A": "parent"}})
        assert runtime.get(nested.remote())[:2] == ("parent", "job")
        actor = Holder.options(runtime_env={"env_vars": {"A": "actor"}}).remote()
        assert runtime.get(actor.seen.remote()) == ("actor", "job")
    finally:
        runtime.shutdown()


def test_two_environments_never_share_a_worker(cluster: runtime.RuntimeContext) -> None:
    one = seen.options(runtime_env={"env_vars": {"A": "1"}})
    two = seen.options(runtime_env={"env_vars": {"A": "2"}})
    results = runtime.get([(one if i % 2 else two).remote() for i in range(12)])
    by_env: dict[str | None, set[int]] = {}
    for a, _, pid in results:
        by_env.setdefault(a, set()).add(pid)
    assert set(by_env) == {"1", "2"}
    assert not by_env["1"] & by_env["2"]
    # No environment: the job's own workers, none of the others.
    plain = {pid for _, _, pid in runtime.get([seen.remote() for _ in range(4)])}
    assert not plain & (by_env["1"] | by_env["2"])


@pytest.fixture
def project(tmp_path: Any) -> Any:
    """A working_dir (a data file, a module, a file to leave out) and a package."""
    work = tmp_path / "work"
    (work / "big").mkdir(parents=True)
    (work / "data.txt").write_text("some data")
    (work / "shipped.py").write_text("WHERE = 'working_dir'\n")
    (work / "big" / "blob.bin").write_bytes(b"x" * 1000)
    package = tmp_path / "libs" / "helperpkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("def hello():\n    return 'from py_modules'\n")
    return work, package


@runtime.remote(num_cpus=0)
def in_working_dir() -> tuple[str, str, bool, str]:
    import helperpkg  # type: ignore[import-not-found]
    import shipped  # type: ignore[import-not-found]

    with open("data.txt") as f:
        data = f.read()
    return data, shipped.WHERE, os.path.exists("big/blob.bin"), helperpkg.hello()


def test_working_dir_and_py_modules_on_another_node(project: Any) -> None:
    work, package = project
    with cluster_of(head_node_args={"num_cpus": 1}) as cluster:
        other = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        env = {
            "env_vars": {"A": "everywhere"},
            "working_dir": str(work),
            "excludes": ["*.bin"],
            "py_modules": [str(package)],
        }
        runtime.init(address=cluster.address, runtime_env=env)
        there = NodeAffinitySchedulingStrategy(other.node_id, soft=False)
        assert runtime.get(seen.options(scheduling_strategy=there).remote())[0] == "everywhere"
        expected = ("some data", "working_dir", False, "from py_modules")
        for where in (there, "DEFAULT"):
            got = runtime.get(in_working_dir.options(scheduling_strategy=where).remote())
            assert got == expected
        # Each node unpacked the packages once, and later tasks reuse them.
        assert cluster.head is not None
        cache = _node_cache(cluster.head.session.path, cluster.head_node.node_id)  # type: ignore[union-attr]
        before = {name: os.stat(os.path.join(cache, name)).st_ino for name in os.listdir(cache)}
        assert len(before) == 2  # the working_dir and the module
        more = in_working_dir.options(runtime_env={"env_vars": {"B": "another env"}})
        assert runtime.get([more.remote() for _ in range(3)]) == [expected] * 3
        after = {name: os.stat(os.path.join(cache, name)).st_ino for name in os.listdir(cache)}
        assert after == before


def _node_cache(session_dir: str, node_id: str) -> str:
    """Where a node keeps its runtime environments' packages."""
    return os.path.join(session_dir, "runtime_resources", node_id[:12])


def test_a_setup_past_its_timeout_fails_and_the_next_task_runs(
    cluster: runtime.RuntimeContext, project: Any
) -> None:
    work, _ = project
    slow = {"working_dir": str(work), "config": {"setup_timeout_seconds": 0.0001}}
    with pytest.raises(runtime.exceptions.RuntimeEnvSetupError, match="setup_timeout_seconds"):
        runtime.get(seen.options(runtime_env=slow).remote(), timeout=30)
    assert runtime.get(seen.remote(), timeout=30)[2] > 0
    actor = Holder.options(runtime_env=slow).remote()
    with pytest.raises(runtime.exceptions.ActorDiedError, match="setup_timeout_seconds"):
        runtime.get(actor.seen.remote(), timeout=30)


def test_a_package_over_the_limit_is_refused_at_the_call_site(
    cluster: runtime.RuntimeContext, project: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runtime._private import packaging

    work, _ = project
    monkeypatch.setattr(packaging, "MAX_PACKAGE_BYTES", 100)
    with pytest.raises(ValueError, match="larger than"):
        seen.options(runtime_env={"working_dir": str(work)}).remote()


def test_bad_runtime_envs_are_refused_at_the_call_site(cluster: runtime.RuntimeContext) -> None:
    with pytest.raises(ValueError, match="unknown runtime_env field 'envvars'"):
        seen.options(runtime_env={"envvars": {}})
    with pytest.raises(TypeError, match="must be a str"):
        seen.options(runtime_env={"env_vars": {"A": 1}})
    with pytest.raises(ValueError, match="not supported"):
        Holder.options(runtime_env={"conda": "env"})
    with pytest.raises(TypeError, match="pip"):
        seen.options(runtime_env={"pip": 3})
    with pytest.raises(ValueError, match="is not a folder"):
        seen.options(runtime_env={"working_dir": "/nonexistent/folder"}).remote()
    with pytest.raises(ValueError, match="setup_timeout_seconds"):
        seen.options(runtime_env={"config": {"setup_timeout_seconds": 0}})
    with pytest.raises(TypeError, match="runtime_env must be a dict"):
        seen.options(runtime_env=["A"])


def test_rays_runtime_env_classes(cluster: runtime.RuntimeContext) -> None:
    from runtime.runtime_env import RuntimeEnv, RuntimeEnvConfig

    env = RuntimeEnv(env_vars={"B": "typed"}, config=RuntimeEnvConfig(setup_timeout_seconds=30))
    assert env.env_vars() == {"B": "typed"} and not env.has_working_dir()
    assert RuntimeEnv.deserialize(env.serialize()) == env
    assert runtime.get(seen.options(runtime_env=env).remote())[1] == "typed"
    # Checked where written, as a dict given to options() is.
    with pytest.raises(ValueError, match="unknown runtime_env field 'envvars'"):
        RuntimeEnv(envvars={})
    with pytest.raises(ValueError, match="setup_timeout_seconds"):
        RuntimeEnvConfig(setup_timeout_seconds=0)


def test_init_refuses_a_bad_runtime_env_before_starting_anything() -> None:
    with pytest.raises(ValueError, match="unknown runtime_env field"):
        runtime.init(num_cpus=1, runtime_env={"nope": 1})
    assert not runtime.is_initialized()


@pytest.fixture(scope="module")
def package_index(tmp_path_factory: Any) -> None:
    """Skips unless the package index answers (pip tests need it; CI reaches it)."""
    import subprocess
    import sys

    folder = tmp_path_factory.mktemp("index-probe")
    probe = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(folder), "tabulate"],
        capture_output=True,
        timeout=120,
    )
    if probe.returncode != 0:
        pytest.skip(f"the package index is unreachable: {probe.stderr.decode()[-300:]}")


@runtime.remote(num_cpus=0)
def tabulated() -> str:
    import tabulate  # type: ignore[import-untyped]

    return str(tabulate.tabulate([[1, 2]]))


def test_pip_installs_once_per_node_and_fails_clearly(
    cluster: runtime.RuntimeContext, package_index: None
) -> None:
    with pytest.raises(ImportError):
        import tabulate  # type: ignore[import-untyped]  # noqa: F401  (not a dependency)
    env = {"pip": ["tabulate"]}
    assert "1  2" in runtime.get(tabulated.options(runtime_env=env).remote(), timeout=120)
    # Another environment with the same requirements reuses the installed folder.
    assert cluster.session_dir is not None
    cache = _node_cache(cluster.session_dir, runtime.get_runtime_context().get_node_id())
    installed = sorted(os.listdir(cache))
    again = {"pip": ["tabulate"], "env_vars": {"X": "other"}}
    assert "1  2" in runtime.get(tabulated.options(runtime_env=again).remote(), timeout=120)
    assert sorted(os.listdir(cache)) == installed
    missing = {"pip": ["this-package-does-not-exist-runtime-test"]}
    with pytest.raises(runtime.exceptions.RuntimeEnvSetupError, match="pip could not install"):
        runtime.get(tabulated.options(runtime_env=missing).remote(), timeout=120)
    with pytest.raises(ValueError, match="invalid requirement"):
        tabulated.options(runtime_env={"pip": ["--index-url=http://example.invalid"]})


def test_a_package_nobody_used_for_a_while_is_deleted(project: Any) -> None:
    from conftest import wait_until

    work, _ = project
    with cluster_of(
        head_node_args={"num_cpus": 1}, system_config={"runtime_env_cache_ttl_s": 0.2}
    ) as cluster:
        runtime.init(address=cluster.address)
        assert cluster.head is not None
        cache = _node_cache(cluster.head.session.path, cluster.head_node.node_id)  # type: ignore[union-attr]
        # max_calls=1: its worker exits after the task, the last user of the package.
        once = seen.options(runtime_env={"working_dir": str(work)}, max_calls=1)
        runtime.get(once.remote(), timeout=60)
        wait_until(lambda: not os.listdir(cache), what="the unused package to be deleted")
        runtime.get(once.remote(), timeout=60)  # fetched and unpacked again


@runtime.remote(num_cpus=0)
def from_wheel() -> str:
    import wheeled  # type: ignore[import-not-found]

    return str(wheeled.ANSWER)


def test_py_modules_takes_a_wheel(cluster: runtime.RuntimeContext, tmp_path: Any) -> None:
    import zipfile

    wheel = tmp_path / "wheeled-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("wheeled/__init__.py", "ANSWER = 42\n")
        archive.writestr("wheeled-1.0.dist-info/METADATA", "Name: wheeled\nVersion: 1.0\n")
    env = {"py_modules": [str(wheel)]}
    assert runtime.get(from_wheel.options(runtime_env=env).remote(), timeout=60) == "42"


def _mark_hooked() -> None:
    os.environ["A"] = "hooked"


def _failing_hook() -> None:
    raise ValueError("the hook's own error")


def test_worker_process_setup_hook(tmp_path: Any) -> None:
    """Ray's worker_process_setup_hook: a function (pickled by the caller) or a
    'module.function' path, run by each worker of the environment before its
    first task, a task's or an actor's; a failing one fails what waits for a
    worker of its environment, with the hook's traceback."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "my_hooks.py").write_text("import os\ndef setup():\n    os.environ['B'] = 'by path'\n")
    runtime.init(num_cpus=2, runtime_env={"worker_process_setup_hook": _mark_hooked})
    try:
        assert runtime.get(seen.remote())[:2] == ("hooked", None)
        assert runtime.get(Holder.remote().seen.remote()) == ("hooked", None)
        by_path = seen.options(
            runtime_env={
                "py_modules": [str(hooks)],
                "worker_process_setup_hook": "hooks.my_hooks.setup",
            }
        )
        assert runtime.get(by_path.remote(), timeout=60)[1] == "by path"
        failing = seen.options(runtime_env={"worker_process_setup_hook": _failing_hook})
        with pytest.raises(runtime.exceptions.RuntimeEnvSetupError, match="the hook's own error"):
            runtime.get(failing.remote(), timeout=60)
        with pytest.raises(TypeError, match="worker_process_setup_hook"):
            seen.options(runtime_env={"worker_process_setup_hook": 3})
        assert runtime.get(seen.remote())[:2] == ("hooked", None)  # the job goes on
    finally:
        runtime.shutdown()


def test_the_env_table_keeps_what_is_in_use_and_a_bounded_rest() -> None:
    """What ``list_runtime_envs`` reads on a node: an environment in use is
    kept; of the unused, the ones set up last; a setup that found everything
    made keeps the row of the one that made it."""
    table = RuntimeEnvTable(limit=2)
    table.set_up("a", 0.5)
    in_use = {"a": 1}  # (live workers per environment: the scheduler's count)
    table.set_up("b", 0.1, "it broke", in_use)
    table.set_up("c", 0.2, "", in_use)
    table.set_up("d", 0.3, "", in_use)  # three unused: b, the oldest, goes
    assert [e.runtime_env for e in table.entries(in_use)] == ["a", "c", "d"]
    table.set_up("a", 0.0, "", in_use)
    in_use = {"a": 2}
    (a,) = [e for e in table.entries(in_use) if e.runtime_env == "a"]
    assert (a.success, a.creation_time_ms, a.ref_cnt, a.error) == (True, 500.0, 2, "")
    assert [(e.runtime_env, e.ref_cnt) for e in table.entries({})] == [("d", 0), ("a", 0)]
