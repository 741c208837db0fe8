"""Issue 3's classic pitfalls, proven inside the real containers: hashes Dovecot verifies, DNS inside
Postfix's chroot, socket owners, maildir ownership."""

from __future__ import annotations

import smtplib
import time
import uuid

import pytest
from mailstack import passwords
from mailstack.api import MailStack, User


@pytest.mark.parametrize(("scheme", "cost"), [("ARGON2ID", "production"), ("ARGON2ID", "fast"),
                                              ("BLF-CRYPT", "production"), ("BLF-CRYPT", "fast")])
def test_dovecot_verifies_python_made_hashes(mailstack: MailStack, scheme: passwords.Scheme,
                                             cost: passwords.Cost) -> None:
    hashed = passwords.hash_password("s3cret-pass", scheme, cost)
    ok = mailstack.stack.exec("dovecot", ["doveadm", "pw", "-t", hashed, "-p", "s3cret-pass"], check=False)
    assert ok.returncode == 0, ok.stderr
    assert b"verified" in ok.stdout + ok.stderr
    wrong = mailstack.stack.exec("dovecot", ["doveadm", "pw", "-t", hashed, "-p", "not-it"], check=False)
    assert wrong.returncode != 0


def test_dovecot_authenticates_a_seeded_user_through_sql(mailstack: MailStack, mail_user: User) -> None:
    result = mailstack.stack.exec("dovecot", ["doveadm", "auth", "test", mail_user.address, mail_user.password],
                                  check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert b"auth succeeded" in result.stdout
    refused = mailstack.stack.exec("dovecot", ["doveadm", "auth", "test", mail_user.address, "nope-nope"],
                                   check=False)
    assert refused.returncode != 0


def test_ready_sha512_crypt_hash_from_an_old_database_logs_in(mailstack: MailStack) -> None:
    made = mailstack.stack.exec("dovecot", ["doveadm", "pw", "-s", "SHA512-CRYPT", "-p", "legacy-pass"])
    legacy_hash = made.stdout.decode().strip()
    assert legacy_hash.startswith("{SHA512-CRYPT}$6$")
    address = f"legacy-{legacy_hash[-8:].lower().replace('/', 'x').replace('.', 'x')}@{mailstack.domain}"
    with mailstack.database.transaction() as store:
        store.add_user(address, legacy_hash)
    with mailstack.imap(User(address, "legacy-pass")) as client:
        assert client.select_folder("INBOX")


def _rcpt_reply(mailstack: MailStack, recipient: str, timeout: float = 30) -> tuple[int, bytes]:
    """MAIL FROM an outsider and RCPT TO recipient on port 25; (-1, b"timed out") when Postfix hangs."""
    endpoint = mailstack.endpoints.smtp
    try:
        with smtplib.SMTP(endpoint.host, endpoint.port, local_hostname="client.test", timeout=timeout) as smtp:
            smtp.ehlo()
            code, text = smtp.mail("someone@outside.test")
            return smtp.rcpt(recipient) if code == 250 else (code, text)
    except (smtplib.SMTPServerDisconnected, TimeoutError):
        return -1, b"timed out"


def test_chrooted_services_resolve_the_database_host(mailstack: MailStack, mail_user: User) -> None:
    """smtpd and trivial-rewrite run chrooted in /var/spool/postfix and look up 'mysql' themselves: the
    chroot's resolv.conf must be Docker's current one. Break it, and lookups fail; sync it, and they work."""
    stack = mailstack.stack
    chroot_resolv = "/var/spool/postfix/etc/resolv.conf"
    current = stack.exec("postfix", ["cat", "/etc/resolv.conf"]).stdout
    assert stack.exec("postfix", ["cat", chroot_resolv]).stdout == current
    assert _rcpt_reply(mailstack, mail_user.address)[0] == 250
    try:
        broken = "nameserver 127.0.0.1\\noptions timeout:1 attempts:1\\n"  # what a chroot without the copy gets
        stack.exec("postfix", ["sh", "-c", f"printf '{broken}' > {chroot_resolv} && postfix reload"])
        # trivial-rewrite cannot resolve 'mysql' any more: MAIL FROM hangs (or a 4xx), never a 250
        code, text = _rcpt_reply(mailstack, mail_user.address, timeout=5)
        assert code == -1 or 400 <= code < 500, (code, text)
    finally:
        stack.exec("postfix", ["sh", "-c", "/usr/lib/postfix/configure-instance.sh - && postfix reload"])
    assert _rcpt_reply(mailstack, mail_user.address)[0] == 250


def test_postfix_check_is_clean(mailstack: MailStack) -> None:
    result = mailstack.stack.exec("postfix", ["postfix", "check"], check=False)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_shared_sockets_have_the_owners_postfix_needs(mailstack: MailStack) -> None:
    if mailstack.settings.lmtp_auth_tcp:
        pytest.skip("LMTP and auth over TCP (--mailstack-lmtp-tcp): no shared sockets (test_lmtp_tcp.py)")
    listing = mailstack.stack.exec("postfix", ["stat", "-c", "%n %F %u:%g %a", "/var/spool/postfix/private/auth",
                                               "/var/spool/postfix/private/dovecot-lmtp"]).stdout.decode()
    lines = dict(line.split(" ", 1) for line in listing.strip().splitlines())
    assert lines["/var/spool/postfix/private/auth"] == "socket 200:200 660"
    assert lines["/var/spool/postfix/private/dovecot-lmtp"] == "socket 200:200 600"
    postfix_ids = mailstack.stack.exec("postfix", ["id", "postfix"]).stdout
    dovecot_ids = mailstack.stack.exec("dovecot", ["id", "postfix"]).stdout
    assert postfix_ids == dovecot_ids


def test_maildir_belongs_to_vmail(mailstack: MailStack, mail_user: User, unique: str) -> None:
    message_id = mailstack.send(None, to=mail_user.address, subject=f"owner {unique}")
    mailstack.wait_for_message(mail_user, message_id=message_id)
    local, domain = mail_user.address.split("@")
    owner = mailstack.stack.exec("dovecot", ["stat", "-c", "%u:%g", f"/var/mail/vmail/{domain}/{local}/Maildir/new"])
    assert owner.stdout.decode().strip() == "5000:5000"


def test_postfix_notices_to_postmaster_are_delivered_not_looped(mailstack: MailStack) -> None:
    """Postfix sends its own notices (notify_classes, double bounces) to the *_notice_recipient addresses:
    they must be local (root@localhost), else each notice bounces with "loops back to myself"
    (the default, postmaster@$myorigin, is no local domain here). $myhostname itself stays non-local."""
    names = ["bounce_notice_recipient", "2bounce_notice_recipient", "delay_notice_recipient",
             "error_notice_recipient"]
    found = mailstack.stack.exec("postfix", ["postconf", "-h", *names]).stdout.decode().split()
    assert found == ["root@localhost"] * len(names), found
    marker = f"notice-{uuid.uuid4().hex[:8]}"
    mailstack.stack.exec("postfix", ["sendmail", "-f", "", found[0]],
                         input=f"Subject: {marker}\n\na notice as Postfix would send it\n".encode())
    deadline = time.monotonic() + 15
    while True:
        log = mailstack.stack.logs("postfix")
        delivered = [line for line in log.splitlines() if "to=<root@localhost>" in line and "relay=local" in line
                     and "status=sent" in line]
        if delivered or time.monotonic() > deadline:
            break
        time.sleep(0.1)  # poll interval, bounded by the deadline
    assert delivered, "\n".join(line for line in log.splitlines() if "postmaster" in line)[-2000:]
    assert "loops back to myself" not in log
    mailbox = mailstack.stack.exec("postfix", ["grep", "-c", marker, "/var/mail/root"]).stdout.strip()
    assert mailbox == b"1"
