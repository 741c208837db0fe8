"""Upgrades lose nothing: a stack created by the previous release (its code taken from git history, its
own images built from it) holds domains, users, aliases, mail and a message held in its queue; this
code's `mailstack up` then takes over the same project and volumes in place, and everything is still there
and still works.
"""

from __future__ import annotations

import io
import json
import os
import re
import smtplib
import socket
import ssl
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import wait_for
from imapclient import IMAPClient
from mailstack.db import Database
from mailstack.settings import load_settings
from mailstack.stack import Stack

# Releases a stack is upgraded from: the last commit before the schema, image and refusal changes (the
# migrations: the quota column, alias_domains), and the last landed stop before the webmail, the TCP option
# and the '%u@%d' map queries (its stacks have the outside world; the upgrade adds the webmail), and the last
# landed stop before Postfix's draining stop, the LMTP status filter and Dovecot's subnet listen (the upgrade
# stops the old Postfix the old way and starts the new images on the same volumes and queue), and the last
# landed stop before MariaDB's run id (its volume gets the server_state database at the new image's first start).
PREVIOUS_RELEASES = ("c3d5a6e5598c11772c7d4bc637b9c07ad57bb095", "3255465a29f4f9a1d72735bb249c5a916dd7bbd4",
                     "6da7cb6a6a9f153dea55730707479805e51db4e2", "56bbb135a09af2217ae700fc2daf4125862aa02f")
REPOSITORY = Path(__file__).resolve().parents[2]
SEED = """\
domains: [upgrade.test]
users:
  - {address: alice@upgrade.test, password: alice-upgrade-1}
  - {address: bob@upgrade.test, password: bob-upgrade-2}
aliases:
  - {source: team@upgrade.test, destinations: [alice@upgrade.test, bob@upgrade.test]}
"""


def free_ports(count: int) -> list[int]:
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


