"""images/postfix/mysql-watch.sh decides when to reload Postfix from a sequence of probe answers. The
script runs for real under bash (with the real `timeout`); only `postmap` (the probe), `postfix` (the
reload) and `sleep` are stand-ins on PATH, replaying the answers MariaDB would give."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

WATCHER = Path(__file__).resolve().parents[2] / "images" / "postfix" / "mysql-watch.sh"
RUN_A, RUN_B = "7c1c6c4e-cf3a-11f1-9a51-0242ac130002", "80f3b1d2-cf3a-11f1-9a51-0242ac130002"


def _reloads(tmp_path: Path, answers: list[str], sleeps: list[str] | None = None) -> list[str]:
    """Run the watcher over `answers` ("<start> <uptime> [<run id>]" or "down"); the reload reasons it logged."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "answers").write_text("".join(f"{a}\n" for a in answers))
    (tmp_path / "probe.cf").write_text("hosts = mysql\n")
    stubs = {
        # one answer per probe; "down" fails like postmap does when the server is unreachable; "hang"
        # stalls like a server that accepted the connection and never answers
        "postmap": 'a=$(head -n1 "$W/answers"); sed -i 1d "$W/answers"; [ "$a" = down ] && exit 1; '
                   '[ "$a" = hang ] && exec /bin/sleep 60; echo "$a"',
        "postfix": 'echo "$1" >> "$W/postfix-calls"',
        # the loop ends when every answer has been given
        "sleep": 'echo "$1" >> "$W/sleeps"; [ -s "$W/answers" ]',
    }
    for name, body in stubs.items():
        stub = bin_dir / name
        stub.write_text(f"#!/bin/sh\n{body}\n")
        stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "W": str(tmp_path),
           "MAILSTACK_MYSQL_WATCH_PROBE": str(tmp_path / "probe.cf"), "MAILSTACK_MYSQL_WATCH_TIMEOUT": "0.3"}
    done = subprocess.run(["bash", str(WATCHER)], env=env, capture_output=True, text=True, timeout=30, check=False)
    calls = (tmp_path / "postfix-calls").read_text().split() if (tmp_path / "postfix-calls").exists() else []
    reasons = [line.split("MariaDB ", 1)[1].split(":", 1)[0] for line in done.stderr.splitlines()
               if line.startswith("mailstack-postfix: MariaDB")]
    assert calls == ["reload"] * len(reasons), (calls, done.stderr)
    if sleeps is not None:
        sleeps += (tmp_path / "sleeps").read_text().split()
    return reasons


@pytest.mark.parametrize(("answers", "expected"), [
    pytest.param(["1000 5", "1000 6", "1000 7"], [], id="steady"),
    pytest.param(["1000 5", "1001 6", "1000 8"], [], id="start-time-wobbles-by-one-second"),
    pytest.param(["down", "down", "1000 1"], ["is back"], id="up-after-postfix"),
    pytest.param(["1000 5", "down", "1009 1", "1009 2"], ["is back"], id="outage-seen"),
    pytest.param(["1000 50", "1052 3"], ["restarted"], id="restart-missed-new-uptime-smaller"),
    # the CI failure of the uptime-only watcher: the old server had been up 3 s at the last probe, the
    # probe missed the outage, and the new one had been up 6 s when it was next asked
    pytest.param(["1000 3", "1005 6", "1005 7"], ["restarted"], id="restart-missed-new-uptime-larger"),
    pytest.param(["1000 5", "x y", "1000 7"], ["is back"], id="garbage-counts-as-down"),
    pytest.param(["1000 5", "hang", "1000 9"], ["is back"], id="a-stalled-probe-counts-as-down"),
    # with the id of the server's run (the MariaDB image makes one at every start): exact
    pytest.param([f"1000 5 {RUN_A}", f"1001 6 {RUN_A}", f"1000 8 {RUN_A}"], [], id="run-id-steady"),
    # the CI failure of the start-time watcher: the old server was killed a second after it started, the
    # probe missed the outage, and the new server's start time was within the one-second wobble
    pytest.param([f"1000 1 {RUN_A}", f"1001 2 {RUN_B}", f"1001 4 {RUN_B}"], ["restarted"],
                 id="run-id-restart-within-a-second-of-the-start"),
    pytest.param([f"1000 5 {RUN_A}", "down", f"1009 1 {RUN_B}"], ["is back"], id="run-id-outage-seen"),
    # a map rendered before the id (a production copy not rendered again): start time and uptime tell
    pytest.param([f"1000 5 {RUN_A}", "1052 3"], ["restarted"], id="run-id-gone-start-time-tells"),
    pytest.param(["1000 5", f"1000 7 {RUN_A}"], [], id="run-id-new-same-server"),
])
def test_watcher_reloads_postfix_exactly_when_mariadb_came_back(tmp_path: Path, answers: list[str],
                                                                 expected: list[str]) -> None:
    assert _reloads(tmp_path, answers) == expected


def test_watcher_probes_often_only_while_mariadb_is_away(tmp_path: Path) -> None:
    sleeps: list[str] = []
    _reloads(tmp_path, ["1000 5", "down", "down", "1009 1", "1009 3"], sleeps)
    # the first probe at once (a restart in the first interval must not become the baseline), then the
    # sleep after each probe: 2 s while MariaDB answers, 0.5 s while it does not
    assert sleeps == ["2", "0.5", "0.5", "2", "2"]
