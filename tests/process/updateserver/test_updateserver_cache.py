"""The check path keeps groups, channels and packages between checks (configcache): a change
made through the REST API of this server, or of another server process on the same SQLite
file, must reach the very next check, as it did when every check read them afresh."""

from __future__ import annotations

from pathlib import Path

from flotilla.daemons.update import omaha

from .harness import APP_PATH, Server, setup_flatcar
from .test_updateserver_omaha import PAYLOAD, flatcar


def check(server: Server, machine: str, version: str = "2.0.0") -> omaha.Answer:
    return omaha.parse_response(server.omaha(flatcar(machine, version)).content)


def test_a_channel_moved_by_either_server_is_offered_on_the_next_check(tmp_path: Path) -> None:
    first = Server(tmp_path, name="a").start()
    second = Server(tmp_path, db=first.db, name="b")
    try:
        second.start()
        made = setup_flatcar(first, PAYLOAD, version="2.0.0")
        # Both servers answer (and so cache) "up to date" for a machine on 2.0.0.
        assert isinstance(check(first, "ab" * 16), omaha.NoUpdate)
        assert isinstance(check(second, "ab" * 16), omaha.NoUpdate)
        newer = first.api("POST", APP_PATH + "/packages",
                          {"version": "2.1.0", "filename": "update.gz"}, expect=201)
        first.api("PUT", f"{APP_PATH}/packages/{newer['id']}/payload", data=PAYLOAD,
                  expect=200)
        first.api("PUT", f"{APP_PATH}/channels/{made['channel']['id']}",
                  {"package_id": newer["id"]}, expect=200)
        # Written through the first server's API: both see it on their next check.
        offer = check(first, "ab" * 16)
        assert isinstance(offer, omaha.Offer) and offer.version == "2.1.0"
        offer = check(second, "cd" * 16)
        assert isinstance(offer, omaha.Offer) and offer.version == "2.1.0"
        # Written through the second server's API: the first server's cache is dropped.
        second.api("PUT", f"{APP_PATH}/groups/{made['group']['id']}",
                   {**_group_body(made["group"]), "policy_updates_enabled": False},
                   expect=200)
        held = check(first, "ef" * 16)
        assert isinstance(held, omaha.Deferred), held
    finally:
        codes = (second.stop(), first.stop())
    assert codes == (0, 0), first.log() + second.log()


def _group_body(group: dict) -> dict:
    keep = ("name", "track", "channel_id", "policy_max_updates_per_period",
            "policy_period_interval", "policy_timezone", "policy_update_timeout")
    return {k: group[k] for k in keep if k in group}
