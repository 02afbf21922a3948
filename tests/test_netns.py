"""A head and a node on a real (virtual) network: two network namespaces, each
with its own address, joined by a veth pair. Needs the privileges to make
namespaces; skipped, with the reason, without them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest
from conftest import ROOT, assert_no_orphans

pytestmark = pytest.mark.timeout(180)

HEAD_IP, NODE_IP = "10.231.0.1", "10.231.0.2"


def _sh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30)


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0:
        pytest.skip("making network namespaces needs root")
    if shutil.which("ip") is None:
        pytest.skip("the 'ip' command (iproute2) is not installed")
    tag = f"rt{os.getpid() % 100000}"
    head, node = f"{tag}h", f"{tag}n"
    probe = _sh("ip", "netns", "add", head)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace: {probe.stderr.strip()}")
    try:
        steps = [
            ("ip", "netns", "add", node),
            ("ip", "link", "add", f"{tag}a", "type", "veth", "peer", "name", f"{tag}b"),
            ("ip", "link", "set", f"{tag}a", "netns", head),
            ("ip", "link", "set", f"{tag}b", "netns", node),
            ("ip", "-n", head, "addr", "add", f"{HEAD_IP}/24", "dev", f"{tag}a"),
            ("ip", "-n", node, "addr", "add", f"{NODE_IP}/24", "dev", f"{tag}b"),
            ("ip", "-n", head, "link", "set", f"{tag}a", "up"),
            ("ip", "-n", node, "link", "set", f"{tag}b", "up"),
            ("ip", "-n", head, "link", "set", "lo", "up"),
            ("ip", "-n", node, "link", "set", "lo", "up"),
        ]
        for step in steps:
            done = _sh(*step)
            if done.returncode != 0:
                pytest.skip(f"cannot set up the veth pair ({' '.join(step)}): {done.stderr}")
        yield head, node
    finally:
        _sh("ip", "netns", "del", node)
        _sh("ip", "netns", "del", head)


def _in(ns: str, root: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RUNTIME_SESSION_ROOT": root}
    return subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )


def test_head_and_node_on_separate_addresses(namespaces: tuple[str, str]) -> None:
    head_ns, node_ns = namespaces
    with tempfile.TemporaryDirectory() as head_root, tempfile.TemporaryDirectory() as node_root:
        try:
            started = _in(
                head_ns, head_root, "-m", "runtime.cli", "start", "--head", "--host", HEAD_IP,
                "--port", "0", "--num-cpus", "1",
            )  # fmt: skip
            assert started.returncode == 0, started.stderr
            found = re.search(r"gcs listens on (\S+?)\.\s", started.stdout)
            assert found is not None and found.group(1).startswith(HEAD_IP)
            address = found.group(1)
            joined = _in(
                node_ns, node_root, "-m", "runtime.cli", "start", f"--address={address}",
                "--num-cpus", "1", "--resources", '{"far": 1}',
            )  # fmt: skip
            assert joined.returncode == 0, joined.stderr
            assert f"node at {NODE_IP}" in joined.stdout
            code = (
                "import runtime, numpy as np\n"
                f"runtime.init(address={address!r})\n"
                "@runtime.remote(resources={'far': 1})\n"
                "def far():\n"
                "    return runtime.get_runtime_context().get_node_id(), np.ones(1 << 22)\n"
                "node, array = runtime.get(far.remote())\n"
                "hosts = {n['NodeID']: n['NodeManagerAddress'] for n in runtime.nodes()}\n"
                "print(hosts[node], int(array.sum()))\n"
                "runtime.shutdown()\n"
            )
            result = _in(head_ns, head_root, "-c", code, timeout=120)
            assert result.returncode == 0, result.stderr
            assert result.stdout.split() == [NODE_IP, str(1 << 22)]
        finally:
            _in(node_ns, node_root, "-m", "runtime.cli", "stop")
            _in(head_ns, head_root, "-m", "runtime.cli", "stop")
        assert_no_orphans(head_root)
        assert_no_orphans(node_root)
