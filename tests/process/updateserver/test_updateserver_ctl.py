"""flotilla-updatectl against a running server: the operator's path from a shell."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from flotilla.daemons.update import omaha

from .harness import APP_ID, REPO, Server
from .test_updateserver_omaha import PAYLOAD, flatcar


def ctl(server: Server, *argv: str, token_file: Path | None = None
        ) -> subprocess.CompletedProcess[str]:
    flags = ["--server", server.url] + (["--token-file", str(token_file)] if token_file else [])
    return subprocess.run([sys.executable, "-m", "flotilla.daemons.updateserver.ctl", *flags,
                           *argv], capture_output=True, text=True, timeout=60, cwd=REPO)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, (done.args, done.stdout, done.stderr)
    return done.stdout


def test_updatectl_sets_up_a_rollout_pauses_and_resumes(tmp_path: Path) -> None:
    server = Server(tmp_path, token="t0ken").start()
    token = tmp_path / "ctl.token"
    token.write_text("t0ken\n")
    payload = tmp_path / "update.gz"
    payload.write_bytes(PAYLOAD)
    try:
        refused = ctl(server, "apps", "--create", "Flatcar", "--id", APP_ID)
        assert refused.returncode == 1 and "401" in refused.stderr
        ok(ctl(server, "apps", "--create", "Flatcar", "--id", APP_ID, token_file=token))
        made = json.loads(ok(ctl(server, "--output", "json", "package-create", "--app",
                                 "Flatcar", "2.0.0", "--file", str(payload),
                                 token_file=token)))
        assert made["stored"] and made["size"] == str(len(PAYLOAD))
        ok(ctl(server, "channel-create", "--app", "Flatcar", "stable", "--package", "2.0.0",
               token_file=token))
        ok(ctl(server, "group-create", "--app", "Flatcar", "Stable", "--channel", "stable",
               "--max-updates", "3", "--period", "15 minutes", token_file=token))
        groups = ok(ctl(server, "groups", "--app", "Flatcar"))
        assert groups.splitlines()[0].split()[:3] == ["ID", "NAME", "TRACK"]
        assert "Stable" in groups and "15 minutes" in groups

        ok(ctl(server, "pause", "--app", "Flatcar", "stable", token_file=token))
        held = omaha.parse_response(server.omaha(flatcar("ab" * 16)).content)
        assert isinstance(held, omaha.Deferred)
        listing = ok(ctl(server, "instances", "--app", "Flatcar", "Stable"))
        assert "paused" in listing and "abababab" in listing

        ok(ctl(server, "resume", "--app", "Flatcar", "Stable", token_file=token))
        assert isinstance(omaha.parse_response(server.omaha(flatcar("ab" * 16)).content),
                          omaha.Offer)
        rows = json.loads(ok(ctl(server, "--output", "json", "instances", "--app", "Flatcar",
                                 "Stable")))["instances"]
        assert rows[0]["application"]["status_name"] == "update granted"
        feed = ok(ctl(server, "activity", "--app", "Flatcar"))
        assert "rollout_started" in feed
        missing = ctl(server, "pause", "--app", "Flatcar", "nightly", token_file=token)
        assert missing.returncode == 1 and "no group 'nightly'" in missing.stderr
    finally:
        code = server.stop()
    assert code == 0, server.log()
