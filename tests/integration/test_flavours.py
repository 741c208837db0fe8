"""Issue 11 §1: the built-in schema flavours end to end. One disposable stack per flavour (virtual =
ISPmail's tables, postfixadmin = PostfixAdmin's), started together; real clients, TLS verified against
each stack's CA; every test uses fresh users and a unique subject and polls with a deadline."""

from __future__ import annotations

import email.message
import email.utils
import poplib
import smtplib
import uuid
from collections.abc import Iterator
from pathlib import Path

import imapclient.exceptions
import pytest
from helpers import smtp_client, started_together
from mailstack.api import MailStack, User
from mailstack.db import Database
from mailstack.errors import MailstackError, NotReady

FLAVOURS = ("virtual", "postfixadmin")


@pytest.fixture(scope="module")
def stacks() -> Iterator[dict[str, MailStack]]:
    started = {name: MailStack(schema=name) for name in FLAVOURS}
    with started_together(started):
        yield started


@pytest.fixture(params=FLAVOURS)
def stack(request: pytest.FixtureRequest, stacks: dict[str, MailStack]) -> MailStack:
    return stacks[request.param]


def _unique() -> str:
    return uuid.uuid4().hex[:12]


def _message(sender: str, to: str, subject: str) -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, to, subject
    message["Message-ID"] = email.utils.make_msgid(domain="client.test")
    message.set_content("hello")
    return message


def _inbound(stack: MailStack, to: str, subject: str) -> str:
    """Port 25, as an outside sender; returns the Message-ID."""
    message = _message("someone@outside.test", to, subject)
    endpoint = stack.endpoints.smtp
    with smtplib.SMTP(endpoint.host, endpoint.port, local_hostname="client.test", timeout=30) as smtp:
        smtp.starttls(context=stack.ssl_context())
        smtp.send_message(message)
    return str(message["Message-ID"])


def _rcpt_code(stack: MailStack, recipient: str) -> int:
    endpoint = stack.endpoints.smtp
    with smtplib.SMTP(endpoint.host, endpoint.port, local_hostname="client.test", timeout=30) as smtp:
        smtp.starttls(context=stack.ssl_context())
        smtp.ehlo("client.test")
        smtp.mail("someone@outside.test")
        code, _ = smtp.rcpt(recipient)
    return code


def _not_delivered(stack: MailStack, user: User, message_id: str) -> bool:
    try:
        stack.wait_for_message(user, message_id=message_id, timeout=3)
    except NotReady:
        return True
    return False


# --- the mail-flow matrix, on each flavour --------------------------------------------------------


def test_the_database_holds_the_flavour_and_its_tables(stack: MailStack) -> None:
    with stack.database.transaction() as store:
        assert store.recorded_flavour() == stack.settings.schema_flavour
        store.cursor.execute("SHOW TABLES")
        tables = {row[0] for row in store.cursor.fetchall()}
    expected = {"virtual": {"virtual_domains", "virtual_users", "virtual_aliases"},
                "postfixadmin": {"domain", "mailbox", "alias", "alias_domain", "quota2"}}
    assert expected[stack.settings.schema_flavour] <= tables
    assert not {"domains", "users", "aliases"} & tables


def test_inbound_25_delivered_and_read_over_imaps_and_pop3s(stack: MailStack) -> None:
    user = stack.add_user()
    subject = f"inbound {_unique()}"
    message_id = _inbound(stack, user.address, subject)
    assert stack.wait_for_message(user, message_id=message_id)["Subject"] == subject
    endpoint = stack.endpoints.pop3s
    pop = poplib.POP3_SSL(endpoint.host, endpoint.port, context=stack.ssl_context(), timeout=30)
    try:
        pop.user(user.address)
        pop.pass_(user.password)
        count, _ = pop.stat()
        lines = b"\n".join(pop.retr(count)[1])
        assert subject.encode() in lines
    finally:
        pop.quit()


@pytest.mark.parametrize("port", ["submission", "smtps"])
def test_authenticated_submission_delivers(stack: MailStack, port: str) -> None:
    sender, recipient = stack.add_user(), stack.add_user()
    message = _message(sender.address, recipient.address, f"{port} {_unique()}")
    with smtp_client(stack, port) as smtp:
        smtp.login(sender.address, sender.password)
        smtp.send_message(message)
    assert stack.wait_for_message(recipient, message_id=message["Message-ID"])


def test_refusals_unknown_user_relay_and_wrong_password(stack: MailStack) -> None:
    assert _rcpt_code(stack, f"nobody-{_unique()}@{stack.domain}") == 550
    assert _rcpt_code(stack, "someone@elsewhere.test") in (454, 554)  # relay access denied
    user = stack.add_user()
    endpoint = stack.endpoints.submission
    with smtplib.SMTP(endpoint.host, endpoint.port, local_hostname="client.test", timeout=30) as smtp:
        smtp.starttls(context=stack.ssl_context())
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            smtp.login(user.address, "not-the-password")
    assert refused.value.smtp_code == 535


def test_a_real_user_keeps_its_mail_next_to_a_catch_all(stack: MailStack) -> None:
    domain = f"catchall-{_unique()}.test"
    stack.add_domain(domain)
    real = stack.add_user(f"real@{domain}")
    collector = stack.add_user()
    stack.add_alias(f"@{domain}", collector.address)
    subject = f"for the real user {_unique()}"
    message_id = _inbound(stack, real.address, subject)
    assert stack.wait_for_message(real, message_id=message_id)
    assert _not_delivered(stack, collector, message_id)
    stray = _inbound(stack, f"unknown-{_unique()}@{domain}", f"stray {_unique()}")
    assert stack.wait_for_message(collector, message_id=stray)


