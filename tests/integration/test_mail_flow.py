"""Issue 3: mail flows end to end, and the stack refuses what it must.

Every test uses fresh users (mail_user / mail_user_factory) and a unique subject, and polls the mailbox
with a deadline; TLS is always verified against the stack's CA.
"""

from __future__ import annotations

import base64
import email.message
import email.policy
import email.utils
import os
import poplib
import smtplib
import socket
import ssl
import warnings

import aiosmtplib
import pytest
from mailstack.api import MailStack, User


def _message(sender: str, to: str, subject: str, body: str = "hello") -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = email.utils.make_msgid(domain="client.test")
    message.set_content(body)
    return message


async def _submit(stack: MailStack, user: User, message: email.message.EmailMessage, *, port: str = "submission",
                  mechanism: str | None = None) -> None:
    endpoint = getattr(stack.endpoints, port)
    implicit = port == "smtps"
    client = aiosmtplib.SMTP(hostname=endpoint.host, port=endpoint.port, tls_context=stack.ssl_context(),
                             use_tls=implicit, start_tls=not implicit, local_hostname="client.test", timeout=30)
    async with client:
        await client.ehlo()
        if mechanism == "LOGIN":
            await client.auth_login(user.address, user.password)
        elif mechanism == "PLAIN":
            await client.auth_plain(user.address, user.password)
        else:
            await client.login(user.address, user.password)
        errors, _ = await client.send_message(message)
        assert not errors


# --- delivery --------------------------------------------------------------------------------


async def test_inbound_on_25_keeps_subject_body_headers_and_utf8(mailstack: MailStack, mail_user: User,
                                                                 unique: str) -> None:
    subject = f"Grüße aus Köln ✉ {unique}"
    body = "Ünïcödé body — ça marche.\nSecond line.\n"
    message = _message("Outside Sender <someone@outside.test>", mail_user.address, subject, body)
    message["X-Test-Header"] = f"kept-{unique}"
    endpoint = mailstack.endpoints.smtp
    async with aiosmtplib.SMTP(hostname=endpoint.host, port=endpoint.port, tls_context=mailstack.ssl_context(),
                               start_tls=False, local_hostname="client.test") as client:
        errors, reply = await client.send_message(message)
    assert not errors and reply.startswith("2.0.0 Ok: queued")
    received = mailstack.wait_for_message(mail_user, message_id=message["Message-ID"])
    assert received["Subject"] == subject
    assert received["X-Test-Header"] == f"kept-{unique}"
    assert received["Message-ID"] == message["Message-ID"]
    assert received.get_content().replace("\r\n", "\n") == body


async def test_inbound_multi_megabyte_attachment_arrives_intact(mailstack: MailStack, mail_user: User,
                                                                unique: str) -> None:
    payload = os.urandom(3 * 1024 * 1024)
    message = _message("someone@outside.test", mail_user.address, f"attachment {unique}")
    message.add_attachment(payload, maintype="application", subtype="octet-stream", filename="blob.bin")
    mailstack.send(None, to=mail_user.address, message=message)
    received = mailstack.wait_for_message(mail_user, subject=f"attachment {unique}", timeout=30)
    attachments = list(received.iter_attachments())
    assert [part.get_filename() for part in attachments] == ["blob.bin"]
    assert attachments[0].get_content() == payload


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_submission_587_starttls_auth_delivers(mailstack: MailStack, mail_user_factory, unique: str,
                                                     mechanism: str) -> None:
    sender, recipient = mail_user_factory(), mail_user_factory()
    message = _message(sender.address, recipient.address, f"587 {mechanism} {unique}")
    await _submit(mailstack, sender, message, mechanism=mechanism)
    assert mailstack.wait_for_message(recipient, message_id=message["Message-ID"])


async def test_submission_to_alias_reaches_both_destinations(mailstack: MailStack, mail_user_factory,
                                                             unique: str) -> None:
    sender, first, second = mail_user_factory(), mail_user_factory(), mail_user_factory()
    alias = f"team-{unique}@{mailstack.domain}"
    mailstack.add_alias(alias, first.address, second.address)
    message = _message(sender.address, alias, f"alias {unique}")
    await _submit(mailstack, sender, message)
    for member in (first, second):
        received = mailstack.wait_for_message(member, message_id=message["Message-ID"])
        assert received["To"] == alias


async def test_smtps_465_implicit_tls_auth_delivers(mailstack: MailStack, mail_user_factory, unique: str) -> None:
    sender, recipient = mail_user_factory(), mail_user_factory()
    message = _message(sender.address, recipient.address, f"465 {unique}")
    await _submit(mailstack, sender, message, port="smtps")
    assert mailstack.wait_for_message(recipient, message_id=message["Message-ID"])


def test_read_back_over_pop3s(mailstack: MailStack, mail_user: User, unique: str) -> None:
    message_id = mailstack.send(None, to=mail_user.address, subject=f"pop3 {unique}")
    mailstack.wait_for_message(mail_user, message_id=message_id)
    endpoint = mailstack.endpoints.pop3s
    pop = poplib.POP3_SSL(endpoint.host, endpoint.port, context=mailstack.ssl_context(), timeout=30)
    try:
        pop.user(mail_user.address)
        pop.pass_(mail_user.password)
        count, _size = pop.stat()
        assert count == 1
        lines = pop.retr(1)[1]
        received = email.message_from_bytes(b"\r\n".join(lines), policy=email.policy.default)
        assert received["Message-ID"] == message_id
    finally:
        pop.quit()


