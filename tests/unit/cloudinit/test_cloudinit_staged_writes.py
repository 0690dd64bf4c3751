"""The batched atomic writer and the executor's use of it.

Files are staged under temp names, made durable with one sync pass, then renamed into
place; anything systemd or hostnamed will read must be in place before that call.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from flotilla.cloudinit import plan
from flotilla.cloudinit.config import from_tree
from flotilla.cloudinit.execute import ApplyError, Host, apply, observe
from flotilla.cloudinit.rawyaml import load
from flotilla.daemons import durable


def _temps(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(durable.TEMP_PREFIX)]


def test_nothing_is_visible_before_commit_and_everything_after(tmp_path: Path) -> None:
    batch = durable.StagedWrites()
    (tmp_path / "old").write_bytes(b"old")
    batch.write(tmp_path / "old", b"new", 0o640)
    batch.write(tmp_path / "a/b/c.conf", b"deep", 0o600)
    batch.symlink(tmp_path / "masked.service", "/dev/null")
    assert (tmp_path / "old").read_bytes() == b"old"
    assert not (tmp_path / "a/b/c.conf").exists()
    assert not (tmp_path / "masked.service").is_symlink()
    batch.commit()
    assert (tmp_path / "old").read_bytes() == b"new"
    assert (tmp_path / "old").stat().st_mode & 0o7777 == 0o640
    assert (tmp_path / "a/b/c.conf").read_bytes() == b"deep"
    assert (tmp_path / "a/b/c.conf").stat().st_mode & 0o7777 == 0o600
    assert os.readlink(tmp_path / "masked.service") == "/dev/null"
    assert _temps(tmp_path) == []
    assert len(batch) == 0


def test_many_files_cost_one_filesystem_sync_plus_one_per_directory(tmp_path: Path) -> None:
    batch = durable.StagedWrites()
    for i in range(30):
        batch.write(tmp_path / "etc" / f"f{i}", b"x", 0o644)
    batch.commit()
    if durable._syncfs_function() is None:
        pytest.fail("syncfs is expected on Linux with glibc")
    # one syncfs for the files, then the new directory and its parent
    assert batch.syncs == 1 + 2


def test_fsync_fallback_gives_the_same_result(tmp_path: Path) -> None:
    results = []
    for use_syncfs in (True, False):
        root = tmp_path / str(use_syncfs)
        batch = durable.StagedWrites(use_syncfs=use_syncfs)
        for i in range(5):
            batch.write(root / f"f{i}", f"{i}".encode(), 0o600)
        batch.commit()
        results.append(sorted((p.name, p.read_bytes(), p.stat().st_mode & 0o777)
                              for p in root.iterdir()))
    assert results[0] == results[1]


def test_later_writes_to_the_same_path_win(tmp_path: Path) -> None:
    batch = durable.StagedWrites()
    batch.write(tmp_path / "f", b"first", 0o644)
    batch.write(tmp_path / "f", b"second", 0o644)
    batch.commit()
    assert (tmp_path / "f").read_bytes() == b"second"
    assert _temps(tmp_path) == []


def test_remove_happens_at_commit(tmp_path: Path) -> None:
    (tmp_path / "gone").write_bytes(b"")
    batch = durable.StagedWrites()
    batch.remove(tmp_path / "gone")
    assert (tmp_path / "gone").exists()
    batch.commit()
    assert not (tmp_path / "gone").exists()


def test_discard_leaves_destinations_and_no_temp_files(tmp_path: Path) -> None:
    (tmp_path / "keep").write_bytes(b"keep")
    batch = durable.StagedWrites()
    batch.write(tmp_path / "keep", b"replaced", 0o644)
    batch.write(tmp_path / "new", b"new", 0o644)
    batch.discard()
    assert (tmp_path / "keep").read_bytes() == b"keep"
    assert not (tmp_path / "new").exists()
    assert _temps(tmp_path) == []


def test_a_parent_that_is_a_file_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "etc").write_text("not a dir")
    batch = durable.StagedWrites()
    with pytest.raises(NotADirectoryError, match="etc"):
        batch.write(tmp_path / "etc/x/y", b"", 0o644)


def test_owner_is_set_on_the_staged_file(tmp_path: Path) -> None:
    # Any owner as root; as another user, only one's own (the call is still made).
    owner = (1234, 4321) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    batch = durable.StagedWrites()
    batch.write(tmp_path / "owned", b"x", 0o600, *owner)
    batch.commit()
    st = (tmp_path / "owned").stat()
    assert (st.st_uid, st.st_gid) == owner


# -- the executor ------------------------------------------------------------------------


class CheckingSystemd:
    """A systemd stand-in that records, at each call, which unit files are in place."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.seen: list[tuple[str, list[str]]] = []

    def _files(self) -> list[str]:
        base = self.root / "etc/systemd/system"
        return sorted(str(p.relative_to(base)) for p in base.rglob("*")
                      if p.is_file() or p.is_symlink()) if base.exists() else []

    async def unit_state(self, name: str) -> tuple[str, str, str]:
        return "loaded", "inactive", "disabled"

    async def daemon_reload(self) -> None:
        self.seen.append(("daemon-reload", self._files()))

    async def enable_unit_files(self, names: list[str], runtime: bool) -> None:
        self.seen.append((f"enable {names[0]}", self._files()))

    async def unit_command(self, name: str, command: str) -> None:
        if name == "boom.service":
            raise RuntimeError("job failed")
        self.seen.append((f"{command} {name}", self._files()))

    async def start_transient_service(self, name: str, argv: list[str]) -> None:
        raise AssertionError("not used")

    async def static_hostname(self) -> str:
        return ""

    async def set_static_hostname(self, hostname: str) -> None:
        self.seen.append((f"hostname {hostname}", self._files()))


