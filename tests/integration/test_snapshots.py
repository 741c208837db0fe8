"""Issue 14 §3: snapshots of a running stack. One stack for the module (the session's), real clients, TLS
verified against the stack's CA; mail found by unique subjects, the queue by its recipients, with deadlines.

The tests save a snapshot, change users, mail and queue, restore, and check each part is as at the save;
refused restores (unknown name, another schema flavour) change nothing; the CLI's save/list/delete with
--json; and the plugin's mailstack_snapshot fixture undoing what a test did."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable
from contextlib import suppress

import imapclient.exceptions
import pytest
from helpers import queued
from imapclient import IMAPClient
from imapclient.exceptions import LoginError
from mailstack import cli, passwords, schema
from mailstack.api import MailStack, User
from mailstack.errors import MailstackError
from typer.testing import CliRunner, Result


def run(mailstack: MailStack, *args: str) -> Result:
    return CliRunner().invoke(cli.app, ["--project", mailstack.settings.project,
                                        "--state-dir", str(mailstack.settings.state_dir), *args])


def can_log_in(mailstack: MailStack, address: str, password: str) -> bool:
    try:
        with mailstack.imap(User(address, password)):
            return True
    except LoginError:
        return False


def subjects(mailstack: MailStack, user: User) -> list[str]:
    """The INBOX's subjects, seen by a session opened now."""
    with mailstack.imap(user) as client:
        client.select_folder("INBOX", readonly=True)
        found = client.search(["ALL"])
        data = client.fetch(found, ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]) if found else {}
    return sorted(value[b"BODY[HEADER.FIELDS (SUBJECT)]"].decode().split(":", 1)[1].strip()
                  for value in data.values())


