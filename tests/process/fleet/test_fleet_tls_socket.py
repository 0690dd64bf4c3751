"""TLS client certificates to the store (kvd and etcd), and the API on an activated /
root-only unix socket."""

from __future__ import annotations

import asyncio
import datetime
import http.client
import ipaddress
import os
import socket
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from flotilla.daemons.kvclient import ClusterUnavailable, KVClient

from .harness import BACKENDS, PYTHON, REPO, Store, free_port, store_command, wait_for


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _cert(subject: str, issuer_key, issuer: str, key, *, ca: bool, usage=None, ip=None):
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    if ip:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
            critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert=None, key=None) -> str:
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(path)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
def test_kvclient_uses_client_certificates(tmp_path: Path, backend: str) -> None:
    host = "127.0.0.32"
    ca_key, srv_key, cli_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _cert("test-ca", ca_key, "test-ca", ca_key, ca=True)
    srv = _cert("etcd", ca_key, "test-ca", srv_key, ca=False,
                usage=[ExtendedKeyUsageOID.SERVER_AUTH], ip=host)
    cli = _cert("fleet", ca_key, "test-ca", cli_key, ca=False,
                usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
    files = {
        "ca": _write(tmp_path / "ca.pem", cert=ca),
        "srv": _write(tmp_path / "srv.pem", cert=srv),
        "srvkey": _write(tmp_path / "srv.key", key=srv_key),
        "cli": _write(tmp_path / "cli.pem", cert=cli),
        "clikey": _write(tmp_path / "cli.key", key=cli_key),
    }
    port, peer = free_port(host), free_port(host)
    url, peer_url = f"https://{host}:{port}", f"http://{host}:{peer}"
    with open(tmp_path / "store.log", "wb") as log:
        proc = subprocess.Popen(
            [*store_command(backend), "--enable-v2", "--name", "tls",
             "--data-dir", str(tmp_path / "data"),
             "--listen-client-urls", url, "--advertise-client-urls", url,
             "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
             "--initial-cluster", f"tls={peer_url}", "--cert-file", files["srv"],
             "--key-file", files["srvkey"], "--trusted-ca-file", files["ca"],
             "--client-cert-auth"], stdout=log, stderr=subprocess.STDOUT)
    try:
        async def with_cert() -> str:
            async with KVClient([url], cafile=files["ca"], certfile=files["cli"],
                                keyfile=files["clikey"]) as kv:
                await kv.set("/tls/x", "secret")
                return (await kv.get("/tls/x")).node.value or ""

        assert wait_for(lambda: asyncio.run(with_cert()) == "secret", 20, f"{backend} over TLS")

        async def without_cert() -> None:
            async with KVClient([url], cafile=files["ca"], request_timeout=2) as kv:
                await kv.get("/tls/x")

        with pytest.raises(ClusterUnavailable):
            asyncio.run(without_cert())
    finally:
        proc.kill()
        proc.wait(10)


def _get(path: str, url: str) -> tuple[int, bytes]:
    class Unix(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.settimeout(5)
            self.sock.connect(path)

    connection = Unix("localhost", timeout=5)
    try:
        connection.request("GET", url)
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


@pytest.mark.timeout(60)
def test_api_on_activated_socket_and_own_socket_is_root_only(store: Store) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="fleet-sock-"))
    activated = workdir / "activated.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(activated))
    listener.listen()
    own = workdir / "own.sock"
    (workdir / "fleet.conf").write_text("")
    args = [PYTHON, "-m", "flotilla.daemons.fleet", "--config", str(workdir / "fleet.conf"),
            f"--etcd_servers={store.url}", "--etcd_key_prefix=/sock_test/",
            "--machine_id=50c4e7", "--systemd=standin", f"--units_directory={workdir}/u",
            "--public_ip=127.0.0.1"]
    # systemd hands the socket over as fd 3 with LISTEN_PID/LISTEN_FDS set for fleetd.
    command = ["sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"', "fleetd", *args]
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    first = subprocess.Popen(command, cwd=REPO, env=env, pass_fds=(3,),
                             preexec_fn=lambda: os.dup2(listener.fileno(), 3),
                             stderr=subprocess.DEVNULL)
    second = None
    try:
        # The API answers as soon as the socket is served; the machine registers just after.
        status, body = wait_for(
            lambda: (answer := _get(str(activated), "/fleet/v1/machines"))[0] == 200
            and b"50c4e7" in answer[1] and answer,
            20, "the machine listed through the activated socket")
        assert status == 200 and b"50c4e7" in body
        assert not own.exists()
        second = subprocess.Popen(
            [*args[:-4], "--machine_id=50c4e8", "--systemd=standin",
             f"--units_directory={workdir}/u2", "--public_ip=127.0.0.1",
             f"--api_socket={own}"], cwd=REPO, env=env, stderr=subprocess.DEVNULL)
        wait_for(own.exists, 20, "fleetd to create its own socket")
        assert stat.S_IMODE(own.stat().st_mode) == 0o600
        assert wait_for(lambda: _get(str(own), "/fleet/v1/units")[0] == 200, 10, "own socket")
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.terminate()
                proc.wait(20)
        listener.close()
        subprocess.run(["rm", "-rf", str(workdir)], check=False)
