"""locksmithctl over TLS to kvd and etcd: a CA file alone is enough (users suffered from
locksmith demanding a client certificate, Flatcar#948), and a client certificate works
where the store demands one."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.process.fleet.harness import BACKENDS, free_port, store_command, wait_for
from tests.process.fleet.test_fleet_tls_socket import _cert, _write

from .harness import ctl

HOST = "127.0.0.40"


def certificates(tmp_path: Path) -> dict[str, str]:
    ca_key, srv_key, cli_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _cert("test-ca", ca_key, "test-ca", ca_key, ca=True)
    srv = _cert("etcd", ca_key, "test-ca", srv_key, ca=False,
                usage=[ExtendedKeyUsageOID.SERVER_AUTH], ip=HOST)
    cli = _cert("locksmith", ca_key, "test-ca", cli_key, ca=False,
                usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
    return {"ca": _write(tmp_path / "ca.pem", cert=ca),
            "srv": _write(tmp_path / "srv.pem", cert=srv),
            "srvkey": _write(tmp_path / "srv.key", key=srv_key),
            "cli": _write(tmp_path / "cli.pem", cert=cli),
            "clikey": _write(tmp_path / "cli.key", key=cli_key)}


def start_tls_store(backend: str, tmp_path: Path, files: dict[str, str],
                    client_auth: bool) -> tuple[subprocess.Popen[bytes], str]:
    port, peer = free_port(HOST), free_port(HOST)
    url, peer_url = f"https://{HOST}:{port}", f"http://{HOST}:{peer}"
    # etcd asks every client for a certificate once it has a trusted CA: only then
    extra = ["--trusted-ca-file", files["ca"], "--client-cert-auth"] if client_auth else []
    with open(tmp_path / "store.log", "wb") as log:
        proc = subprocess.Popen(
            [*store_command(backend), "--enable-v2", "--name", "tls",
             "--data-dir", str(tmp_path / "data"),
             "--listen-client-urls", url, "--advertise-client-urls", url,
             "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
             "--initial-cluster", f"tls={peer_url}", "--cert-file", files["srv"],
             "--key-file", files["srvkey"], *extra],
            stdout=log, stderr=subprocess.STDOUT)
    return proc, url


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_ca_file_alone_is_enough(tmp_path: Path, backend: str) -> None:
    files = certificates(tmp_path)
    proc, url = start_tls_store(backend, tmp_path, files, client_auth=False)
    group = f"tls-{uuid.uuid4().hex[:6]}"
    try:
        run = wait_for(lambda: (r := ctl("-endpoint", url, "-etcd-cafile", files["ca"],
                                         "-group", group, "status")).returncode == 0 and r,
                       30, f"{backend} over TLS")
        assert run.stdout == "Available: 1\nMax: 1\n"
        run = ctl("-endpoint", url, "-etcd-cafile", files["ca"], "-group", group, "lock", "m1")
        assert (run.returncode, run.stderr) == (0, "")
        # without the CA the server is not trusted
        run = ctl("-endpoint", url, "-group", group, "status")
        assert run.returncode == 1
        assert run.stderr.startswith("Error initializing etcd client: ")
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.parametrize("backend", BACKENDS[:1])
def test_client_certificates_where_the_store_demands_them(tmp_path: Path, backend: str) -> None:
    files = certificates(tmp_path)
    proc, url = start_tls_store(backend, tmp_path, files, client_auth=True)
    tls = ("-etcd-cafile", files["ca"], "-etcd-certfile", files["cli"],
           "-etcd-keyfile", files["clikey"])
    try:
        wait_for(lambda: ctl("-endpoint", url, *tls, "status").returncode == 0, 30,
                 f"{backend} over TLS with a client certificate")
        run = ctl("-endpoint", url, "-etcd-cafile", files["ca"], "status")
        assert run.returncode == 1
        run = ctl("-endpoint", url, "-etcd-cafile", files["ca"], "-etcd-keyfile",
                  files["clikey"], "status")
        assert (run.returncode, run.stderr) == (
            1, "Error initializing etcd client: -etcd-keyfile needs -etcd-certfile\n")
    finally:
        proc.kill()
        proc.wait(10)
