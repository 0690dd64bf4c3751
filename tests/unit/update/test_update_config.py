"""update.conf and release files: precedence, upstream's keys, our schedule keys, bad lines."""

from __future__ import annotations

import pytest
from flotilla.daemons.update.config import ConfigError, load, parse_env_file
from flotilla.daemons.update.omaha import DEFAULT_APP_ID

RELEASE = ("/usr/share/coreos/release",
           "COREOS_RELEASE_VERSION=3510.2.0\nCOREOS_RELEASE_BOARD=amd64-usr\n")


def test_first_file_that_sets_a_key_wins() -> None:
    config = load([
        ("/etc/coreos/update.conf", "GROUP=beta\n# SERVER=ignored\n"),
        ("/usr/share/coreos/update.conf",
         'GROUP=stable\nSERVER="http://127.0.0.1:8000/v1/update/"\n'),
        RELEASE,
    ], [("/usr/share/oem/oem-release", "ID=qemu\nVERSION_ID=0.1\n")])
    assert (config.group, config.server) == ("beta", "http://127.0.0.1:8000/v1/update/")
    assert (config.version, config.board, config.app_id) == ("3510.2.0", "amd64-usr",
                                                             DEFAULT_APP_ID)
    assert (config.oem, config.oem_version) == ("qemu", "0.1")
    assert config.schedule.period == 2700 and config.mark_good_delay == 45.0


def test_flatcar_names_are_read_too() -> None:
    config = load([("/usr/share/flatcar/release",
                    "FLATCAR_RELEASE_VERSION=3602.2.0\nFLATCAR_RELEASE_APPID={abc}\n"),
                   ("/etc/flatcar/update.conf", "SERVER=http://127.0.0.1/\n")])
    assert (config.version, config.app_id, config.group) == ("3602.2.0", "{abc}", "stable")


@pytest.mark.parametrize("server", ["SERVER=disabled", "", "SERVER="])
def test_disabled_or_missing_server_turns_updates_off(server: str) -> None:
    config = load([("/etc/coreos/update.conf", server + "\n"), RELEASE])
    assert config.updates_disabled and config.server is None


def test_our_schedule_and_health_keys() -> None:
    config = load([("/etc/coreos/update.conf",
                    "CHECK_INITIAL_DELAY=1s\nCHECK_INTERVAL=1m30s\nCHECK_FUZZ=0\n"
                    "MARK_GOOD_DELAY=5\nHEALTH_CHECK_UNITS='app.service db.service'\n"
                    "SERVER_CA_FILE=/etc/ssl/update-ca.pem\n"), RELEASE])
    assert (config.schedule.initial, config.schedule.period, config.schedule.fuzz) == (1, 90, 0)
    assert config.mark_good_delay == 5.0
    assert config.health_check_units == ("app.service", "db.service")
    assert config.server_ca_file == "/etc/ssl/update-ca.pem"


@pytest.mark.parametrize(
    "text,words",
    [
        ("GROUP beta\n", "/etc/coreos/update.conf:1: expected KEY=value"),
        ("A=1\nSERVER='unclosed\n", "/etc/coreos/update.conf:2: SERVER: No closing quotation"),
        ("CHECK_INTERVAL=soon\n", "/etc/coreos/update.conf:1: CHECK_INTERVAL: invalid duration"),
        ("CHECK_INTERVAL=0\n", "schedule: period must be positive"),
    ],
)
def test_bad_lines_name_file_line_and_key(text: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load([("/etc/coreos/update.conf", text), RELEASE])
    assert words in str(caught.value)


def test_a_release_version_is_required() -> None:
    with pytest.raises(ConfigError, match="no release version"):
        load([("/etc/coreos/update.conf", "GROUP=beta\n")])


def test_env_file_quoting_and_comments() -> None:
    values = parse_env_file('# c\n\nA="x y"\nB=\'$z\'\n', "f")
    assert (values["A"].value, values["B"].value, values["B"].line) == ("x y", "$z", 4)
