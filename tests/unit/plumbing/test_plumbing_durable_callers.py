"""Writers that take paths from configs keep them inside the root they apply to.

cloud-config applied to an image (``--root``) confines its batched writes to that root
through daemons/durable, so a link inside the image cannot carry a ``write_files`` entry
onto the host. Ignition resolves config paths chroot-style first (a link out lands back
inside), so its writes end inside the root and are written whole, replacing a link at the
last component instead of writing through it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from flotilla.cloudinit import plan
from flotilla.cloudinit.config import from_tree
from flotilla.cloudinit.execute import ApplyError, Host, apply, observe
from flotilla.cloudinit.rawyaml import load
from flotilla.daemons import durable
from flotilla.ignition import filesystem_entries, units


class _NoSystemd:
    """Nothing here reaches systemd or hostnamed; any call is a test failure."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"systemd {name} called")


def _apply_cloud_config(text: str, root: Path) -> Host:
    host = Host(root, _NoSystemd(), _NoSystemd())  # type: ignore[arg-type]

    async def run() -> None:
        actions = plan.desired_actions(from_tree(load(text)), {})
        await apply(plan.reconcile(actions, await observe(actions, host)), host)

    asyncio.run(run())
    return host


@pytest.mark.unit
def test_cloud_config_write_files_cannot_leave_the_image(tmp_path: Path) -> None:
    root, outside = tmp_path / "image", tmp_path / "host-etc"
    (root / "etc").mkdir(parents=True)
    outside.mkdir()
    (root / "etc" / "conf.d").symlink_to(outside)  # absolute link: the host's directory
    text = ("write_files:\n  - path: /etc/fine\n    content: ok\n"
            "  - path: /etc/conf.d/evil\n    content: pwned\n")
    with pytest.raises(ApplyError, match="escapes"):
        _apply_cloud_config(text, root)
    assert list(outside.iterdir()) == []
    assert (root / "etc" / "fine").read_text() == "ok"  # the step before still lands
    assert [p for p in root.rglob("*") if p.name.startswith(durable.TEMP_PREFIX)] == []


@pytest.mark.unit
def test_cloud_config_on_an_image_writes_inside_it(tmp_path: Path) -> None:
    root = tmp_path / "image"
    (root / "etc" / "real").mkdir(parents=True)
    (root / "etc" / "alias").symlink_to("real")  # relative link inside the image
    host = _apply_cloud_config(
        "write_files:\n  - path: /etc/alias/a.conf\n    content: x\n"
        "    permissions: '0640'\n", root)
    assert host.writes.root == root
    assert (root / "etc" / "real" / "a.conf").read_text() == "x"
    assert (root / "etc" / "real" / "a.conf").stat().st_mode & 0o7777 == 0o640


@pytest.mark.unit
def test_ignition_file_over_a_link_out_replaces_the_link(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "etc").mkdir(parents=True)
    outside.mkdir()
    (outside / "target").write_bytes(b"host")
    (root / "etc" / "f").symlink_to(outside / "target")
    node = {"path": "/etc/f", "overwrite": True, "mode": 0o600,
            "contents": {"source": "data:,new"}}
    item = filesystem_entries.FetchedFile(node, b"new", [])
    filesystem_entries.write_file(str(root), item, filesystem_entries.Owners(str(root)))
    assert (outside / "target").read_bytes() == b"host"
    assert not (root / "etc" / "f").is_symlink()
    assert (root / "etc" / "f").read_bytes() == b"new"
    assert (root / "etc" / "f").stat().st_mode & 0o7777 == 0o600


@pytest.mark.unit
def test_ignition_unit_written_whole_through_a_link_dir_lands_in_the_root(
        tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "etc" / "systemd").mkdir(parents=True)
    outside.mkdir()
    (root / "etc" / "systemd" / "system").symlink_to("/elsewhere")  # chroot: inside root
    units.apply(str(root), {"units": [{"name": "a.service", "contents": "[Unit]\n"}]})
    assert (root / "elsewhere" / "a.service").read_text() == "[Unit]\n"
    assert list(outside.iterdir()) == []
    assert [p for p in root.rglob("*") if p.name.startswith(durable.TEMP_PREFIX)] == []
