"""Issue 12: alias domains and catch-alls on the default and virtual flavours, and the default flavour's quota.
One disposable stack per flavour, started together. Real clients (smtplib over STARTTLS, IMAPS), TLS verified
against each stack's CA, fresh users and unique subjects, polling with deadlines.

Each stack: example.test (catch-all -> a catch-all mailbox), other.test (alias domain of example.test),
plain.test (no catch-all) and plain-alias.test (alias domain of plain.test)."""

from __future__ import annotations

import json
import smtplib
import uuid
from collections.abc import Iterator

import pytest
from helpers import started_together
from mailstack import cli
from mailstack.api import MailStack, User
from typer.testing import CliRunner

FLAVOURS = ("default", "virtual")
KIB = 1024
CATCH_ALL = User("catchall@example.test", "catch-all-password-1")
SEED = {
    "domains": ["example.test", "other.test", "plain.test", "plain-alias.test"],
    "users": [{"address": CATCH_ALL.address, "password": CATCH_ALL.password}],
    "alias_domains": [{"alias": "other.test", "target": "example.test"},
                      {"alias": "plain-alias.test", "target": "plain.test"}],
    "catch_all": {"example.test": [CATCH_ALL.address]},
}


@pytest.fixture(scope="module")
def stacks() -> Iterator[dict[str, MailStack]]:
    started = {name: MailStack(seed=SEED, schema=name) for name in FLAVOURS}
    with started_together(started):
        yield started


@pytest.fixture(params=FLAVOURS)
def stack(request: pytest.FixtureRequest, stacks: dict[str, MailStack]) -> MailStack:
    return stacks[request.param]


def token() -> str:
    return uuid.uuid4().hex[:10]


def local(user: User) -> str:
    return user.address.split("@")[0]


