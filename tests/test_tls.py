"""TLS over loopback: a two-node cluster whose every TCP connection is TLS,
mutual with a CA, with certificates made by trustme."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from conftest import cluster_of
from grpclib.client import Channel
from grpclib.exceptions import StreamTerminatedError

import runtime
from runtime._private import auth, tls
from runtime.protocol.rt import Empty, GcsStub
from runtime.util.scheduling_strategies import NodeAffinitySchedulingStrategy

trustme = pytest.importorskip("trustme", reason="trustme makes the test certificates")

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def certificates(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A CA and one certificate for 127.0.0.1, in the TLS environment."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = {name: str(tmp_path / f"{name}.pem") for name in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(paths["ca"])
    cert.cert_chain_pems[0].write_to_path(paths["cert"])
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(paths["cert"], append=True)
    cert.private_key_pem.write_to_path(paths["key"])
    monkeypatch.setenv(tls.CERT_ENV, paths["cert"])
    monkeypatch.setenv(tls.KEY_ENV, paths["key"])
    monkeypatch.setenv(tls.CA_ENV, paths["ca"])
    yield ca


def test_a_two_node_cluster_over_mutual_tls(certificates: Any) -> None:
    with cluster_of(head_node_args={"num_cpus": 1}) as cluster:
        other = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        runtime.init(address=cluster.address)
        assert cluster.head is not None

        @runtime.remote(num_cpus=1)
        def make() -> Any:
            return np.arange(1 << 20)  # 8 MiB: in the other node's store

        on_other = NodeAffinitySchedulingStrategy(other.node_id, soft=False)
        array = runtime.get(make.options(scheduling_strategy=on_other).remote(), timeout=60)
        assert int(array.sum()) == (1 << 20) * ((1 << 20) - 1) // 2  # pulled over TLS

        host, port = cluster.head.gcs_address
        # Plain text is not spoken on the gcs port ...
        with socket.create_connection((host, port), timeout=5) as plain:
            plain.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            with pytest.raises((ConnectionError, TimeoutError, OSError)):
                if not plain.recv(1):
                    raise ConnectionError("closed")
        # ... and a TLS client without a certificate from the CA is refused.
        stranger = ssl.create_default_context(cafile=os.environ[tls.CA_ENV])
        stranger.check_hostname = False
        stranger.set_alpn_protocols(["h2"])

        async def call() -> Any:
            channel = Channel(host, port, ssl=stranger)
            auth.sign_channel(channel, cluster.head.token)  # type: ignore[union-attr]
            try:
                return await asyncio.wait_for(GcsStub(channel).get_all_nodes(Empty()), 10)
            finally:
                channel.close()

        with pytest.raises((ssl.SSLError, ConnectionError, OSError, StreamTerminatedError)):
            asyncio.run(call())


def test_half_a_tls_configuration_is_refused_at_once(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(tls.CERT_ENV, str(tmp_path / "cert.pem"))
    monkeypatch.delenv(tls.KEY_ENV, raising=False)
    with pytest.raises(ValueError, match="RUNTIME_TLS_KEY"):
        runtime.init(num_cpus=1)
    assert not runtime.is_initialized()
