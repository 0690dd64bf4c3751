"""Mutual-TLS contexts for peer traffic, built from PEM files.

Both sides present a certificate signed by the cluster's CA and require one from the
other side. Peers are identified by the cluster CA, not by host name (members are often
addressed by IP and the certificate may not list it), so host name checking is off and
the hello frame's node id is what names the peer.
"""

from __future__ import annotations

import ssl
from pathlib import Path


def server_context(cert: str | Path, key: str | Path, ca: str | Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    ctx.load_verify_locations(cafile=str(ca))
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(cert: str | Path, key: str | Path, ca: str | Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    ctx.load_verify_locations(cafile=str(ca))
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
