"""URL, EC2-metadata and kernel-command-line sources against a local HTTP server on
127.0.0.1: retries on 5xx, 404 means not there, metadata merged, first source wins."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from flotilla.cloudinit import datasource as ds

CONFIG = b"#cloud-config\nwrite_files:\n  - path: /etc/from-url\n    content: $private_ipv4\n"


class Server:
    def __init__(self) -> None:
        self.routes: dict[str, bytes] = {}
        self.failures: dict[str, int] = {}
        self.hits: dict[str, int] = {}
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits[self.path] = owner.hits.get(self.path, 0) + 1
                if owner.failures.get(self.path, 0) > 0:
                    owner.failures[self.path] -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                body = owner.routes.get(self.path)
                self.send_response(404 if body is None else 200)
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    try:
        yield s
    finally:
        s.close()


FAST = ds.HttpPolicy(timeout=2.0, attempts=5, first_backoff=0.01, max_backoff=0.05)


@pytest.mark.timeout(30)
def test_url_retries_5xx_then_succeeds(server: Server) -> None:
    server.routes["/ud"] = CONFIG
    server.failures["/ud"] = 3
    assert ds.http_get(f"{server.url}/ud", FAST) == CONFIG
    assert server.hits["/ud"] == 4


@pytest.mark.timeout(30)
def test_url_gives_up_after_its_attempts_and_404_is_not_retried(server: Server) -> None:
    server.routes["/ud"] = CONFIG
    server.failures["/ud"] = 10
    with pytest.raises(ds.FetchError, match="giving up after 5 attempts"):
        ds.http_get(f"{server.url}/ud", FAST)
    with pytest.raises(ds.NotFound):
        ds.http_get(f"{server.url}/missing", FAST)
    assert server.hits["/missing"] == 1


@pytest.mark.timeout(30)
def test_ec2_metadata_keys_hostname_and_addresses(server: Server) -> None:
    base = "/2009-04-04"
    server.routes.update({
        f"{base}/": b"meta-data\nuser-data\n",
        f"{base}/user-data": CONFIG,
        f"{base}/meta-data/public-keys": b"0=mykey\n1=other\n",
        f"{base}/meta-data/public-keys/0/openssh-key": b"ssh-rsa AAAA my\n",
        f"{base}/meta-data/public-keys/1/openssh-key": b"ssh-rsa BBBB other\n",
        f"{base}/meta-data/hostname": b"ip-10-0-0-5.internal extra\n",
        f"{base}/meta-data/local-ipv4": b"10.0.0.5",
    })
    source = ds.Ec2MetadataSource(server.url, FAST)
    assert source.available()
    user_data, meta = source.fetch()
    assert user_data == CONFIG
    assert meta.hostname == "ip-10-0-0-5.internal"
    assert meta.public_keys == {"mykey": "ssh-rsa AAAA my", "other": "ssh-rsa BBBB other"}
    assert meta.addresses() == {"private_ipv4": "10.0.0.5"}  # public-ipv4 404 = empty
    assert ds.merge_metadata_keys(["k0"], meta) == ["k0", "ssh-rsa AAAA my", "ssh-rsa BBBB other"]


@pytest.mark.timeout(30)
def test_first_available_wins_and_deadline_bounds_the_wait(server: Server, tmp_path) -> None:
    server.routes["/ud"] = CONFIG
    missing = ds.FileSource(tmp_path / "nope")
    url = ds.UrlSource(f"{server.url}/ud", FAST)
    assert ds.first_available([missing, url], deadline=10, first_backoff=0.01) is url
    assert ds.first_available([missing], deadline=0.3, first_backoff=0.01) is None


def test_cloud_config_url_on_the_command_line() -> None:
    line = "ro cloud_config_url=http://a/1 quiet cloud-config-url=http://b/2"
    assert ds.cloud_config_url(line) == "http://b/2"
    assert ds.cloud_config_url("ro quiet") == ""


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (root / "etc").mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "flotilla.cloudinit.main", "--root", str(root),
         "--http-attempts", "5", "--timeout", "10", *args],
        capture_output=True, text=True, timeout=60, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("COREOS_")})


@pytest.mark.timeout(60)
def test_cli_from_url_and_from_proc_cmdline(server: Server, tmp_path: Path) -> None:
    server.routes["/ud"] = CONFIG
    server.failures["/ud"] = 1
    result = _cli(tmp_path / "r1", "--from-url", f"{server.url}/ud")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "r1/etc/from-url").read_text() == ""
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(f"root=/dev/sda cloud-config-url={server.url}/ud\n")
    result = _cli(tmp_path / "r2", "--from-proc-cmdline", "--cmdline-path", str(cmdline))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "r2/etc/from-url").exists()
    result = _cli(tmp_path / "r3", "--from-url", f"{server.url}/missing", "--timeout", "0.5")
    assert result.returncode == 1
    assert "no datasources available in time" in result.stderr


@pytest.mark.timeout(60)
def test_cli_from_ec2_metadata_substitutes_addresses_and_merges_hostname(
        server: Server, tmp_path: Path) -> None:
    base = "/2009-04-04"
    server.routes.update({
        f"{base}/": b"ok", f"{base}/user-data": CONFIG,
        f"{base}/meta-data/hostname": b"meta-host",
        f"{base}/meta-data/local-ipv4": b"10.1.2.3",
    })
    root = tmp_path / "r"
    result = _cli(root, "--from-ec2-metadata", server.url)
    assert result.returncode == 0, result.stderr
    assert (root / "etc/from-url").read_text() == "10.1.2.3"
    assert (root / "etc/hostname").read_text() == "meta-host\n"
    assert (root / "etc/environment").read_text() == "COREOS_PRIVATE_IPV4=10.1.2.3\n"


def test_config_drive_directory(tmp_path: Path) -> None:
    latest = tmp_path / "openstack/latest"
    latest.mkdir(parents=True)
    (latest / "user_data").write_bytes(CONFIG)
    (latest / "meta_data.json").write_text(
        '{"hostname": "cd-host", "public_keys": {"k": "ssh-rsa CCCC k"}}')
    source = ds.ConfigDriveSource(tmp_path)
    assert source.available()
    user_data, meta = source.fetch()
    assert user_data == CONFIG
    assert (meta.hostname, meta.public_keys) == ("cd-host", {"k": "ssh-rsa CCCC k"})
    assert not ds.ConfigDriveSource(tmp_path / "none").available()


EC2 = "/2009-04-04"
CORE_PASSWD = "root:x:0:0:root:/root:/bin/bash\ncore:x:500:500:Core:/home/core:/bin/bash\n"


def _ec2_root(tmp_path: Path) -> Path:
    root = tmp_path / "r"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text(CORE_PASSWD)
    (root / "home/core").mkdir(parents=True)
    return root


@pytest.mark.timeout(60)
def test_ec2_metadata_keys_follow_the_user_data_keys_and_user_data_hostname_wins(
        server: Server, tmp_path: Path) -> None:
    server.routes.update({
        f"{EC2}/": b"ok",
        f"{EC2}/user-data": (b"#cloud-config\nhostname: from-user-data\n"
                             b"ssh_authorized_keys:\n  - ssh-ed25519 AAAAuser user@x\n"
                             b"write_files:\n  - path: /etc/addr\n"
                             b"    content: '$public_ipv4 \\$public_ipv4'\n"),
        f"{EC2}/meta-data/hostname": b"meta-host.internal extra",
        f"{EC2}/meta-data/public-ipv4": b"198.51.100.7",
        f"{EC2}/meta-data/public-keys": b"1=zeta\n0=alpha\n",
        f"{EC2}/meta-data/public-keys/0/openssh-key": b"ssh-rsa AAAAalpha alpha\n",
        f"{EC2}/meta-data/public-keys/1/openssh-key": b"ssh-rsa AAAAzeta zeta\n",
    })
    root = _ec2_root(tmp_path)
    result = _cli(root, "--from-ec2-metadata", server.url)
    assert result.returncode == 0, result.stderr
    assert (root / "etc/hostname").read_text() == "from-user-data\n"
    assert "overrides metadata hostname meta-host.internal" in result.stderr
    keys = (root / "home/core/.ssh/authorized_keys.d/coreos-cloudinit").read_text()
    assert keys == "ssh-ed25519 AAAAuser user@x\nssh-rsa AAAAalpha alpha\nssh-rsa AAAAzeta zeta\n"
    # The address comes from the metadata; an escaped token stays literal.
    assert (root / "etc/addr").read_text() == "198.51.100.7 $public_ipv4"
    assert (root / "etc/environment").read_text() == "COREOS_PUBLIC_IPV4=198.51.100.7\n"


@pytest.mark.timeout(60)
def test_ec2_without_user_data_applies_the_metadata_alone(server: Server,
                                                          tmp_path: Path) -> None:
    server.routes.update({
        f"{EC2}/": b"ok",
        f"{EC2}/meta-data/hostname": b"only-meta",
        f"{EC2}/meta-data/public-keys": b"0=k\n",
        f"{EC2}/meta-data/public-keys/0/openssh-key": b"ssh-rsa AAAAk k\n",
    })
    root = _ec2_root(tmp_path)
    result = _cli(root, "--from-ec2-metadata", server.url)
    assert result.returncode == 0, result.stderr
    assert (root / "etc/hostname").read_text() == "only-meta\n"
    assert (root / "home/core/.ssh/authorized_keys.d/coreos-cloudinit").read_text() == (
        "ssh-rsa AAAAk k\n")


@pytest.mark.timeout(60)
def test_ignition_user_data_is_left_alone_metadata_and_all(server: Server,
                                                           tmp_path: Path) -> None:
    import gzip

    server.routes.update({
        f"{EC2}/": b"ok",
        f"{EC2}/user-data": gzip.compress(b'{"ignition": {"version": "3.4.0"}}'),
        f"{EC2}/meta-data/hostname": b"meta-host",
        f"{EC2}/meta-data/public-keys": b"0=k\n",
        f"{EC2}/meta-data/public-keys/0/openssh-key": b"ssh-rsa AAAAk k\n",
    })
    root = _ec2_root(tmp_path)
    before = sorted(str(p) for p in root.rglob("*"))
    result = _cli(root, "--from-ec2-metadata", server.url)
    assert result.returncode == 0, result.stderr
    assert "Detected an Ignition config. Exiting..." in result.stdout
    assert sorted(str(p) for p in root.rglob("*")) == before
