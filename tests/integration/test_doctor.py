"""`mailstack doctor` on the real stack: green when all is well; break one thing on purpose and it names
that thing (and exits 1); repair it and it is green again. Every test repairs what it broke."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from mailstack import cli
from mailstack.api import MailStack, User
from mailstack.doctor import POSTFIX_GID, POSTFIX_UID, VMAIL_GID, VMAIL_UID
from typer.testing import CliRunner, Result


def run(mailstack: MailStack, *args: str) -> Result:
    return CliRunner().invoke(cli.app, ["--project", mailstack.settings.project,
                                        "--state-dir", str(mailstack.settings.state_dir), *args])


def checks(mailstack: MailStack, *args: str) -> tuple[int, dict[str, dict[str, str]]]:
    result = run(mailstack, "doctor", "--json", *args)
    data = json.loads(result.stdout)
    assert data["ok"] is (result.exit_code == 0)
    return result.exit_code, {check["name"]: check for check in data["checks"]}


def failing(mailstack: MailStack) -> dict[str, dict[str, str]]:
    _, found = checks(mailstack)
    return {name: check for name, check in found.items() if check["status"] == "fail"}


@pytest.fixture
def green(mailstack: MailStack) -> Iterator[None]:
    """The test starts from a green doctor and must leave it green."""
    assert failing(mailstack) == {}
    yield
    assert failing(mailstack) == {}


def test_doctor_is_green_on_a_healthy_stack(mailstack: MailStack, mail_user: User) -> None:
    result = run(mailstack, "doctor")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert all(line.startswith("ok ") for line in lines[:-1]), result.stdout
    assert lines[-1].startswith("all ") and lines[-1].endswith(" checks passed")
    names = {line[6:].split("  ")[0].strip() for line in lines[:-1]}
    assert {"containers", "postfix check", "map virtual_domains", "map virtual_mailboxes", "map virtual_aliases",
            "map sender_logins", "database (mailreader)", "dovecot user", "sockets", "chroot", "tls",
            "mailbox dir"} <= names

    code, found = checks(mailstack, "--user", mail_user.address)
    assert code == 0
    assert found["map virtual_mailboxes"]["detail"] == f"{mail_user.address} → 1"
    assert found["dovecot user"]["detail"].startswith(f"{mail_user.address}: home /var/mail/vmail/")


def test_doctor_names_an_unknown_user(mailstack: MailStack) -> None:
    nobody = f"nobody@{mailstack.domain}"
    code, found = checks(mailstack, "--user", nobody)
    assert code == 1
    assert found["dovecot user"]["status"] == "fail" and found["dovecot user"]["detail"] == f"no user {nobody}"
    assert found["map virtual_mailboxes"]["status"] == "fail"
    assert f"mailstack user add {nobody}" in found["dovecot user"]["hint"]


def test_wrong_owner_of_dovecots_auth_socket_is_named(mailstack: MailStack, green: None) -> None:
    stack = mailstack.stack
    auth = "/var/spool/postfix/private/auth"
    stack.exec("dovecot", ["chown", "0:0", auth])
    try:
        result = run(mailstack, "doctor")
        assert result.exit_code == 1
        (line,) = [line for line in result.stdout.splitlines() if line.startswith("fail ")]
        assert "sockets" in line and "private/auth is owned by 0:0, want postfix 200:200" in line
        assert "hint: " in line and "restart dovecot" in line
        assert result.stdout.strip().splitlines()[-1].startswith("1 of ")
    finally:
        stack.exec("dovecot", ["chown", f"{POSTFIX_UID}:{POSTFIX_GID}", auth])


def test_wrong_mode_of_the_lmtp_socket_is_named(mailstack: MailStack, green: None) -> None:
    stack = mailstack.stack
    lmtp = "/var/spool/postfix/private/dovecot-lmtp"
    stack.exec("dovecot", ["chmod", "0666", lmtp])
    try:
        assert failing(mailstack)["sockets"]["detail"] == "private/dovecot-lmtp has mode 0666, want 0600"
    finally:
        stack.exec("dovecot", ["chmod", "0600", lmtp])


def test_stale_chroot_resolv_conf_is_named_and_chroot_sync_repairs_it(mailstack: MailStack, green: None) -> None:
    stack = mailstack.stack
    stale = b"# an old copy\nnameserver 192.0.2.53\n"
    stack.exec("postfix", ["sh", "-c", "cat > /var/spool/postfix/etc/resolv.conf"], input=stale)
    try:
        failed = failing(mailstack)
        assert failed["chroot"]["detail"] == "/var/spool/postfix/etc/resolv.conf differs from /etc/resolv.conf"
        assert "chroot-sync" in failed["chroot"]["hint"]
        assert set(failed) <= {"chroot", "postfix check"}  # postfix check warns about the same file
        result = run(mailstack, "chroot-sync")
        assert result.exit_code == 0, result.output
    finally:
        stack.exec("postfix", ["/usr/lib/postfix/configure-instance.sh", "-"])
    copy = stack.exec("postfix", ["cat", "/var/spool/postfix/etc/resolv.conf"]).stdout
    assert copy == stack.exec("postfix", ["cat", "/etc/resolv.conf"]).stdout


def test_doctor_fix_chroot_repairs_a_missing_file(mailstack: MailStack, green: None) -> None:
    stack = mailstack.stack
    stack.exec("postfix", ["rm", "/var/spool/postfix/etc/services"])
    try:
        assert failing(mailstack)["chroot"]["detail"] == "/var/spool/postfix/etc/services is missing"
        code, found = checks(mailstack, "--fix-chroot")
        assert code == 0 and found["chroot"]["status"] == "ok"
    finally:
        stack.exec("postfix", ["/usr/lib/postfix/configure-instance.sh", "-"])


def test_mailbox_dir_not_writable_by_vmail_is_named(mailstack: MailStack, green: None) -> None:
    stack = mailstack.stack
    stack.exec("dovecot", ["chown", "root", "/var/mail/vmail"])
    try:
        failed = failing(mailstack)
        assert set(failed) == {"mailbox dir"}
        assert failed["mailbox dir"]["detail"].startswith("/var/mail/vmail is not writable by vmail (5000): owner")
    finally:
        stack.exec("dovecot", ["chown", f"{VMAIL_UID}:{VMAIL_GID}", "/var/mail/vmail"])