def wait_until(condition: Callable[[], object], what: str, timeout: float = 20.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        time.sleep(0.05)  # poll interval, bounded by the deadline


def queued_to(mailstack: MailStack, address: str) -> list[dict]:
    return [entry for entry in queued(mailstack)
            if any(r.get("address") == address for r in entry.get("recipients", []))]


def deferred_message(mailstack: MailStack, sender: User, unique: str) -> str:
    """A message Postfix keeps queued: to an address literal where nothing listens (MariaDB's container,
    port 25: connection refused, deferred at once). Returns its recipient."""
    address = mailstack.stack.snapshot()["mysql"].addresses[0]
    recipient = f"nobody-{unique}@[{address}]"
    mailstack.send(sender, to=recipient, subject=f"queued {unique}")
    wait_until(lambda: [e for e in queued_to(mailstack, recipient) if e["queue_name"] == "deferred"],
               f"a deferred message to {recipient}")
    return recipient


def staging_left(mailstack: MailStack) -> list[str]:
    """What a restore staged or moved aside, if any of it is still there after a few seconds (the old
    files are deleted in the background)."""
    found: list[list[str]] = []
    with suppress(AssertionError):
        wait_until(lambda: not found.append(_staging_left(mailstack)) and not found[-1], "staging removed", 10)
    return found[-1]


def _staging_left(mailstack: MailStack) -> list[str]:
    stack = mailstack.stack
    left = stack.exec("dovecot", ["ls", "-A", "/var/mail/vmail"]).stdout.decode().split()
    left += stack.exec("postfix", ["ls", "-A", "/var/spool/postfix"]).stdout.decode().split()
    left += stack.exec("mysql", ["mariadb", "-N", "-e", "SHOW DATABASES"]).stdout.decode().split()
    return [name for name in left if "mailstack-restore" in name or "mailstack-old" in name
            or name.startswith("mailstack_")]


def test_restore_brings_back_users_mail_queue_and_logins(mailstack: MailStack, unique: str) -> None:
    alice = mailstack.add_user()
    mailstack.send(alice, to=alice.address, subject=f"kept {unique}")
    mailstack.wait_for_message(alice, subject=f"kept {unique}")
    held_to = deferred_message(mailstack, alice, f"held-{unique}")
    held_id = queued_to(mailstack, held_to)[0]["queue_id"]
    mailstack.stack.exec("postfix", ["postsuper", "-h", held_id])
    assert can_log_in(mailstack, alice.address, alice.password)  # now in Dovecot's auth cache
    name = f"t-{unique}"
    info = mailstack.snapshot(name)
    assert info.flavour == mailstack.settings.schema_flavour and set(info.parts) == {"database", "mail", "queue"}
    assert info.path.stat().st_mode & 0o077 == 0 and info.path.parent.stat().st_mode & 0o077 == 0

    # Changes: a new user, a new and a deleted message, a changed password (logged in with, so cached),
    # the held message deleted and another one queued.
    bob = mailstack.add_user()
    mailstack.send(bob, to=alice.address, subject=f"later {unique}")
    mailstack.wait_for_message(alice, subject=f"later {unique}")
    with mailstack.imap(alice) as client:
        client.select_folder("INBOX")
        client.delete_messages(client.search(["SUBJECT", f"kept {unique}"]))
        client.expunge()
    new_password = "changed-" + uuid.uuid4().hex[:8]
    with mailstack.database.transaction() as store:
        store.set_password(alice.address, passwords.hash_password(new_password, mailstack.settings.password_scheme,
                                                                  mailstack.settings.hash_cost))
    mailstack.stack.exec("dovecot", ["doveadm", "auth", "cache", "flush", alice.address])
    assert can_log_in(mailstack, alice.address, new_password)  # cached as the valid password now
    mailstack.stack.exec("postfix", ["postsuper", "-d", "ALL", "hold"])
    later_to = deferred_message(mailstack, bob, f"later-{unique}")
    session = mailstack.imap(User(alice.address, new_password))  # open across the restore
    session.select_folder("INBOX")

    restored = mailstack.restore(name)
    assert restored.name == name

    assert not can_log_in(mailstack, bob.address, bob.password)  # the user added since is gone
    assert not can_log_in(mailstack, alice.address, new_password)  # no stale cached login
    assert can_log_in(mailstack, alice.address, alice.password)  # the password at save works again
    assert subjects(mailstack, alice) == [f"kept {unique}"]  # a session opened now sees the mailbox at save
    queue = queued_to(mailstack, held_to) + queued_to(mailstack, later_to)
    assert [(entry["queue_name"], entry["recipients"][0]["address"]) for entry in queue] == [("hold", held_to)]
    with pytest.raises((imapclient.exceptions.IMAPClientError, OSError)):  # kicked: it saw the old files
        session.noop()
    assert staging_left(mailstack) == []
    # Postfix's queue manager took the restored queue over: the held message can be released and is retried.
    mailstack.stack.exec("postfix", ["postsuper", "-H", "ALL"])
    wait_until(lambda: [e for e in queued_to(mailstack, held_to) if e["queue_name"] == "deferred"],
               "the released message deferred again (retried)")
    mailstack.stack.exec("postfix", ["postsuper", "-d", "ALL", "deferred"])
    mailstack.delete_snapshot(name)


def test_an_unknown_name_is_refused_and_changes_nothing(mailstack: MailStack, unique: str) -> None:
    mailstack.snapshot(f"known-{unique}")
    user = mailstack.add_user()
    with pytest.raises(MailstackError) as refused:
        mailstack.restore(f"unknown-{unique}")
    assert f"unknown-{unique}" in refused.value.message and f"known-{unique}" in refused.value.message
    assert "\n" not in refused.value.message and "nothing was changed" in (refused.value.hint or "")
    assert can_log_in(mailstack, user.address, user.password)
    with pytest.raises(MailstackError, match="invalid snapshot name"):
        mailstack.restore("../etc")
    with pytest.raises(MailstackError, match="exists"):
        mailstack.snapshot(f"known-{unique}")
    assert mailstack.snapshot(f"known-{unique}", force=True).name == f"known-{unique}"
    mailstack.delete_snapshot(f"known-{unique}")


def test_a_snapshot_of_another_flavour_is_refused_and_changes_nothing(mailstack: MailStack, unique: str) -> None:
    """A snapshot records its flavour in its manifest, the stack's database records its own: they must agree.
    (The other flavour's snapshot is this stack's, relabelled: a stack per flavour costs a start.)"""
    own = mailstack.snapshot(f"own-{unique}")
    other = own.path.with_name(f"other-{unique}")
    shutil.copytree(own.path, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["flavour"] = "postfixadmin" if own.flavour != "postfixadmin" else "virtual"
    (other / "manifest.json").write_text(json.dumps(manifest))
    user = mailstack.add_user()
    mailstack.send(user, to=user.address, subject=f"after {unique}")
    mailstack.wait_for_message(user, subject=f"after {unique}")

    with pytest.raises(MailstackError, match=f"holds the {manifest['flavour']} schema flavour") as refused:
        mailstack.restore(other.name)
    assert "nothing was changed" in (refused.value.hint or "")
    assert subjects(mailstack, user) == [f"after {unique}"]
    assert staging_left(mailstack) == []
    # A damaged part is refused before anything is staged.
    with (own.path / "mail.tar").open("r+b") as tar:
        tar.write(b"x")
    with pytest.raises(MailstackError, match="damaged"):
        mailstack.restore(own.name)
    assert can_log_in(mailstack, user.address, user.password)
    for name in (own.name, other.name):
        mailstack.delete_snapshot(name)


def test_cli_save_list_restore_delete(mailstack: MailStack, unique: str) -> None:
    name = f"cli-{unique}"
    saved = run(mailstack, "snapshot", "save", name, "--json")
    assert saved.exit_code == 0, saved.output
    assert json.loads(saved.stdout)["name"] == name
    listed = run(mailstack, "snapshot", "list", "--json")
    assert listed.exit_code == 0, listed.output
    entry = next(item for item in json.loads(listed.stdout) if item["name"] == name)
    assert set(entry) >= {"name", "created", "size", "flavour"} and entry["size"] > 0
    assert entry["flavour"] == mailstack.settings.schema_flavour
    again = run(mailstack, "snapshot", "save", name)
    assert again.exit_code == 1 and "exists" in again.output and "--force" in again.output
    assert run(mailstack, "snapshot", "save", name, "--force").exit_code == 0
    user = mailstack.add_user()
    restored = run(mailstack, "snapshot", "restore", name)
    assert restored.exit_code == 0, restored.output
    assert not can_log_in(mailstack, user.address, user.password)
    unknown = run(mailstack, "snapshot", "restore", f"missing-{unique}")
    assert unknown.exit_code == 1 and name in unknown.output
    assert run(mailstack, "snapshot", "save", "Not_Valid").exit_code == 1
    assert run(mailstack, "snapshot", "delete", name).exit_code == 0
    listed = run(mailstack, "snapshot", "list", "--json")
    assert name not in [item["name"] for item in json.loads(listed.stdout)]


ADDED: list[User] = []


def test_the_fixture_gives_a_test_the_stack(mailstack_snapshot: MailStack, unique: str) -> None:
    user = mailstack_snapshot.add_user()
    mailstack_snapshot.send(user, to=user.address, subject=f"fixture {unique}")
    mailstack_snapshot.wait_for_message(user, subject=f"fixture {unique}")
    ADDED.append(user)


def test_and_restores_it_afterwards(mailstack: MailStack) -> None:
    assert ADDED, "runs after test_the_fixture_gives_a_test_the_stack"
    assert not can_log_in(mailstack, ADDED[0].address, ADDED[0].password)
    with pytest.raises(MailstackError, match="no snapshot"):
        mailstack.restore("never-saved")


def test_session_opened_after_restore_reads_the_restored_mailbox(mailstack_snapshot: MailStack,
                                                                 unique: str) -> None:
    """A client that keeps one connection object (IMAPClient) reconnects after a restore and sees the
    snapshot's mailbox, not a cached view."""
    user = mailstack_snapshot.add_user()
    mailstack_snapshot.send(user, to=user.address, subject=f"first {unique}")
    mailstack_snapshot.wait_for_message(user, subject=f"first {unique}")
    mailstack_snapshot.snapshot(f"s-{unique}")
    mailstack_snapshot.send(user, to=user.address, subject=f"second {unique}")
    mailstack_snapshot.wait_for_message(user, subject=f"second {unique}")
    mailstack_snapshot.restore(f"s-{unique}")
    endpoint = mailstack_snapshot.endpoints.imaps
    with IMAPClient(endpoint.host, port=endpoint.port, ssl_context=mailstack_snapshot.ssl_context()) as client:
        client.login(user.address, user.password)
        client.select_folder("INBOX", readonly=True)
        assert client.search(["SUBJECT", f"second {unique}"]) == []
        assert len(client.search(["SUBJECT", f"first {unique}"])) == 1
    mailstack_snapshot.delete_snapshot(f"s-{unique}")


def test_an_open_transaction_refuses_the_restore_and_changes_nothing(mailstack: MailStack, unique: str) -> None:
    """A client holding the mail tables in an open transaction would make the table swap wait (and fail
    while the files are swapped): refused while staging, nothing changed; once it ends, restore works."""
    name = f"busy-{unique}"
    mailstack.snapshot(name)
    user = mailstack.add_user()
    connection = mailstack.database.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT COUNT(*) FROM {schema.FLAVOUR_TABLE}")  # noqa: S608 - the transaction holds it

        def aged() -> bool:
            out = mailstack.stack.exec("mysql", ["mariadb", "-N", "-e", "SELECT COUNT(*) FROM information_schema."
                                                 "INNODB_TRX WHERE trx_started < NOW() - INTERVAL 1 SECOND"])
            return int(out.stdout.decode().strip() or 0) > 0

        wait_until(aged, "the transaction open for a second")
        with pytest.raises(MailstackError, match="transaction open") as refused:
            mailstack.restore(name)
        assert "nothing was changed" in (refused.value.hint or "")
        assert can_log_in(mailstack, user.address, user.password)
        assert staging_left(mailstack) == []
    finally:
        connection.rollback()
        connection.close()
    mailstack.restore(name)
    assert not can_log_in(mailstack, user.address, user.password)
    mailstack.delete_snapshot(name)
