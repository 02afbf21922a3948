"""Optional TLS for every TCP connection of a cluster (gRPC and object transfers).

Set ``RUNTIME_TLS_CERT`` and ``RUNTIME_TLS_KEY`` (a PEM certificate chain and
its key; ``runtime start --tls-cert/--tls-key`` set them) and every server
of the cluster serves TLS and every client speaks it. With ``RUNTIME_TLS_CA``
too, it is mutual: servers require clients' certificates, and clients
servers', signed by that CA. Host names are not checked (a cluster's nodes
are addressed by IP and often share one certificate); the CA is what
authenticates. Processes the runtime starts inherit the settings.
"""

from __future__ import annotations

import functools
import os
import ssl

CERT_ENV = "RUNTIME_TLS_CERT"
KEY_ENV = "RUNTIME_TLS_KEY"
CA_ENV = "RUNTIME_TLS_CA"


def enabled() -> bool:
    return bool(os.environ.get(CERT_ENV) and os.environ.get(KEY_ENV))


def check() -> None:
    """Refuses half a configuration at once, naming what is missing or unreadable."""
    cert, key, ca = (os.environ.get(n, "") for n in (CERT_ENV, KEY_ENV, CA_ENV))
    if bool(cert) != bool(key):
        raise ValueError(f"TLS needs both {CERT_ENV} and {KEY_ENV} (only one is set)")
    if ca and not cert:
        raise ValueError(f"{CA_ENV} is set without {CERT_ENV} and {KEY_ENV}")
    for name, path in ((CERT_ENV, cert), (KEY_ENV, key), (CA_ENV, ca)):
        if path and not os.access(path, os.R_OK):
            raise ValueError(f"{name}={path!r} is not a readable file")


@functools.cache
def _contexts(cert: str, key: str, ca: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for context in (server, client):
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key)
        context.set_alpn_protocols(["h2"])  # gRPC over HTTP/2
    client.check_hostname = False
    if ca:
        server.verify_mode = ssl.CERT_REQUIRED
        server.load_verify_locations(ca)
        client.load_verify_locations(ca)
        client.verify_mode = ssl.CERT_REQUIRED
    else:
        client.verify_mode = ssl.CERT_NONE  # encrypted; the token authenticates
    return server, client


def server_context() -> ssl.SSLContext | None:
    if not enabled():
        return None
    return _contexts(os.environ[CERT_ENV], os.environ[KEY_ENV], os.environ.get(CA_ENV, ""))[0]


def client_context() -> ssl.SSLContext | None:
    if not enabled():
        return None
    return _contexts(os.environ[CERT_ENV], os.environ[KEY_ENV], os.environ.get(CA_ENV, ""))[1]
