"""Our GPT attribute writes side by side with Debian's cgpt and sgdisk on real GPT images.

Images are made by sgdisk with the CoreOS layout's USR-A/USR-B entries; what we write,
cgpt and sgdisk must read back (and sgdisk must find the table sound), and what cgpt
writes, we must read. A damaged or split table is refused and left as it was.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from flotilla.daemons.update import disk, gpt, gptprio

MiB = 1 << 20


def run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout


@pytest.fixture
def image(tmp_path: Path) -> Path:
    for tool in ("sgdisk", "cgpt"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: tests/setup.sh installs it (gdisk, cgpt)")
    path = tmp_path / "disk.img"
    with path.open("wb") as f:
        f.truncate(64 * MiB)
    run("sgdisk", "-o",
        "-n", "1:2048:+8M", "-t", "1:8300", "-c", "1:ROOT",
        "-n", "3:0:+16M", "-t", f"3:{gptprio.USR_TYPE_GUID}", "-c", "3:USR-A",
        "-u", f"3:{gptprio.USR_A_UUID}",
        "-n", "4:0:+16M", "-t", f"4:{gptprio.USR_TYPE_GUID}", "-c", "4:USR-B",
        "-u", f"4:{gptprio.USR_B_UUID}", str(path))
    return path


def cgpt_fields(path: Path, number: int) -> gptprio.Flags:
    def field(flag: str) -> int:
        return int(run("cgpt", "show", "-i", str(number), flag, str(path)).strip(), 0)
    return gptprio.Flags(priority=field("-P"), tries=field("-T"), successful=bool(field("-S")))


def test_table_reads_as_sgdisk_made_it(image: Path) -> None:
    table = disk.read_table(str(image))
    assert [(s.number, s.label, s.is_usr) for s in table.slots] == [
        (1, "ROOT", False), (3, "USR-A", True), (4, "USR-B", True)]
    assert table.slots[1].uuid == gptprio.USR_A_UUID
    assert gptprio.other_slot(table.slots, 3).uuid == gptprio.USR_B_UUID


def test_our_attribute_writes_read_back_in_cgpt_and_sgdisk(image: Path) -> None:
    slots = disk.read_table(str(image)).slots
    slots = gptprio.mark_good(slots, 3)
    slots = gptprio.after_install(slots, 4)
    table = disk.set_attributes(str(image), {s.number: s.attributes for s in slots if s.is_usr})
    assert cgpt_fields(image, 3) == gptprio.Flags(priority=1, tries=0, successful=True)
    assert cgpt_fields(image, 4) == gptprio.Flags(priority=2, tries=1, successful=False)
    assert [s.flags for s in table.slots if s.is_usr] == [cgpt_fields(image, 3),
                                                          cgpt_fields(image, 4)]
    verify = run("sgdisk", "-v", str(image))
    assert "No problems found" in verify, verify
    # Both copies carry the change: sgdisk reading the backup alone agrees.
    backup = run("sgdisk", "-b", str(image.with_suffix(".gpt")), str(image))
    assert "successfully" in backup
    assert "52:1" in run("sgdisk", "-A", "4:show", str(image))  # tries=1 is bit 52


def test_what_cgpt_writes_we_read(image: Path) -> None:
    run("cgpt", "add", "-i", "4", "-P", "3", "-T", "5", "-S", "1", str(image))
    flags = {s.number: s.flags for s in disk.read_table(str(image)).slots}
    assert flags[4] == gptprio.Flags(priority=3, tries=5, successful=True)
    assert flags[3] == gptprio.Flags(priority=0, tries=0, successful=False)


def test_the_boot_rule_on_a_real_table_after_an_update(image: Path) -> None:
    """Install into B, take the one try (as the bootloader), fail: A boots again."""
    slots = gptprio.mark_good(disk.read_table(str(image)).slots, 3)
    slots = gptprio.after_install(slots, 4)
    disk.set_attributes(str(image), {s.number: s.attributes for s in slots if s.is_usr})
    choice = gptprio.choose_boot(disk.read_table(str(image)).slots)
    assert choice is not None and choice.slot.label == "USR-B" and choice.try_spent
    disk.set_attributes(str(image), {choice.slot.number: choice.slot.attributes})
    assert cgpt_fields(image, 4).tries == 0
    fallback = gptprio.choose_boot(disk.read_table(str(image)).slots)
    assert fallback is not None and fallback.slot.label == "USR-A"


def _corrupt(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize(
    "where,words",
    [
        (512 + 40, "header CRC"),  # inside the primary header
        (2 * 512 + 200, "entry array CRC"),  # inside the primary entries
        (64 * MiB - 512 + 40, "header CRC"),  # inside the backup header
        (64 * MiB - 33 * 512 + 10, "differ"),  # inside the backup entries
    ],
)
def test_damaged_tables_are_refused_and_left_alone(image: Path, where: int, words: str) -> None:
    _corrupt(image, where)
    before = image.read_bytes()
    with pytest.raises(gpt.GptError, match=words):
        disk.set_attributes(str(image), {3: gptprio.Flags(1, 0, True).pack()})
    assert image.read_bytes() == before


def test_unknown_partition_numbers_are_refused(image: Path) -> None:
    before = image.read_bytes()
    with pytest.raises(gpt.GptError, match="partition 7 does not exist"):
        disk.set_attributes(str(image), {7: 0})
    assert image.read_bytes() == before


def test_no_gpt_at_all(tmp_path: Path) -> None:
    blank = tmp_path / "blank.img"
    blank.write_bytes(b"\0" * MiB)
    with pytest.raises(gpt.GptError, match="no GPT header"):
        disk.read_table(str(blank))


def test_partition_extents_match_sgdisk(image: Path) -> None:
    table = disk.read_table(str(image))
    for number in (1, 3, 4):
        info = run("sgdisk", "-i", str(number), str(image))
        first = int(info.split("First sector: ")[1].split()[0])
        last = int(info.split("Last sector: ")[1].split()[0])
        assert table.extent(number) == (first * 512, (last - first + 1) * 512)
    assert table.extent(3)[1] == 16 * MiB
    with pytest.raises(gpt.GptError, match="partition 2 does not exist"):
        table.extent(2)