@pytest.fixture(params=PREVIOUS_RELEASES, ids=lambda commit: commit[:7])
def previous_release(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A previous release's files, from git history."""
    commit = request.param
    found = subprocess.run(["git", "-C", str(REPOSITORY), "archive", "--format=tar", commit],
                           capture_output=True, check=False)
    assert found.returncode == 0, (
        f"git history without {commit[:12]} ({found.stderr.decode().strip()}): the upgrade test needs "
        "the repository's history (a full clone, or `git fetch --unshallow`)")
    target = tmp_path_factory.mktemp("previous-release")
    with tarfile.open(fileobj=io.BytesIO(found.stdout)) as archive:
        archive.extractall(target, filter="data")
    return target


@pytest.fixture
def environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One project and state directory for both releases, on free loopback ports; removed afterwards."""
    project = f"mailstack-upgrade-{uuid.uuid4().hex[:8]}"
    state = tmp_path_factory.mktemp("upgrade-state")
    names = ("SMTP", "SUBMISSION", "SMTPS", "IMAPS", "POP3S", "MANAGESIEVE", "WEBMAIL")
    env = {**{key: value for key, value in os.environ.items() if not key.startswith("MAILSTACK_")},
           "MAILSTACK_PROJECT": project, "MAILSTACK_STATE_DIR": str(state),
           "MAILSTACK_HASH_COST": "fast", "MAILSTACK_MAIL_FSYNC": "never",
           **{f"MAILSTACK_{name}_PORT": str(port) for name, port in zip(names, free_ports(len(names)), strict=True)}}
    yield env
    stack(env).down(volumes=True)


def mailstack(release: Path, env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    """Run a release's CLI (its own package and compose files) against the shared project."""
    result = subprocess.run([sys.executable, "-m", "mailstack", *args], cwd=release, input=stdin, text=True,
                            env={**env, "PYTHONPATH": str(release / "orchestrator")}, capture_output=True,
                            timeout=600, check=False)
    assert result.returncode == 0, f"mailstack {' '.join(args)} ({release.name}):\n{result.stdout}\n{result.stderr}"
    return result.stdout


def ca_context(env: dict[str, str]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(Path(env["MAILSTACK_STATE_DIR"]) / "config" / "tls" / "ca.crt"))


def send(env: dict[str, str], to: str, subject: str, login: tuple[str, str] | None = None) -> None:
    port = int(env["MAILSTACK_SUBMISSION_PORT" if login else "MAILSTACK_SMTP_PORT"])
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=30) as smtp:
        smtp.starttls(context=ca_context(env))
        if login:
            smtp.login(*login)
        sender = login[0] if login else "someone@outside.test"
        smtp.sendmail(sender, [to], f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\r\nbody\r\n")


def subjects(env: dict[str, str], address: str, password: str) -> list[str]:
    with IMAPClient("127.0.0.1", port=int(env["MAILSTACK_IMAPS_PORT"]), ssl=True, ssl_context=ca_context(env),
                    timeout=30) as client:
        client.login(address, password)
        client.select_folder("INBOX", readonly=True)
        found = client.fetch(client.search(["ALL"]), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
        return sorted(data[b"BODY[HEADER.FIELDS (SUBJECT)]"].decode().split(":", 1)[1].strip()
                      for data in found.values())



def stack(env: dict[str, str]) -> Stack:
    return Stack(load_settings(project=env["MAILSTACK_PROJECT"], state_dir=env["MAILSTACK_STATE_DIR"]))


def postfix(env: dict[str, str], *argv: str) -> str:
    return stack(env).exec("postfix", list(argv)).stdout.decode()


def queued(env: dict[str, str]) -> list[dict]:
    return [json.loads(line) for line in postfix(env, "postqueue", "-j").splitlines() if line.strip()]


def test_a_previous_release_stack_upgrades_in_place_and_keeps_everything(
        previous_release: Path, environment: dict[str, str], tmp_path: Path) -> None:
    env = environment
    seed = tmp_path / "seed.yaml"
    seed.write_text(SEED)
    mailstack(previous_release, env, "up", "--seed", str(seed))
    before = f"before-upgrade-{uuid.uuid4().hex[:6]}"
    send(env, "alice@upgrade.test", before)
    send(env, "team@upgrade.test", f"{before}-team")
    assert wait_for(lambda: before in subjects(env, "alice@upgrade.test", "alice-upgrade-1"))
    # a message accepted while Dovecot is down waits in Postfix's queue; held there, it stays as queued
    stack(env).stop_service("dovecot")
    send(env, "bob@upgrade.test", f"{before}-queued")
    assert wait_for(lambda: bool(queued(env))), "the message never reached the queue"
    held = queued(env)[0]["queue_id"]
    postfix(env, "postsuper", "-h", str(held))
    assert [entry["queue_name"] for entry in queued(env)] == ["hold"]

    mailstack(REPOSITORY, env, "up")  # this release's code and images, the same project and volumes
    # the migrations ran in place: the default flavour's quota column (NULL: unlimited) and alias_domains table
    connection = Database.for_stack(stack(env)).connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT email, quota FROM users ORDER BY email")
            assert cursor.fetchall() == (("alice@upgrade.test", None), ("bob@upgrade.test", None))
            cursor.execute("SELECT COUNT(*) FROM alias_domains")
            assert cursor.fetchone() == (0,)
    finally:
        connection.close()

    # Postfix's MariaDB watcher reads the id of MariaDB's run (made at every start, in a database the old volume
    # did not have): "<start> <uptime> <run id>"
    probe = postfix(env, "postmap", "-q", "uptime", "mysql:/etc/postfix/sql/server_uptime.cf").strip()
    assert re.fullmatch(r"\d+ \d+ [0-9a-f-]{36}", probe), probe

    users = json.loads(mailstack(REPOSITORY, env, "user", "list", "--json"))
    assert sorted(user["address"] for user in users) == ["alice@upgrade.test", "bob@upgrade.test"]
    aliases = json.loads(mailstack(REPOSITORY, env, "alias", "list", "--json"))
    assert aliases == [{"source": "team@upgrade.test", "destinations": ["alice@upgrade.test", "bob@upgrade.test"]}]
    assert sorted(subjects(env, "alice@upgrade.test", "alice-upgrade-1")) == sorted([before, f"{before}-team"])
    kept = queued(env)
    assert [(entry["queue_id"], entry["queue_name"]) for entry in kept] == [(held, "hold")]
    postfix(env, "postsuper", "-H", str(held))  # released and flushed: the new release delivers it
    postfix(env, "postqueue", "-f")
    assert wait_for(lambda: f"{before}-queued" in subjects(env, "bob@upgrade.test", "bob-upgrade-2"))
    assert queued(env) == []
    after = f"after-upgrade-{uuid.uuid4().hex[:6]}"
    send(env, "bob@upgrade.test", after, login=("alice@upgrade.test", "alice-upgrade-1"))
    assert wait_for(lambda: after in subjects(env, "bob@upgrade.test", "bob-upgrade-2"))
    assert sorted(subjects(env, "bob@upgrade.test", "bob-upgrade-2")) == sorted(
        [f"{before}-team", f"{before}-queued", after])
    assert "checks passed" in mailstack(REPOSITORY, env, "doctor")  # green (it exits 1 on any failure)
