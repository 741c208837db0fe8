"""Issue 16: LMTP, SASL auth and quota-status over TCP (MAILSTACK_LMTP_AUTH_TCP=1, MailStack(lmtp_auth_tcp=True)),
as when Postfix and Dovecot run on different machines: the key flows (25/587/465 -> IMAPS, SASL over TCP,
quota 552 at RCPT) on a stack with it on; the listeners answer Postfix and nobody else on the stack's network;
the unix sockets are gone; mail waits in the queue while Dovecot is down; Sieve's mail still leaves with the
outside world on; and `down` without the setting leaves no network behind. The rest of the mail-flow suite runs
with it on through the plugin: `pytest tests/integration/test_mail_flow.py ... --mailstack-lmtp-tcp`."""

from __future__ import annotations

import base64
import json
import re
import shutil
import smtplib
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from helpers import smtp_client, wait_for
from mailstack import cli
from mailstack.api import MailStack, User
from mailstack.settings import load_settings
from mailstack.stack import Stack, project_resources, remove_project
from typer.testing import CliRunner, Result

PORTS = {"lmtp": 24, "auth": 12345, "quota-status": 12340}  # images/dovecot/entrypoint.sh
INTERNAL = "dovecot-internal"  # compose.lmtp-tcp.yaml: Postfix's /etc/hosts name for Dovecot's fixed internal address
KIB = 1024


@pytest.fixture(scope="module")
def tcp() -> Iterator[MailStack]:
    with MailStack(lmtp_auth_tcp=True) as stack:
        yield stack


def run(stack: MailStack, *args: str) -> Result:
    return CliRunner().invoke(cli.app, ["--project", stack.settings.project,
                                        "--state-dir", str(stack.settings.state_dir), *args])


def connect(stack: MailStack, service: str, host: str, port: int, timeout: int = 2) -> subprocess.CompletedProcess:
    """A TCP connection attempt from inside one of the stack's containers (bash's /dev/tcp)."""
    script = f'exec 3<>"/dev/tcp/{host}/{port}" && echo connected'
    return stack.stack.exec(service, ["timeout", str(timeout), "bash", "-c", script], check=False)


def lmtp_peers(stack: MailStack) -> list[str]:
    """Where Dovecot's LMTP connections came from ("local" for its unix socket)."""
    return re.findall(r"lmtp\(\d+\): Info: Connect from (\S+)", stack.stack.logs("dovecot"))