def _apply(text: str, host: Host) -> int:
    async def run() -> int:
        actions = plan.desired_actions(from_tree(load(text)), {})
        return await apply(plan.reconcile(actions, await observe(actions, host)), host)

    return asyncio.run(run())


UNITS = """\
coreos:
  units:
    - name: a.service
      content: "[Service]\\nExecStart=/bin/true\\n[Install]\\nWantedBy=multi-user.target\\n"
      enable: true
      command: start
      drop-ins:
        - name: 10-x.conf
          content: "[Service]\\nEnvironment=X=1\\n"
    - name: m.service
      mask: true
"""


def test_unit_files_are_in_place_before_systemd_is_asked(tmp_path: Path) -> None:
    systemd = CheckingSystemd(tmp_path)
    host = Host(tmp_path, systemd, systemd)
    assert _apply(UNITS, host) == 6
    everything = ["a.service", "a.service.d/10-x.conf", "m.service"]
    assert systemd.seen == [("enable a.service", everything), ("daemon-reload", everything),
                            ("start a.service", everything)]
    assert host.writes.commit_seconds > 0
    assert _temps(tmp_path) == []


def test_a_failing_step_still_leaves_earlier_files_in_place(tmp_path: Path) -> None:
    systemd = CheckingSystemd(tmp_path)
    host = Host(tmp_path, systemd, systemd)
    text = ("write_files:\n  - path: /etc/one\n    content: one\n"
            "coreos:\n  units:\n    - name: boom.service\n      content: x\n"
            "      command: start\n")
    with pytest.raises(ApplyError, match=r"start boom\.service"):
        _apply(text, host)
    assert (tmp_path / "etc/one").read_text() == "one"
    assert (tmp_path / "etc/systemd/system/boom.service").read_text() == "x"
    assert _temps(tmp_path) == []


def test_write_failure_is_an_apply_error_naming_the_file(tmp_path: Path) -> None:
    systemd = CheckingSystemd(tmp_path)
    host = Host(tmp_path, systemd, systemd)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/blocker").write_text("a file where a directory is wanted")
    text = ("write_files:\n  - path: /etc/ok\n    content: ok\n"
            "  - path: /etc/blocker/inner\n    content: x\n")
    with pytest.raises(ApplyError, match="/etc/blocker/inner"):
        _apply(text, host)
    # The step before the failure is reported done, and its file is in place.
    assert (tmp_path / "etc/ok").read_text() == "ok"
    assert _temps(tmp_path) == []


def test_enables_between_unit_writes_share_one_commit(tmp_path: Path) -> None:
    units = "".join(f"    - name: u{i}.service\n      content: x{i}\n      enable: true\n"
                    for i in range(5))
    systemd = CheckingSystemd(tmp_path)
    host = Host(tmp_path, systemd, systemd)
    lines: list[str] = []

    async def run() -> int:
        actions = plan.desired_actions(from_tree(load("coreos:\n  units:\n" + units)), {})
        return await apply(plan.reconcile(actions, await observe(actions, host)), host,
                           lines.append)

    assert asyncio.run(run()) == 11
    assert host.writes.commits == 1
    every_unit = [f"u{i}.service" for i in range(5)]
    assert [seen for _call, seen in systemd.seen] == [every_unit] * 6
    # Enables are reported when they run: after the unit files, before the reload.
    assert [line.split()[1] for line in lines] == ["write"] * 5 + ["enable"] * 5 + [
        "daemon-reload"]
