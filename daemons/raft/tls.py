"""Mutual-TLS contexts for peer traffic, built from PEM files.

Both sides present a certificate signed by the cluster's CA and require one from the
other side. Peers are identified by the cluster CA, not by host name (members are often
addressed by IP and the certificate may not list it), so host name checking is off and
the hello frame's node id is what names the peer.
"""

from __future__ import annotations

import ssl
from pathlib import Path


def server_context(cert: str | Path, key: str | Path, ca: str | Path | None,
                   *, require_client_cert: bool = True) -> ssl.SSLContext:
    """The listening side; ``require_client_cert=False`` also serves peers without one."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    if ca:
        ctx.load_verify_locations(cafile=str(ca))
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_NONE
    return ctx


def client_context(cert: str | Path | None, key: str | Path | None,
                   ca: str | Path | None) -> ssl.SSLContext:
    """The dialling side: presents ``cert`` when given, checks the peer against ``ca``.

    Without a CA the peer's certificate is not verified (etcd's behaviour when no
    ``--peer-trusted-ca-file`` is given): the link is encrypted, not authenticated.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert and key:
        ctx.load_cert_chain(str(cert), str(key))
    ctx.check_hostname = False
    if ca:
        ctx.load_verify_locations(cafile=str(ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