def test_address_with_a_quote_works_end_to_end(mailstack: MailStack, unique: str) -> None:
    user = mailstack.add_user(f"o'brien-{unique}@{mailstack.domain}")
    message_id = mailstack.send(None, to=user.address, subject=f"quote {unique}")
    assert mailstack.wait_for_message(user, message_id=message_id)


# --- refusals ----------------------------------------------------------------------------------


def _plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def _smtp(stack: MailStack, port: str = "smtp") -> smtplib.SMTP:
    endpoint = getattr(stack.endpoints, port)
    return smtplib.SMTP(endpoint.host, endpoint.port, local_hostname="client.test", timeout=30)


def test_no_relay_to_outside_domains_on_25(mailstack: MailStack) -> None:
    with _smtp(mailstack) as smtp:
        smtp.starttls(context=mailstack.ssl_context())
        smtp.ehlo()
        assert smtp.mail("someone@outside.test")[0] == 250
        code, text = smtp.rcpt("victim@elsewhere.test")
    assert code in (454, 554), (code, text)
    assert b"Relay access denied" in text


def test_unknown_local_recipient_is_refused_at_rcpt(mailstack: MailStack, unique: str) -> None:
    with _smtp(mailstack) as smtp:
        smtp.ehlo()
        smtp.mail("someone@outside.test")
        code, text = smtp.rcpt(f"nobody-{unique}@{mailstack.domain}")
    assert code == 550, (code, text)
    assert b"User unknown" in text


def test_submission_offers_no_auth_before_starttls_and_refuses_it(mailstack: MailStack) -> None:
    with _smtp(mailstack, "submission") as smtp:
        smtp.ehlo()
        assert not smtp.has_extn("auth")
        assert smtp.has_extn("starttls")
        code, text = smtp.docmd("AUTH", "PLAIN AGFsaWNlAHNlY3JldA==")
    assert code >= 500, (code, text)


def test_submission_refuses_mail_without_auth(mailstack: MailStack, mail_user: User) -> None:
    with _smtp(mailstack, "submission") as smtp:
        smtp.starttls(context=mailstack.ssl_context())
        smtp.ehlo()
        assert smtp.has_extn("auth")
        code, text = smtp.mail(mail_user.address)
        if code == 250:  # refused at the latest at RCPT
            code, text = smtp.rcpt(mail_user.address)
    assert code >= 500 and code != 250, (code, text)


def test_submission_requires_tls_for_mail(mailstack: MailStack, mail_user: User) -> None:
    with _smtp(mailstack, "submission") as smtp:
        smtp.ehlo()
        code, text = smtp.mail(mail_user.address)
    assert code == 530 and b"STARTTLS" in text, (code, text)


@pytest.mark.parametrize("port", ["submission", "smtps"])
def test_wrong_password_is_refused_with_535(mailstack: MailStack, mail_user: User, port: str) -> None:
    endpoint = getattr(mailstack.endpoints, port)
    context = mailstack.ssl_context()
    if port == "smtps":
        smtp = smtplib.SMTP_SSL(endpoint.host, endpoint.port, local_hostname="client.test", context=context)
    else:
        smtp = smtplib.SMTP(endpoint.host, endpoint.port, local_hostname="client.test")
        smtp.starttls(context=context)
    with smtp:
        smtp.ehlo()
        code, text = smtp.docmd("AUTH", "PLAIN " + _plain(mail_user.address, mail_user.password + "-wrong"))
    assert code == 535, (code, text)
    assert b"authentication failed" in text


def test_authenticated_user_cannot_send_as_someone_else(mailstack: MailStack, mail_user_factory) -> None:
    sender, victim = mail_user_factory(), mail_user_factory()
    with _smtp(mailstack, "submission") as smtp:
        smtp.starttls(context=mailstack.ssl_context())
        smtp.login(sender.address, sender.password)
        code, text = smtp.mail(victim.address)
        if code == 250:
            code, text = smtp.rcpt(victim.address)
    assert code == 553, (code, text)
    assert b"not owned by user" in text


def test_imap_and_pop3_refuse_connections_without_tls(mailstack: MailStack) -> None:
    probes = ((mailstack.endpoints.imaps, b"a LOGIN x y\r\n"), (mailstack.endpoints.pop3s, b"USER x\r\n"))
    for endpoint, command in probes:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=10) as sock:
            sock.sendall(command)
            sock.settimeout(5)
            try:
                answer = sock.recv(1024)
            except (TimeoutError, ConnectionResetError):
                answer = b""
        assert not answer.startswith((b"* OK", b"+OK", b"a OK")), answer


def test_imap_refuses_wrong_password_and_unknown_user(mailstack: MailStack, mail_user: User, unique: str) -> None:
    from imapclient import IMAPClient
    from imapclient.exceptions import LoginError

    endpoint = mailstack.endpoints.imaps
    for address, password in ((mail_user.address, "wrong-password"), (f"ghost-{unique}@example.test", "whatever1")):
        with IMAPClient(endpoint.host, port=endpoint.port, ssl_context=mailstack.ssl_context()) as client, \
                pytest.raises(LoginError):
            client.login(address, password)


def test_tls_versions_below_1_2_are_refused_on_imaps(mailstack: MailStack) -> None:
    endpoint = mailstack.endpoints.imaps
    context = mailstack.ssl_context()
    with warnings.catch_warnings():  # the old versions are deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with socket.create_connection((endpoint.host, endpoint.port), timeout=10) as raw, \
            pytest.raises(ssl.SSLError):
        context.wrap_socket(raw, server_hostname="localhost")
