"""Pure parts of the API and fleetctl: page tokens, tables, names, command prefixes."""

from __future__ import annotations

import base64
import struct

import pytest
from aiohttp.test_utils import make_mocked_request
from flotilla.daemons.fleet.api import ApiError, decode_page_token, encode_page_token, paginate
from flotilla.daemons.fleet.registry import hash_to_ints, ints_to_hash
from flotilla.daemons.fleetctl.main import COMMANDS, resolve_command, unit_name_mangle
from flotilla.daemons.fleetctl.tables import machine_full_legend, render


def test_page_token_is_fleets_encoding() -> None:
    token = encode_page_token(100, 2)
    assert base64.urlsafe_b64decode(token) == struct.pack("<HH", 100, 2)
    assert token == "ZAACAA=="
    assert decode_page_token(token, 100) == 2


@pytest.mark.parametrize("token", ["ZAACAA==", "!!!", "", "AAAA", "ZAAAAA=="])
def test_bad_page_tokens_are_rejected(token: str) -> None:
    with pytest.raises(ApiError) as caught:
        decode_page_token(token, 50)
    assert caught.value.code == 400


def test_a_full_page_carries_a_token_as_in_fleet() -> None:
    """fleet's extract*PageData: a page that came out full names the next one, even
    when that one is empty, so clients make the same requests against both."""
    def pages(count: int) -> list[int]:
        sizes, token = [], None
        while True:
            request = make_mocked_request("GET", f"/units?nextPageToken={token}" if token
                                          else "/units")
            page, token = paginate(list(range(count)), request, 2)
            sizes.append(len(page))
            if token is None:
                return sizes

    assert pages(0) == [0]
    assert pages(3) == [2, 1]
    assert pages(4) == [2, 2, 0]


def test_unit_hash_json_round_trip() -> None:
    digest = "00ff" + "ab" * 18
    assert hash_to_ints(digest)[:2] == [0, 255]
    assert ints_to_hash(hash_to_ints(digest)) == digest
    with pytest.raises(ValueError):
        ints_to_hash([300])


def test_tables_pad_with_tabs_like_go_tabwriter() -> None:
    text = render([["UNIT", "MACHINE", "ACTIVE"], ["hello.service", "abcd.../10.0.0.1", "active"]])
    assert text == ("UNIT\t\tMACHINE\t\t\tACTIVE\n"
                    "hello.service\tabcd.../10.0.0.1\tactive\n")
    assert render([]) == ""


def test_machine_legends() -> None:
    ips = {"0123456789abcdef": "10.0.0.1"}
    assert machine_full_legend("0123456789abcdef", ips, False) == "01234567.../10.0.0.1"
    assert machine_full_legend("0123456789abcdef", ips, True) == "0123456789abcdef/10.0.0.1"
    assert machine_full_legend("ffff0000ffff", {}, False) == "ffff0000..."


def test_unit_name_mangling_and_command_prefixes() -> None:
    assert unit_name_mangle("dir/hello") == "hello.service"
    assert unit_name_mangle("./a/b.socket") == "b.socket"
    assert resolve_command(["--endpoint=x", "list-m"], COMMANDS) == ["--endpoint=x",
                                                                    "list-machines"]
    assert resolve_command(["list-unit"], COMMANDS) == ["list-unit"]  # ambiguous stays
