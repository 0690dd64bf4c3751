"""Client TLS: https:// listeners with etcd's --cert-file/--key-file, optional client certs."""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.process.kv.harness import REPO, Server, free_port, start_kvd

HOST = "127.0.0.66"


def _issue(path: Path, name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
           | None, is_ca: bool = False) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer[0].subject if issuer else subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True))
    if not is_ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False)
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return cert, key


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    ca = _issue(tmp_path / "ca", "test CA", None, is_ca=True)
    _issue(tmp_path / "server", HOST, ca)
    _issue(tmp_path / "client", "client", ca)
    _issue(tmp_path / "other-ca", "other CA", None, is_ca=True)
    return tmp_path


@pytest.mark.timeout(60)
def test_https_listener_serves_tls_only(tmp_path: Path, pki: Path) -> None:
    port = free_port(HOST)
    url = f"https://{HOST}:{port}"
    server = start_kvd(tmp_path, HOST, "--cert-file", str(pki / "server.crt"),
                       "--key-file", str(pki / "server.key"), port=port, ready_url=url,
                       ready_verify=str(pki / "ca.crt"), scheme="https")
    try:
        put = requests.put(f"{url}/v2/keys/secure", data={"value": "v"},
                           verify=str(pki / "ca.crt"), timeout=5)
        assert put.status_code == 201 and put.json()["node"]["value"] == "v"
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{url}/v2/keys/secure", verify=str(pki / "other-ca.crt"), timeout=5)
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"http://{HOST}:{port}/v2/keys/secure", timeout=5)
    finally:
        server.stop()


def start_with_client_auth(tmp_path: Path, pki: Path) -> tuple[Server, str, tuple[str, str]]:
    """kvd on https requiring a client certificate from the test CA; returns the server,
    its URL and the client's (certificate, key)."""
    port = free_port(HOST)
    url = f"https://{HOST}:{port}"
    client = (str(pki / "client.crt"), str(pki / "client.key"))
    server = start_kvd(tmp_path, HOST, "--cert-file", str(pki / "server.crt"),
                       "--key-file", str(pki / "server.key"), "--trusted-ca-file",
                       str(pki / "ca.crt"), "--client-cert-auth",
                       "--advertise-client-urls", url, port=port, ready_url=url,
                       ready_verify=str(pki / "ca.crt"), ready_cert=client, scheme="https")
    return server, url, client


@pytest.mark.timeout(60)
def test_client_certificates_required_with_client_cert_auth(tmp_path: Path, pki: Path) -> None:
    server, url, client = start_with_client_auth(tmp_path, pki)
    try:
        ok = requests.put(f"{url}/v2/keys/m", data={"value": "1"}, cert=client,
                          verify=str(pki / "ca.crt"), timeout=5)
        assert ok.status_code == 201
        with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
            requests.get(f"{url}/v2/keys/m", verify=str(pki / "ca.crt"), timeout=5)
    finally:
        server.stop()


def test_https_without_certificate_is_a_named_config_error(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "flotilla.daemons.kv", "--data-dir",
                           str(tmp_path / "d"), "--listen-client-urls",
                           f"https://{HOST}:{free_port(HOST)}"],
                          capture_output=True, text=True, timeout=30, cwd=REPO)
    assert proc.returncode == 2
    assert "--cert-file" in proc.stderr



def _kvctl(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flotilla.daemons.kvctl", *argv],
                          capture_output=True, text=True, timeout=30, cwd=REPO,
                          env={**os.environ, **(env or {})})


@pytest.mark.timeout(90)
def test_kvctl_speaks_tls_with_etcdctls_flags_and_variables(tmp_path: Path, pki: Path) -> None:
    server, url, client = start_with_client_auth(tmp_path, pki)
    flags = ["--endpoints", url, "--ca-file", str(pki / "ca.crt"),
             "--cert-file", client[0], "--key-file", client[1]]
    try:
        done = _kvctl(*flags, "set", "/tls/a", "one")
        assert (done.returncode, done.stdout) == (0, "one\n"), done.stderr
        done = _kvctl("--endpoints", url, "get", "/tls/a",
                      env={"ETCDCTL_CA_FILE": str(pki / "ca.crt"),
                           "ETCDCTL_CERT_FILE": client[0], "ETCDCTL_KEY_FILE": client[1]})
        assert (done.returncode, done.stdout) == (0, "one\n"), done.stderr
        health = _kvctl(*flags, "cluster-health")
        assert health.returncode == 0, health.stdout + health.stderr
        assert "got healthy result from " + url in health.stdout
        # Without a client certificate the server turns kvctl away: no endpoint answered.
        refused = _kvctl("--endpoints", url, "--ca-file", str(pki / "ca.crt"),
                         "get", "/tls/a")
        assert refused.returncode == 2, refused.stdout + refused.stderr
        # A server certificate from another CA is not trusted.
        untrusted = _kvctl("--endpoints", url, "--ca-file", str(pki / "other-ca.crt"),
                           "--cert-file", client[0], "--key-file", client[1], "get", "/tls/a")
        assert untrusted.returncode == 2
    finally:
        server.stop()


def test_kvctl_tls_flags_are_checked_before_any_request(pki: Path) -> None:
    missing = _kvctl("--cert-file", str(pki / "client.crt"), "get", "/a")
    assert missing.returncode == 1 and "--cert-file needs --key-file" in missing.stderr
    unreadable = _kvctl("--ca-file", str(pki / "absent.crt"), "get", "/a")
    assert unreadable.returncode == 1
    assert "--ca-file: No such file or directory" in unreadable.stderr
    duration = _kvctl("--timeout", "1m30s", "--endpoints", "http://127.0.0.1:9", "get", "/a")
    assert duration.returncode == 2  # parsed, then nothing answered
    bad = _kvctl("--timeout", "soon", "get", "/a")
    assert bad.returncode == 1 and "invalid duration 'soon'" in bad.stderr
