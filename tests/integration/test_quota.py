"""Quotas from the database, enforced before a message is accepted: Postfix asks Dovecot's quota-status at
RCPT, and a mailbox over its quota is refused with 552 on 25 and 587 (nothing accepted, no bounce queued);
an alias to a user under quota, and addresses Dovecot does not know, pass; usage shows over IMAP. Postfix
asks only for mailboxes with a limit (each flavour's quota map): on every flavour, and a limit set later
applies at once."""

from __future__ import annotations

import smtplib
import uuid
from collections.abc import Iterator

import pytest
from mailstack.api import MailStack, User

KIB = 1024


@pytest.fixture(scope="module", params=["default", "virtual", "postfixadmin"])
def stack(request: pytest.FixtureRequest, own_stack_options: dict[str, bool]) -> Iterator[MailStack]:
    with MailStack(schema=request.param, **own_stack_options) as s:  # each has a quota column, and its own quota map
        yield s


def message(sender: str, to: str, subject: str, size: int) -> str:
    return (f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@mailstack.test>\r\n"
            f"\r\n" + ("x" * 76 + "\r\n") * (size // 78) + "\r\n")


def send(stack: MailStack, to: str, subject: str, size: int, user: User | None = None) -> tuple[int, str]:
    """One message (smtplib declares SIZE= in MAIL FROM, as real clients do); the RCPT or DATA reply."""
    endpoint = stack.endpoints.submission if user else stack.endpoints.smtp
    sender = user.address if user else "someone@outside.test"
    with smtplib.SMTP(endpoint.host, endpoint.port, local_hostname="client.test", timeout=30) as smtp:
        smtp.starttls(context=stack.ssl_context())
        if user:
            smtp.login(user.address, user.password)
        try:
            smtp.sendmail(sender, [to], message(sender, to, subject, size))
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = exc.recipients[to]
            return code, text.decode(errors="replace")
    return 250, "accepted"


def test_over_quota_is_refused_at_rcpt_on_25_and_587_and_nothing_is_queued(stack: MailStack) -> None:
    full = stack.add_user(quota="20K")
    author = stack.add_user()
    token = uuid.uuid4().hex[:8]
    for number in (1, 2):  # 2 x 8 KiB into 20 KiB: accepted and delivered
        assert send(stack, full.address, f"{token}-fill-{number}", 8 * KIB) == (250, "accepted")
        stack.wait_for_message(full, subject=f"{token}-fill-{number}")
    # 16 KiB used: 8 more would pass the limit (and Dovecot's 10 % grace): refused before DATA
    code, text = send(stack, full.address, f"{token}-over-25", 8 * KIB)
    assert (code, text.startswith("5.2.2 "), text.endswith("Mailbox is full")) == (552, True, True), text
    code, text = send(stack, full.address, f"{token}-over-587", 8 * KIB, user=author)
    assert (code, text.startswith("5.2.2 "), text.endswith("Mailbox is full")) == (552, True, True), text
    assert stack.queue() == []  # not accepted, so no bounce either
    with stack.imap(full) as client:
        client.select_folder("INBOX", readonly=True)
        assert len(client.search(["SUBJECT", token])) == 2
        quota = client.get_quota_root("INBOX")[1]
        assert quota[0].resource == "STORAGE" and quota[0].limit == 20 and 16 <= quota[0].usage < 20, quota
    # a small message still fits
    assert send(stack, full.address, f"{token}-small", 1 * KIB) == (250, "accepted")
    stack.wait_for_message(full, subject=f"{token}-small")


def test_a_limit_set_later_is_checked_at_rcpt_at_once(stack: MailStack) -> None:
    later = stack.add_user()  # unlimited: Postfix does not ask quota-status for it
    token = uuid.uuid4().hex[:8]
    assert send(stack, later.address, f"{token}-before", 8 * KIB) == (250, "accepted")
    stack.wait_for_message(later, subject=f"{token}-before")
    stack.set_quota(later.address, "4K")  # now over it: the quota map names it, quota-status refuses
    code, text = send(stack, later.address, f"{token}-after", 2 * KIB)
    assert (code, text.endswith("Mailbox is full")) == (552, True), text
    stack.set_quota(later.address, "none")
    assert send(stack, later.address, f"{token}-unlimited", 2 * KIB) == (250, "accepted")


def test_aliases_and_users_under_quota_pass_the_policy(stack: MailStack) -> None:
    roomy = stack.add_user(quota="10M")
    unlimited = stack.add_user()
    alias = f"team-{uuid.uuid4().hex[:6]}@{stack.domain}"
    stack.add_alias(alias, roomy.address, unlimited.address)
    token = uuid.uuid4().hex[:8]
    assert send(stack, alias, f"{token}-alias", 2 * KIB) == (250, "accepted")  # quota_status_nouser = DUNNO
    stack.wait_for_message(roomy, subject=f"{token}-alias")
    stack.wait_for_message(unlimited, subject=f"{token}-alias")
    # unknown local users are still refused by Postfix's own check, before the policy
    code, _ = send(stack, f"nobody-{token}@{stack.domain}", f"{token}-nobody", KIB)
    assert code == 550


def test_mailbox_features_off_delivers_without_quota_or_policy() -> None:
    """mailbox_features=False (the benchmark's baseline): no quota plugin, no quota-status at RCPT."""
    with MailStack(schema="virtual", mailbox_features=False) as plain:
        tiny = plain.add_user(quota="1K")
        subject = f"plain-{uuid.uuid4().hex[:8]}"
        assert send(plain, tiny.address, subject, 8 * KIB) == (250, "accepted")  # over its 1 KiB: not refused
        plain.wait_for_message(tiny, subject=subject)
        for parameter in ("quota_status_check", "quota_limited_check"):
            assert plain.stack.exec("postfix", ["postconf", "-h", parameter]).stdout.strip() == b"", parameter
        plugins = plain.stack.exec("dovecot", ["doveconf", "-h", "mail_plugins"]).stdout.strip()
        assert plugins == b"", plugins
