"""Rollout policy through the running server: the rate limit under concurrent checks (two
server processes on one SQLite file), and the REST path an operator takes: create an app,
a package, a channel and a group, pause it, see the reason on the instance, resume it."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from flotilla.daemons.update import omaha

from .harness import APP_PATH, Server, setup_flatcar
from .test_updateserver_omaha import PAYLOAD, flatcar

CHECKS = 50
LIMIT = 5


def test_fifty_concurrent_checks_never_exceed_the_rate_limit(tmp_path: Path) -> None:
    first = Server(tmp_path, name="a").start()
    second = Server(tmp_path, db=first.db, name="b")
    try:
        second.start()
        made = setup_flatcar(first, PAYLOAD, policy_max_updates_per_period=LIMIT,
                             policy_period_interval="1 hours")
        gate = threading.Barrier(CHECKS, timeout=60)

        def check(n: int) -> omaha.Answer:
            target = first if n % 2 else second
            body = flatcar(f"{n:032x}")
            gate.wait()
            # One connection per check (a shared Session's pool holds only 10).
            reply = requests.post(target.url + "/v1/update/", data=body, timeout=60)
            return omaha.parse_response(reply.content)

        with ThreadPoolExecutor(CHECKS) as pool:
            answers = list(pool.map(check, range(CHECKS)))
        kinds = Counter(type(a).__name__ for a in answers)
        assert kinds == {"Offer": LIMIT, "Deferred": CHECKS - LIMIT}, kinds
        assert {a.app_status for a in answers if isinstance(a, omaha.Deferred)} == {
            "error-maxUpdatesPerPeriodLimitReached"}
        listing = first.api("GET", f"{APP_PATH}/groups/{made['group']['id']}/instances"
                                   "?perpage=100", expect=200)
        assert listing["total_count"] == CHECKS
        by_status = Counter(i["application"]["status_name"] for i in listing["instances"])
        assert by_status == {"update granted": LIMIT, "on hold": CHECKS - LIMIT}
        held = [i["application"] for i in listing["instances"]
                if i["application"]["status_name"] == "on hold"]
        assert all(h["last_reason"] == "rate_limit" for h in held)
        assert all(f"limit {LIMIT}" in h["last_reason_detail"] and "next slot" in
                   h["last_reason_detail"] for h in held)
        # A held instance asking again is still held: the slots stay spent.
        held_machine = next(n for n, a in enumerate(answers) if isinstance(a, omaha.Deferred))
        again = omaha.parse_response(first.omaha(flatcar(f"{held_machine:032x}")).content)
        assert isinstance(again, omaha.Deferred)
    finally:
        codes = (second.stop(), first.stop())
    assert codes == (0, 0), first.log() + second.log()


def test_rest_create_pause_and_resume_with_the_reason_on_the_instance(tmp_path: Path) -> None:
    server = Server(tmp_path, token="s3cret-token").start()
    try:
        # Writes need the token; reads do not.
        denied = server.api("POST", "/api/apps", {"name": "x"}, headers={}, expect=401)
        assert "Bearer" in denied["error"]
        assert server.api("GET", "/api/apps", headers={}, expect=200)["total_count"] == 0
        made = setup_flatcar(server, PAYLOAD)
        group = made["group"]
        assert group["policy_period_interval"] == "1 minutes"
        assert group["policy_update_timeout"] == "60 minutes"
        assert made["channel"]["package_id"] == made["package"]["id"]
        assert made["package"]["stored"] and made["package"]["size"] == str(len(PAYLOAD))

        bad = server.api("POST", APP_PATH + "/groups", {
            "name": "x", "policy_max_updates_per_period": 1, "policy_period_interval": "soon",
            "policy_timezone": "UTC", "policy_update_timeout": "1 hours"}, expect=400)
        assert bad["error"].startswith("policy_period_interval:")
        bad = server.api("PUT", f"{APP_PATH}/groups/{group['id']}",
                         {"policy_timezone": "Mars/Olympus"}, expect=400)
        assert "unknown time zone" in bad["error"]
        assert server.api("PUT", f"{APP_PATH}/groups/{group['id']}", {"bogus": 1},
                          expect=400)["error"] == "bogus: unknown field"

        paused = server.api("PUT", f"{APP_PATH}/groups/{group['id']}",
                            {"policy_updates_enabled": False}, expect=200)
        assert paused["policy_updates_enabled"] is False
        machine = "ab" * 16
        held = omaha.parse_response(server.omaha(flatcar(machine)).content)
        assert isinstance(held, omaha.Deferred) and held.app_status == "error-updatesDisabled"
        app = server.api("GET", "/api/instances/" + machine)["applications"][0]
        assert app["last_reason"] == "paused" and "Stable" in app["last_reason_detail"]

        server.api("PUT", f"{APP_PATH}/groups/{group['id']}",
                   {"policy_updates_enabled": True}, expect=200)
        offer = omaha.parse_response(server.omaha(flatcar(machine)).content)
        assert isinstance(offer, omaha.Offer) and offer.version == "2.0.0"
        app = server.api("GET", "/api/instances/" + machine)["applications"][0]
        assert (app["last_reason"], app["status_name"]) == ("granted", "update granted")

        feed = server.api("GET", "/api/activity")
        assert [a["class"] for a in feed["activities"]] == ["rollout_started"]
        page = server.api("GET", APP_PATH + "/packages?page=1&perpage=1", expect=200)
        assert (page["total_count"], page["count"]) == (1, 1)
        assert server.api("GET", APP_PATH + "/packages?page=2&perpage=1")["count"] == 0
        server.api("DELETE", f"{APP_PATH}/groups/{group['id']}", expect=204)
        server.api("GET", f"{APP_PATH}/groups/{group['id']}", expect=404)
    finally:
        code = server.stop()
    assert code == 0, server.log()


def test_floors_are_offered_before_the_target(tmp_path: Path) -> None:
    server = Server(tmp_path).start()
    try:
        made = setup_flatcar(server, PAYLOAD, version="3.0.0")
        floor = server.api("POST", APP_PATH + "/packages",
                           {"version": "2.0.0", "filename": "update.gz"}, expect=201)
        server.api("PUT", f"{APP_PATH}/packages/{floor['id']}/payload", data=PAYLOAD + b"2",
                   expect=200)
        server.api("PUT", f"/api/channels/{made['channel']['id']}/floors/{floor['id']}",
                   {"floor_reason": "new partition layout"}, expect=200)
        offer = omaha.parse_response(server.omaha(flatcar("ab" * 16)).content)
        assert isinstance(offer, omaha.Offer) and offer.version == "2.0.0"
        assert offer.package.size == len(PAYLOAD) + 1
        app = server.api("GET", "/api/instances/" + "ab" * 16)["applications"][0]
        assert app["last_reason"] == "floor_first"
        assert "new partition layout" in app["last_reason_detail"]
        # Pointing the channel at another package is in the feed.
        server.api("PUT", f"{APP_PATH}/channels/{made['channel']['id']}",
                   {"package_id": floor["id"]}, expect=200)
        server.api("PUT", f"{APP_PATH}/channels/{made['channel']['id']}",
                   {"package_id": made["package"]["id"]}, expect=200)
        texts = [a["text"] for a in server.api("GET", "/api/activity")["activities"]
                 if a["class"] == "channel_package_updated"]
        assert texts == ["channel stable now offers 3.0.0", "channel stable now offers 2.0.0"]
        # Past the floor, the target is next.
        done = omaha.parse_response(server.omaha(flatcar("cd" * 16, "2.0.0")).content)
        assert isinstance(done, omaha.Offer) and done.version == "3.0.0"
    finally:
        code = server.stop()
    assert code == 0, server.log()


def test_the_database_is_wal_migrated_once_and_survives_a_restart(tmp_path: Path) -> None:
    import sqlite3

    server = Server(tmp_path).start()
    try:
        setup_flatcar(server, PAYLOAD)
        offer = omaha.parse_response(server.omaha(flatcar("ab" * 16)).content)
        assert isinstance(offer, omaha.Offer)
    finally:
        assert server.stop() == 0, server.log()
    with sqlite3.connect(server.db) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("SELECT version, name FROM schema_migrations").fetchall() == [
            (1, "initial schema")]
    again = Server(tmp_path, db=server.db, name="again").start()
    try:
        app = again.api("GET", "/api/instances/" + "ab" * 16, expect=200)["applications"][0]
        assert app["status_name"] == "update granted"
        # The open grant is re-offered after the restart, not granted twice.
        assert isinstance(omaha.parse_response(again.omaha(flatcar("ab" * 16)).content),
                          omaha.Offer)
        assert again.api("GET", "/api/instances/" + "ab" * 16)["applications"][0][
            "last_reason"] == "reoffered"
    finally:
        assert again.stop() == 0, again.log()
    assert "migrated" not in again.log()
    with sqlite3.connect(server.db) as db:
        db.execute("INSERT INTO schema_migrations VALUES (99, 'from the future', 0)")
    future = Server(tmp_path, db=server.db, name="future")
    try:
        future.start()
        raise AssertionError("a server started on a newer schema")
    except RuntimeError as err:
        assert "exited 1" in str(err) and "schema version 99" in str(err)
    finally:
        future.stop()
