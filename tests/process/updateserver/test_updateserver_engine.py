"""Our update engine updates a GPT disk image from flotilla-update-server, end to end.

The server runs as a process on SQLite with the signed payload uploaded through the REST
API; the engine (daemons/update/engine.py, run for one attempt as the engine tests do)
checks, streams the payload from the server's payload URL into USR-B, verifies it and
flips the priority. The server sees the engine's real events; a check from the rebooted
machine then completes the instance, and the group's rollout progress shows it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from flotilla.daemons.update import disk, gptprio, omaha
from flotilla.daemons.update.codes import Status

from tests.process.update.test_update_engine import (  # noqa: F401 (ab_image is a fixture)
    RELEASE,
    USR_A,
    USR_B,
    ab_image,
    attempt,
    cgpt,
    new_engine,
    offer_payload,
    slot_bytes,
)

from .harness import APP_PATH, Server, setup_flatcar
from .test_updateserver_omaha import flatcar


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "server-state")
    srv.workdir.mkdir()
    srv.start()
    try:
        yield srv
    finally:
        assert srv.stop() == 0, srv.log()


def test_the_engine_updates_a_disk_from_the_server(tmp_path: Path, server: Server,
                                                   ab_image: Path) -> None:  # noqa: F811
    payload = offer_payload()
    made = setup_flatcar(server, payload, policy_max_updates_per_period=1,
                         policy_period_interval="1 hours")
    eng = new_engine(tmp_path, server, ab_image)  # type: ignore[arg-type]
    statuses: list[str] = []
    asyncio.run(attempt(eng, statuses))
    assert statuses[-1] == Status.UPDATED_NEED_REBOOT.value, eng.details()
    assert slot_bytes(ab_image, USR_B, len(RELEASE)) == RELEASE
    assert cgpt(ab_image, USR_B) == gptprio.Flags(priority=2, tries=1, successful=False)
    assert cgpt(ab_image, USR_A).successful
    assert gptprio.choose_boot(disk.read_table(str(ab_image)).slots).slot.number == USR_B

    machine = "ab" * 16  # new_engine's machine id
    app = server.api("GET", "/api/instances/" + machine, expect=200)["applications"][0]
    assert (app["status_name"], app["last_update_version"]) == ("installed", "2.0.0")
    # The one slot of the period is spent: another machine is held, and told why.
    other = omaha.parse_response(server.omaha(flatcar("cd" * 16)).content)
    assert isinstance(other, omaha.Deferred)
    assert other.app_status == "error-maxUpdatesPerPeriodLimitReached"

    # The machine rebooted into 2.0.0: its first check reports 3/2 with the old version.
    rebooted = flatcar(machine, "2.0.0", omaha.UpdateCheck(previous_version="1.0.0"))
    assert omaha.parse_response(server.omaha(rebooted).content) == omaha.NoUpdate()
    app = server.api("GET", "/api/instances/" + machine)["applications"][0]
    assert (app["status_name"], app["version"]) == ("complete", "2.0.0")
    group = made["group"]["id"]
    history = server.api("GET", f"{APP_PATH}/groups/{group}/instances/{machine}/status_history")
    assert [h["status_name"] for h in reversed(history)] == [
        "undefined", "update granted", "downloading", "downloaded", "installed", "complete"]
    breakdown = server.api("GET", f"{APP_PATH}/groups/{group}/version_breakdown", expect=200)
    assert breakdown == [{"version": "2.0.0", "instances": 1, "percentage": 50.0},
                         {"version": "1.0.0", "instances": 1, "percentage": 50.0}]
    stats = server.api("GET", f"{APP_PATH}/groups/{group}/instances_stats", expect=200)
    assert (stats["total"], stats["complete"], stats["on_hold"], stats["error"]) == (2, 1, 1, 0)
    # The held machine is still on 1.0.0, so the rollout goes on.
    feed = [a["class"] for a in server.api("GET", "/api/activity")["activities"]]
    assert feed == ["rollout_started"]
    assert server.api("GET", f"{APP_PATH}/groups/{group}")["rollout_in_progress"]
    metrics = server.session.get(server.url + "/metrics", timeout=10).text
    assert ('group_instances_on_channel_version{application="Flatcar",group="Stable"} 1'
            in metrics)