def send(stack: MailStack, to: str, subject: str, size: int = 0, user: User | None = None) -> tuple[int, str]:
    """One message on 25 (or 587 as user); (250, "accepted") or the refused recipient's code and text."""
    endpoint = stack.endpoints.submission if user else stack.endpoints.smtp
    sender = user.address if user else "someone@outside.test"
    body = ("x" * 76 + "\r\n") * (size // 78) if size else "hello\r\n"
    with smtplib.SMTP(endpoint.host, endpoint.port, local_hostname="client.test", timeout=30) as smtp:
        smtp.starttls(context=stack.ssl_context())
        if user:
            smtp.login(user.address, user.password)
        try:
            smtp.sendmail(sender, [to], f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
                                        f"Message-ID: <{subject}@mailstack.test>\r\n\r\n{body}\r\n")
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = exc.recipients[to]
            return code, text.decode(errors="replace")
    return 250, "accepted"


def count(stack: MailStack, user: User, subject: str) -> int:
    with stack.imap(user) as client:
        client.select_folder("INBOX", readonly=True)
        return len(client.search(["SUBJECT", subject]))


def cli_json(stack: MailStack, *args: str) -> object:
    result = CliRunner().invoke(cli.app, ["--project", stack.settings.project, "--state-dir",
                                          str(stack.settings.state_dir), "--schema", stack.settings.schema_flavour,
                                          *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_an_alias_domain_delivers_to_the_real_user(stack: MailStack) -> None:
    user = stack.add_user()
    subject = f"alias-domain-{token()}"
    assert send(stack, f"{local(user)}@other.test", subject) == (250, "accepted")
    stack.wait_for_message(user, subject=subject)


def test_a_real_mailbox_wins_over_its_domains_catch_all_also_through_the_alias_domain(stack: MailStack) -> None:
    user = stack.add_user()
    direct, via_alias = f"real-direct-{token()}", f"real-via-alias-{token()}"
    assert send(stack, user.address, direct) == (250, "accepted")
    assert send(stack, f"{local(user)}@other.test", via_alias) == (250, "accepted")
    stack.wait_for_message(user, subject=direct)
    stack.wait_for_message(user, subject=via_alias)
    # a later probe to the catch-all arriving means the two above would have arrived by now too
    probe = f"probe-{token()}"
    assert send(stack, f"nobody-{token()}@example.test", probe) == (250, "accepted")
    stack.wait_for_message(CATCH_ALL, subject=probe)
    assert (count(stack, CATCH_ALL, direct), count(stack, CATCH_ALL, via_alias)) == (0, 0)


def test_an_alias_in_the_target_domain_is_reached_through_the_alias_domain(stack: MailStack) -> None:
    user = stack.add_user()
    alias = f"team-{token()}"
    stack.add_alias(f"{alias}@example.test", user.address)
    subject = f"alias-via-alias-domain-{token()}"
    assert send(stack, f"{alias}@other.test", subject) == (250, "accepted")
    stack.wait_for_message(user, subject=subject)
    assert count(stack, CATCH_ALL, subject) == 0


def test_an_unknown_user_goes_to_the_catch_all_also_through_the_alias_domain(stack: MailStack) -> None:
    direct, via_alias = f"unknown-direct-{token()}", f"unknown-via-alias-{token()}"
    assert send(stack, f"nobody-{token()}@example.test", direct) == (250, "accepted")
    assert send(stack, f"nobody-{token()}@other.test", via_alias, user=stack.add_user()) == (250, "accepted")
    stack.wait_for_message(CATCH_ALL, subject=direct)
    stack.wait_for_message(CATCH_ALL, subject=via_alias)


def test_without_a_catch_all_an_unknown_user_is_550_and_outside_domains_stay_relay_denied(stack: MailStack) -> None:
    for address in (f"nobody-{token()}@plain.test", f"nobody-{token()}@plain-alias.test"):
        code, text = send(stack, address, f"refused-{token()}")
        assert code == 550, (address, text)
    code, text = send(stack, f"nobody-{token()}@outside.test", f"relay-{token()}")
    assert code == 554 and "Relay access denied" in text, text
    assert stack.queue() == []


def test_set_quota_then_over_quota_is_refused_with_552_and_user_list_shows_limit_and_usage(stack: MailStack) -> None:
    user = stack.add_user()  # unlimited at first (default flavour: quota NULL, so no quota_rule)
    mark = token()
    for number in (1, 2):  # 2 x 8 KiB, delivered while Dovecot knows the user as unlimited (and caches that)
        assert send(stack, user.address, f"{mark}-fill-{number}", 8 * KIB) == (250, "accepted")
        stack.wait_for_message(user, subject=f"{mark}-fill-{number}")
    assert stack.set_quota(user.address, "20K") == 20 * KIB
    code, text = send(stack, user.address, f"{mark}-over", 8 * KIB)
    assert (code, text.startswith("5.2.2 ")) == (552, True), text
    listed = {entry["address"]: entry for entry in cli_json(stack, "user", "list")}  # type: ignore[union-attr]
    assert listed[user.address]["quota"] == 20 * KIB
    assert 16 * KIB <= listed[user.address]["quota_used"] < 20 * KIB
    assert listed[user.address]["messages"] == 2
    assert listed[CATCH_ALL.address]["quota"] == 0  # unlimited
    assert stack.set_quota(user.address, "none") == 0
    code, text = send(stack, user.address, f"{mark}-unlimited-again", 8 * KIB)
    assert code == 250, text
    stack.wait_for_message(user, subject=f"{mark}-unlimited-again")


def test_alias_domains_and_catch_alls_are_listed(stack: MailStack) -> None:
    assert cli_json(stack, "alias-domain", "list") == [{"alias": "other.test", "target": "example.test"},
                                                       {"alias": "plain-alias.test", "target": "plain.test"}]
    assert cli_json(stack, "catch-all", "list") == [{"domain": "example.test", "destinations": [CATCH_ALL.address]}]


def test_the_default_flavours_migrated_column_and_table(stacks: dict[str, MailStack]) -> None:
    stack = stacks["default"]
    connection = stack.database.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT FROM information_schema.COLUMNS "
                           "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'users' AND COLUMN_NAME = 'quota'")
            assert cursor.fetchall() == (("bigint(20) unsigned", "YES", "NULL"),)
            stack.database.schema.store(cursor).create_tables()  # the migrations again: idempotent
            cursor.execute("SELECT COUNT(*) FROM alias_domains")
            assert cursor.fetchone() == (2,)
    finally:
        connection.close()