def smtp_send(stack: MailStack, to: str, subject: str, size: int = 200, user: User | None = None,
              port: str = "smtp") -> tuple[int, str]:
    """One message on 25 (no AUTH), 587 (STARTTLS + AUTH) or 465 (implicit TLS + AUTH); the RCPT or DATA reply."""
    sender = user.address if user else "someone@outside.test"
    body = (f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@client.test>\r\n\r\n"
            + ("x" * 76 + "\r\n") * max(1, size // 78))
    with smtp_client(stack, port) as smtp:
        if user:
            smtp.login(user.address, user.password)
        try:
            smtp.sendmail(sender, [to], body)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = exc.recipients[to]
            return code, text.decode(errors="replace")
    return 250, "accepted"


def test_postfix_uses_the_tcp_listeners_and_dovecot_makes_no_sockets(tcp: MailStack) -> None:
    said = tcp.stack.exec("postfix", ["postconf", "-h", "virtual_transport", "smtpd_sasl_path", "quota_status_check",
                                      "lmtp_host_lookup"]).stdout.decode().splitlines()
    assert said == [f"lmtp:inet:{INTERNAL}:24", f"inet:{INTERNAL}:12345",
                    f"check_policy_service {{ inet:{INTERNAL}:12340, timeout=5s, default_action=DUNNO, try_limit=1 }}",
                    "native"]
    sockets = [f"/var/spool/postfix/private/{name}" for name in ("auth", "dovecot-lmtp", "quota-status")]
    found = tcp.stack.exec("postfix", ["ls", *sockets], check=False)
    assert found.returncode != 0 and found.stdout == b"", found  # none of them: nothing falls back to a socket


def test_mail_on_25_587_and_465_arrives_over_imaps_through_lmtp_over_tcp(tcp: MailStack) -> None:
    sender, recipient = tcp.add_user(), tcp.add_user()
    token = uuid.uuid4().hex[:8]
    assert smtp_send(tcp, recipient.address, f"{token}-25") == (250, "accepted")
    assert smtp_send(tcp, recipient.address, f"{token}-587", user=sender, port="submission") == (250, "accepted")
    assert smtp_send(tcp, recipient.address, f"{token}-465", user=sender, port="smtps") == (250, "accepted")
    for port in (25, 587, 465):
        assert tcp.wait_for_message(recipient, subject=f"{token}-{port}")
    postfix = set(tcp.stack.snapshot()["postfix"].addresses)
    peers = lmtp_peers(tcp)
    assert peers and set(peers) <= postfix, (peers, postfix)  # Postfix's address, never "local" (a socket)


@pytest.mark.parametrize("port", ["submission", "smtps"])
def test_sasl_over_tcp_takes_the_password_and_refuses_a_wrong_one(tcp: MailStack, port: str) -> None:
    user = tcp.add_user()

    def auth(password: str) -> int:
        with smtp_client(tcp, port) as smtp:
            smtp.ehlo()
            plain = base64.b64encode(f"\0{user.address}\0{password}".encode()).decode()
            return smtp.docmd("AUTH", f"PLAIN {plain}")[0]

    assert auth(user.password) == 235
    assert auth(user.password + "-wrong") == 535


def test_over_quota_is_refused_with_552_by_quota_status_over_tcp(tcp: MailStack) -> None:
    full, author = tcp.add_user(quota="20K"), tcp.add_user()
    token = uuid.uuid4().hex[:8]
    for number in (1, 2):
        assert smtp_send(tcp, full.address, f"{token}-fill-{number}", 8 * KIB) == (250, "accepted")
        tcp.wait_for_message(full, subject=f"{token}-fill-{number}")
    for user, port in ((None, "smtp"), (author, "submission")):
        code, text = smtp_send(tcp, full.address, f"{token}-over-{port}", 8 * KIB, user=user, port=port)
        assert (code, text.startswith("5.2.2 "), text.endswith("Mailbox is full")) == (552, True, True), text
    assert tcp.queue() == []


def test_the_listeners_answer_postfix_and_nobody_else_on_the_stack_network(tcp: MailStack) -> None:
    for port in PORTS.values():
        assert connect(tcp, "postfix", INTERNAL, port).stdout == b"connected\n", port
    internal = tcp.stack.exec("postfix", ["getent", "hosts", INTERNAL]).stdout.split()[0].decode()
    # MariaDB's container shares the stack's default network with Dovecot, not the internal one
    assert tcp.stack.exec("mysql", ["getent", "hosts", INTERNAL], check=False).returncode == 2  # no such name there
    for port in PORTS.values():
        by_name = connect(tcp, "mysql", "dovecot", port)  # Dovecot's address on the default network
        assert by_name.returncode == 1 and b"Connection refused" in by_name.stderr, (port, by_name)
        direct = connect(tcp, "mysql", internal, port)  # its internal address: no route from here
        assert direct.returncode == 124 and direct.stdout == b"", (port, direct)  # dropped: the timeout ended it


def test_doctor_checks_the_tcp_listeners(tcp: MailStack) -> None:
    result = run(tcp, "doctor", "--json")
    found = {check["name"]: check for check in json.loads(result.stdout)["checks"]}
    assert result.exit_code == 0, result.stdout
    assert "sockets" not in found
    assert found["tcp listeners"]["status"] == "ok", found["tcp listeners"]
    assert found["tcp listeners"]["detail"].startswith(f"{INTERNAL}: lmtp 24, auth 12345, quota-status 12340")


def test_mail_waits_in_the_queue_while_dovecot_is_down_and_is_delivered_after(tcp: MailStack) -> None:
    recipient = tcp.add_user(quota="1M")  # quota-status is asked for it: skipped (DUNNO) while Dovecot is down
    token = uuid.uuid4().hex[:8]
    tcp.stack.stop_service("dovecot")
    try:
        assert smtp_send(tcp, recipient.address, f"{token}-queued") == (250, "accepted")
        assert wait_for(lambda: any(entry.recipients for entry in tcp.queue()), timeout=10)
    finally:
        tcp.stack.start_service("dovecot")
        tcp.stack.wait_ready(["dovecot"])
    assert tcp.wait_for_message(recipient, subject=f"{token}-queued", timeout=30)  # fast_retry: retried in seconds
    assert wait_for(lambda: tcp.queue() == [], timeout=10)


def test_sieve_mail_leaves_for_the_outside_world_with_tcp_on() -> None:
    """With the world, Sieve's mail goes from Dovecot to Postfix's internal listener (10025), which takes it from
    Dovecot's fixed address on the default network only: with two networks Dovecot must still come from there."""
    with MailStack(world=True, lmtp_auth_tcp=True) as world:
        user = world.add_user()
        world.set_sieve(user, 'require "vacation";\nvacation :days 1 :subject "away" "I am away.";\n')
        sender = f"friend-{uuid.uuid4().hex[:6]}@outside.test"
        reply = world.send_from_outside(user.address, from_=sender, spf="pass", subject="are you there?")
        assert reply.accepted, reply
        assert world.wait_for_outbound(to=sender, subject="away")
        assert set(lmtp_peers(world)) <= set(world.stack.snapshot()["postfix"].addresses)


def test_down_without_the_setting_leaves_no_network_behind() -> None:
    """compose removes only the networks its files name; `mailstack down` from a shell without
    MAILSTACK_LMTP_AUTH_TCP must still take the internal network away."""
    project = f"mailstack-test-{uuid.uuid4().hex[:8]}"
    stack = MailStack(project=project, keep=True, lmtp_auth_tcp=True)  # kept: stop() leaves it to `down`
    try:
        stack.start()
        settings = load_settings(project=project, state_dir=stack.settings.state_dir, world=False, webmail=False)
        assert not settings.lmtp_auth_tcp
        Stack(settings).down(volumes=True)
        assert project_resources(project) == {"containers": [], "volumes": [], "networks": []}
    finally:
        stack.stop()
        remove_project(project)
        shutil.rmtree(stack.settings.state_dir, ignore_errors=True)