def test_quota_rule_is_visible_over_imap(stack: MailStack) -> None:
    user = stack.add_user(quota="50M")
    with stack.imap(user) as client:
        roots, quotas = client.get_quota_root("INBOX")
    assert roots.quota_roots
    storage = [q for q in quotas if q.resource == "STORAGE"]
    assert storage and storage[0].limit == 50 * 1024  # IMAP counts kilobytes


# --- postfixadmin only ----------------------------------------------------------------------------


@pytest.fixture
def postfixadmin(stacks: dict[str, MailStack]) -> MailStack:
    return stacks["postfixadmin"]


def test_postfixadmin_delivers_through_an_alias_domain(postfixadmin: MailStack) -> None:
    target = f"target-{_unique()}.test"
    alias_domain = f"alias-{_unique()}.test"
    postfixadmin.add_domain(target)
    user = postfixadmin.add_user(f"alice@{target}")
    postfixadmin.add_alias_domain(alias_domain, target)
    message_id = _inbound(postfixadmin, f"alice@{alias_domain}", f"via alias domain {_unique()}")
    assert postfixadmin.wait_for_message(user, message_id=message_id)["To"] == f"alice@{alias_domain}"
    assert _rcpt_code(postfixadmin, f"nobody@{alias_domain}") == 550


def test_postfixadmin_inactive_mailbox_gets_no_mail_and_cannot_log_in(postfixadmin: MailStack) -> None:
    user = postfixadmin.add_user()
    postfixadmin.set_user_active(user.address, False)
    assert _rcpt_code(postfixadmin, user.address) == 550
    with pytest.raises(imapclient.exceptions.LoginError):
        postfixadmin.imap(user)
    endpoint = postfixadmin.endpoints.submission
    with smtplib.SMTP(endpoint.host, endpoint.port, local_hostname="client.test", timeout=30) as smtp:
        smtp.starttls(context=postfixadmin.ssl_context())
        with pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.login(user.address, user.password)
    postfixadmin.set_user_active(user.address, True)
    message_id = _inbound(postfixadmin, user.address, f"enabled again {_unique()}")
    assert postfixadmin.wait_for_message(user, message_id=message_id)


def test_postfixadmin_inactive_alias_is_ignored(postfixadmin: MailStack) -> None:
    member = postfixadmin.add_user()
    alias = f"team-{_unique()}@{postfixadmin.domain}"
    postfixadmin.add_alias(alias, member.address)
    first = _inbound(postfixadmin, alias, f"alias active {_unique()}")
    assert postfixadmin.wait_for_message(member, message_id=first)
    postfixadmin.set_alias_active(alias, False)
    assert _rcpt_code(postfixadmin, alias) == 550


def test_postfixadmin_alias_destinations_merge_into_one_goto_row(postfixadmin: MailStack) -> None:
    first, second = postfixadmin.add_user(), postfixadmin.add_user()
    alias = f"list-{_unique()}@{postfixadmin.domain}"
    postfixadmin.add_alias(alias, first.address)
    postfixadmin.add_alias(alias, second.address, first.address)
    with postfixadmin.database.transaction() as store:
        store.cursor.execute("SELECT goto FROM alias WHERE address = %s", (alias,))
        assert store.cursor.fetchall() == ((f"{first.address},{second.address}",),)
        store.cursor.execute("SELECT goto, active FROM alias WHERE address = %s", (first.address,))
        assert store.cursor.fetchall() == ((first.address, 1),)  # every mailbox has its self-alias
        store.cursor.execute("SELECT maildir FROM mailbox WHERE username = %s", (first.address,))
        local, domain = first.address.split("@")
        assert store.cursor.fetchone() == (f"{domain}/{local}/",)
    message_id = _inbound(postfixadmin, alias, f"merged {_unique()}")
    for member in (first, second):
        assert postfixadmin.wait_for_message(member, message_id=message_id)


# --- another flavour's database is refused ----------------------------------------------------------


def test_a_database_of_another_flavour_is_refused(stacks: dict[str, MailStack]) -> None:
    running = stacks["virtual"]
    host, port = running.stack.db_address()
    wrong = Database(host, port, running.database.password, "postfixadmin")
    with pytest.raises(MailstackError) as refused:
        wrong.create_tables()
    assert "holds the virtual schema; MAILSTACK_SCHEMA=postfixadmin would not see its data" in refused.value.message
    assert "mailstack down --volumes" in str(refused.value.hint)


def test_an_existing_stack_keeps_its_flavour_and_another_is_refused_before_anything_changes(
        tmp_path: Path) -> None:
    from mailstack.api import bring_up
    from mailstack.errors import MailstackError
    from mailstack.settings import load_settings
    from mailstack.stack import Stack

    base = {"project": f"mailstack-flavour-{uuid.uuid4().hex[:6]}", "state_dir": tmp_path, "hash_cost": "fast",
            **{f"{port}_port": 0 for port in ("smtp", "submission", "smtps", "imaps", "pop3s", "managesieve")}}
    stack = bring_up(load_settings(**base, schema_flavour="postfixadmin"), provision_host=False)
    try:
        rendered = {p.name: p.read_bytes() for p in (tmp_path / "config").rglob("*") if p.is_file()}
        with pytest.raises(MailstackError, match="holds the postfixadmin schema"):
            bring_up(load_settings(**base, schema_flavour="virtual"), provision_host=False)
        assert {p.name: p.read_bytes() for p in (tmp_path / "config").rglob("*") if p.is_file()} == rendered
        # without a flavour named, `up` goes on in the stack's own
        again = bring_up(load_settings(**base), provision_host=False)
        assert again.settings.schema_flavour == "postfixadmin"
    finally:
        Stack(stack.settings).down(volumes=True)
