"""The `mailstack` commands against the session's real stack: what they change is what Postfix and Dovecot
see (logins over IMAPS, mail through the aliases), refused input changes nothing, and trace follows real
messages through the real logs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from imapclient.exceptions import LoginError
from mailstack import cli
from mailstack.api import MailStack, User
from typer.testing import CliRunner, Result


def run(mailstack: MailStack, *args: str, input: str | None = None) -> Result:
    """The CLI in-process, pointed at the test stack (global options before the subcommand)."""
    return CliRunner().invoke(cli.app, ["--project", mailstack.settings.project,
                                        "--state-dir", str(mailstack.settings.state_dir), *args], input=input)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def listing(mailstack: MailStack, *args: str) -> list[dict[str, object]]:
    return json.loads(ok(run(mailstack, *args, "--json")).stdout)


def can_log_in(mailstack: MailStack, address: str, password: str) -> bool:
    try:
        with mailstack.imap(User(address, password)):
            return True
    except LoginError:
        return False


def traced(mailstack: MailStack, query: str, until: str, timeout: float = 15.0) -> dict[str, object]:
    """Poll `mailstack trace --json` until an outcome line contains `until` (logs arrive asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        result = run(mailstack, "trace", query, "--json")
        data = json.loads(result.stdout) if result.exit_code == 0 else {"outcome": []}
        if any(until in line for line in data["outcome"]):  # type: ignore[union-attr]
            return data
        if time.monotonic() > deadline:
            raise AssertionError(f"trace {query}: no outcome with {until!r}: {result.output}")
        time.sleep(0.2)  # poll interval, bounded by the deadline


def test_domain_user_lifecycle_is_what_dovecot_sees(mailstack: MailStack, unique: str) -> None:
    domain = f"d{unique}.test"
    address = f"carol@{domain}"
    ok(run(mailstack, "domain", "add", domain))
    assert {"name": domain, "users": 0, "aliases": 0} in listing(mailstack, "domain", "list")

    ok(run(mailstack, "user", "add", address, "--password-stdin", input="carol-password-1\n"))
    assert can_log_in(mailstack, address, "carol-password-1")
    users = listing(mailstack, "user", "list", "--domain", domain)
    assert users == [{"address": address, "domain": domain, "scheme": mailstack.settings.password_scheme,
                      "quota": 0, "quota_used": 0, "messages": 0}]  # 0: unlimited; nothing delivered yet

    ok(run(mailstack, "user", "passwd", address, input="carol-password-2\ncarol-password-2\n"))
    assert can_log_in(mailstack, address, "carol-password-2")
    assert not can_log_in(mailstack, address, "carol-password-1")  # Dovecot's login cache was flushed

    refused = run(mailstack, "domain", "remove", domain)
    assert refused.exit_code == 1 and "still has 1 user" in refused.stderr and "--force" in refused.stderr
    assert any(d["name"] == domain for d in listing(mailstack, "domain", "list"))

    ok(run(mailstack, "domain", "remove", domain, "--force"))
    assert all(d["name"] != domain for d in listing(mailstack, "domain", "list"))
    assert not can_log_in(mailstack, address, "carol-password-2")


def test_user_remove_stops_logins_at_once(mailstack: MailStack, mail_user: User) -> None:
    assert can_log_in(mailstack, mail_user.address, mail_user.password)  # now in Dovecot's login cache
    ok(run(mailstack, "user", "remove", mail_user.address))
    assert not can_log_in(mailstack, mail_user.address, mail_user.password)
    assert all(u["address"] != mail_user.address for u in listing(mailstack, "user", "list"))


@pytest.mark.parametrize(("args", "stdin", "message"), [
    (["user", "add", "eve@unknown-domain.test", "--password-stdin"], "eve-password\n", "not a local domain"),
    (["user", "add", "eve@example.test", "--password-stdin"], "short\n", "password too short"),
    (["user", "add", "not an address", "--password-stdin"], "eve-password\n", "invalid address"),
    (["alias", "add", "list@unknown-domain.test", "eve@example.test"], None, "not a local domain"),
    (["domain", "add", "example.test"], None, "already exists"),
])
def test_refused_input_changes_nothing(mailstack: MailStack, args: list[str], stdin: str | None,
                                       message: str) -> None:
    before = [listing(mailstack, kind, "list") for kind in ("domain", "user", "alias")]
    result = run(mailstack, *args, input=stdin)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and message in lines[0] and lines[1].startswith("hint: ")
    assert [listing(mailstack, kind, "list") for kind in ("domain", "user", "alias")] == before


def test_duplicate_user_is_refused(mailstack: MailStack, mail_user: User) -> None:
    result = run(mailstack, "user", "add", mail_user.address, "--password-stdin", input="another-password\n")
    assert result.exit_code == 1 and "already exists" in result.stderr
    assert can_log_in(mailstack, mail_user.address, mail_user.password)


def test_alias_delivers_to_its_destinations(mailstack: MailStack, mail_user: User, unique: str) -> None:
    alias = f"list-{unique}@{mailstack.domain}"
    ok(run(mailstack, "alias", "add", alias, mail_user.address))
    assert {"source": alias, "destinations": [mail_user.address]} in listing(mailstack, "alias", "list")
    mailstack.send(None, to=alias, subject=f"via alias {unique}")
    assert mailstack.wait_for_message(mail_user, subject=f"via alias {unique}")
    ok(run(mailstack, "alias", "remove", alias))
    assert all(a["source"] != alias for a in listing(mailstack, "alias", "list"))


def test_seed_dry_run_then_apply(mailstack: MailStack, unique: str, tmp_path: Path) -> None:
    seed = tmp_path / "seed.yaml"
    domain = f"s{unique}.test"
    seed.write_text(f"domains: [{domain}]\nusers:\n  - {{address: dan@{domain}, password: dan-password}}\n"
                    f"aliases:\n  - {{source: all@{domain}, destinations: [dan@{domain}]}}\n")
    dry = ok(run(mailstack, "seed", str(seed), "--dry-run"))
    assert f"would add user dan@{domain}" in dry.stdout
    assert all(d["name"] != domain for d in listing(mailstack, "domain", "list"))

    ok(run(mailstack, "seed", str(seed)))
    assert can_log_in(mailstack, f"dan@{domain}", "dan-password")
    again = ok(run(mailstack, "seed", str(seed)))
    assert "nothing to change" in again.stderr

    seed.write_text(f"domains: [{domain}]\nusers:\n  - address: x@{domain}\n    pasword: typo-password\n")
    result = run(mailstack, "seed", str(seed))
    assert result.exit_code == 1 and f"{seed}:4:" in result.stderr and "unknown key 'pasword'" in result.stderr
    assert all(u["address"] != f"x@{domain}" for u in listing(mailstack, "user", "list"))
    ok(run(mailstack, "domain", "remove", domain, "--force"))


def test_send_inbox_and_trace_follow_one_message(mailstack: MailStack, mail_user: User, unique: str) -> None:
    subject = f"cli send {unique}"
    result = ok(run(mailstack, "send", "--from", mail_user.address, "--to", mail_user.address,
                    "--subject", subject, "--password-stdin", input=f"{mail_user.password}\n"))
    words = result.stdout.split()
    queue_id = words[words.index("id") + 1]
    message_id = words[1]
    assert message_id.startswith("<") and message_id.endswith(">")
    mailstack.wait_for_message(mail_user, subject=subject)

    messages = json.loads(ok(run(mailstack, "inbox", mail_user.address, "--json", "--password-stdin",
                                 input=f"{mail_user.password}\n")).stdout)
    assert messages[0]["subject"] == subject and messages[0]["sender"] == mail_user.address
    assert messages[0]["message_id"] == message_id
    table = ok(run(mailstack, "inbox", mail_user.address, "--password-stdin", input=f"{mail_user.password}\n"))
    assert subject in table.stdout

    data = traced(mailstack, queue_id, until="saved to INBOX")
    assert data["queue_ids"] == [queue_id] and data["sasl_user"] == mail_user.address
    assert data["message_id"] == message_id.strip("<>")
    assert data["outcome"] == [f"delivered to {mail_user.address}, saved to INBOX"]
    human = ok(run(mailstack, "trace", message_id))
    assert f"=> delivered to {mail_user.address}, saved to INBOX" in human.stdout
    assert "accepted by smtpd (submission)" in human.stdout


def test_send_with_a_wrong_password_is_refused(mailstack: MailStack, mail_user: User) -> None:
    result = run(mailstack, "send", "--from", mail_user.address, "--to", mail_user.address, "--password-stdin",
                 input="not-the-password\n")
    assert result.exit_code == 1
    assert f"login as {mail_user.address} refused" in result.stderr and "user passwd" in result.stderr


def test_a_refused_recipient_is_named_and_traced(mailstack: MailStack, mail_user: User, unique: str) -> None:
    nobody = f"nobody-{unique}@{mailstack.domain}"
    result = run(mailstack, "send", "--from", mail_user.address, "--to", nobody, "--password-stdin",
                 input=f"{mail_user.password}\n")
    assert result.exit_code == 1 and "recipient refused, nothing was sent" in result.stderr and "550" in result.stderr
    data = traced(mailstack, nobody, until="rejected")
    assert data["outcome"] == [f"rejected: RCPT to <{nobody}>: 550 5.1.1 <{nobody}>: Recipient address rejected: "
                               "User unknown in virtual mailbox table"]


def test_trace_names_a_bounce(mailstack: MailStack, unique: str) -> None:
    alias = f"ghost-alias-{unique}@{mailstack.domain}"
    ghost = f"ghost-{unique}@{mailstack.domain}"
    mailstack.add_alias(alias, ghost)  # accepted at RCPT (an alias), then no such mailbox
    message_id = mailstack.send(None, to=alias, subject=f"bounce {unique}")
    data = traced(mailstack, message_id, until="bounced")
    assert data["outcome"][0].startswith(f"bounced for {ghost} (sent to {alias}):")  # type: ignore[index]
    assert "5.1.1" in data["outcome"][0]  # type: ignore[index]


def test_trace_of_an_unknown_id_says_so(mailstack: MailStack) -> None:
    result = run(mailstack, "trace", "ABCDEF012345")
    assert result.exit_code == 1 and "nothing in the logs about ABCDEF012345" in result.stderr


def test_client_config_matches_the_published_ports(mailstack: MailStack, mail_user: User) -> None:
    config = json.loads(ok(run(mailstack, "client-config", mail_user.address, "--json")).stdout)
    assert config["username"] == mail_user.address and config["ca_cert"] == str(mailstack.ca_cert)
    incoming = {s["protocol"]: s for s in config["incoming"]}
    assert incoming["IMAP"]["port"] == mailstack.endpoints.imaps.port and incoming["IMAP"]["security"] == "SSL/TLS"
    outgoing = {s["port"]: s for s in config["outgoing"]}
    assert outgoing[mailstack.endpoints.submission.port]["security"] == "STARTTLS"
    assert outgoing[mailstack.endpoints.smtps.port]["security"] == "SSL/TLS"
    human = ok(run(mailstack, "client-config", mail_user.address))
    assert str(mailstack.ca_cert) in human.stdout
    unknown = run(mailstack, "client-config", f"nobody@{mailstack.domain}")
    assert unknown.exit_code == 1 and "no user" in unknown.stderr


def test_a_stack_that_is_not_running_is_one_error_not_a_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mailstack", "--project", "mailstack-never-started", "--state-dir", str(tmp_path),
         "user", "list"], capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert result.stderr.splitlines() == ["error: the mail stack 'mailstack-never-started' is not running",
                                          "hint: start it with `make up` (or `mailstack up`)"]
