"""Queue tools on a real Postfix queue: a message accepted while Dovecot is down waits in the queue; it is
listed, shown, held, released and delivered, or deleted; unknown ids are one-line errors."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator

import pytest
from helpers import wait_for
from mailstack import cli
from mailstack.api import MailStack, User
from mailstack.queue import HOLDABLE_QUEUES
from typer.testing import CliRunner, Result


@pytest.fixture(scope="module")
def stack(own_stack_options: dict[str, bool]) -> Iterator[MailStack]:
    with MailStack(**own_stack_options) as s:  # its own: this module stops Dovecot
        yield s


def run(stack: MailStack, *args: str) -> Result:
    return CliRunner().invoke(cli.app, ["--project", stack.settings.project,
                                        "--state-dir", str(stack.settings.state_dir), *args])



def lmtp_connecting(stack: MailStack) -> bool:
    """Postfix has a TCP connection to an LMTP port (24) that is still being set up (SYN_SENT)."""
    table = stack.stack.exec("postfix", ["cat", "/proc/net/tcp"]).stdout.decode().splitlines()[1:]
    return any(fields[2].endswith(":0018") and fields[3] == "02" for fields in (line.split() for line in table))


def queued_while_dovecot_is_down(stack: MailStack, user: User, count: int,
                                 while_down: Callable[[list[str]], None]) -> list[str]:
    """count messages accepted on 25 while Dovecot is stopped: they wait in Postfix's queue, each tried once;
    while_down gets their queue ids before Dovecot is back (else the retry would deliver them at once).
    Waiting is the deferred queue, or incoming: qmgr parks a message there for 60 s when it finds its file
    still locked by the delivery agent that just deferred it (qmgr_active_feed), as it may under load with
    the tests' 1 s retries."""
    stack.stack.stop_service("dovecot")
    try:
        subjects = [f"queued-{uuid.uuid4().hex[:8]}" for _ in range(count)]
        for subject in subjects:
            stack.send(None, to=user.address, subject=subject)

        def waiting() -> bool:
            return sum(e.queue_name in HOLDABLE_QUEUES and all(r.delay_reason for r in e.recipients)
                       for e in stack.queue()) >= count

        assert wait_for(waiting, timeout=20), (stack.queue(), stack.stack.logs("postfix").splitlines()[-30:])
        while_down([e.queue_id for e in stack.queue()])
        # With LMTP over TCP (--mailstack-lmtp-tcp) a delivery attempt can still be connecting (to an address
        # that vanished: up to lmtp_connect_timeout) when its message is held or deleted; were Dovecot back before
        # it gave up, that attempt would still deliver. Over the socket an attempt fails at once.
        assert wait_for(lambda: not lmtp_connecting(stack), timeout=15)
        return subjects
    finally:
        stack.stack.start_service("dovecot")
        stack.stack.wait_ready(["dovecot"])


def assert_each_delivered_once(stack: MailStack, user: User, subjects: list[str]) -> None:
    """Once every subject is in the user's INBOX and the queue is empty: each subject is there exactly once."""
    delivered: dict[str, int] = {}

    def settled() -> bool:
        with stack.imap(user) as client:
            client.select_folder("INBOX", readonly=True)
            delivered.update({s: len(client.search(["SUBJECT", s])) for s in subjects})
        return all(delivered.values()) and stack.queue() == []

    assert wait_for(settled, timeout=45, interval=0.5), (delivered, stack.queue())
    assert delivered == dict.fromkeys(subjects, 1)


def test_hold_list_show_release_and_deliver(stack: MailStack) -> None:
    user = stack.add_user()
    ids: list[str] = []

    def hold(queued: list[str]) -> None:
        entries = stack.queue()
        assert all(e.recipients[0].address == user.address and e.recipients[0].delay_reason for e in entries)
        held = run(stack, "queue", "hold", *queued)
        assert held.exit_code == 0 and "placed on hold: 2 message(s)" in held.stderr, held.output
        ids.extend(queued)

    kept, dropped = queued_while_dovecot_is_down(stack, user, 2, hold)
    listed = json.loads(run(stack, "queue", "list", "--json").stdout)
    assert sorted((e["queue_id"], e["queue_name"]) for e in listed) == sorted((i, "hold") for i in ids)
    run(stack, "queue", "flush")  # held mail stays held, even with Dovecot back
    shown = {i: run(stack, "queue", "show", i).stdout for i in ids}
    delete_id = next(i for i, text in shown.items() if f"Subject: {dropped}" in text)
    keep_id = next(i for i, text in shown.items() if f"Subject: {kept}" in text)
    assert run(stack, "queue", "delete", delete_id).exit_code == 0
    assert run(stack, "queue", "release", keep_id).exit_code == 0
    assert run(stack, "queue", "flush").exit_code == 0
    assert stack.wait_for_message(user, subject=kept, timeout=20)
    assert wait_for(lambda: stack.queue() == [])
    with stack.imap(user) as client:
        client.select_folder("INBOX", readonly=True)
        assert client.search(["SUBJECT", dropped]) == []  # deleted from the queue: never delivered


def test_unknown_and_malformed_ids_are_one_line_errors(stack: MailStack) -> None:
    unknown = run(stack, "queue", "show", "ABCDEF123456")
    assert unknown.exit_code == 1 and "no message ABCDEF123456 in the queue" in unknown.stderr
    malformed = run(stack, "queue", "hold", "not-an-id!")
    assert malformed.exit_code == 1 and "not a queue id" in malformed.stderr
    both = run(stack, "queue", "delete")
    assert both.exit_code == 1 and "give queue ids or --all" in both.stderr


def test_requeue_and_delete_all(stack: MailStack) -> None:
    user = stack.add_user()
    subjects = queued_while_dovecot_is_down(
        stack, user, 2, lambda _: run(stack, "queue", "hold", "--all"))
    assert sorted(e.queue_name for e in stack.queue()) == ["hold", "hold"]
    requeued = run(stack, "queue", "requeue", "--all")
    assert requeued.exit_code == 0, requeued.output
    deleted = run(stack, "queue", "delete", "--all")
    assert deleted.exit_code == 0 and "deleted: 2 message(s)" in deleted.stderr, deleted.output
    assert stack.queue() == []
    with stack.imap(user) as client:
        client.select_folder("INBOX", readonly=True)
        assert client.search(["SUBJECT", subjects[0]]) == []


def test_hold_and_release_during_delivery_attempts_deliver_every_message_once(stack: MailStack) -> None:
    """hold --all and release --all while qmgr has the messages in the active queue, their LMTP deliveries in
    flight (Dovecot frozen: connected, no greeting yet). postsuper -h takes files out of the active queue that
    qmgr still holds in memory; released, they were read a second time: on Postfix 3.7 mail was removed
    undelivered or delivered twice and qmgr aborted. Every message arrives exactly once."""
    user = stack.add_user()
    count = 20
    subjects = queued_while_dovecot_is_down(stack, user, count, lambda _: run(stack, "queue", "hold", "--all"))
    assert sorted(e.queue_name for e in stack.queue()) == ["hold"] * count  # deferred mail is held
    dovecot = stack.stack.container("dovecot")
    dovecot.pause()
    try:
        assert run(stack, "queue", "release", "--all").exit_code == 0
        run(stack, "queue", "flush")
        assert wait_for(lambda: [e.queue_name for e in stack.queue()] == ["active"] * count, timeout=20), \
            stack.queue()
        held = run(stack, "queue", "hold", "--all")
        released = run(stack, "queue", "release", "--all")
        # Before the deliveries go on: qmgr's next scan of the deferred queue (queue_run_delay = 1s here) has read
        # again whatever was released (back to active, or to incoming for a minute when an agent still has it).
        assert wait_for(lambda: all(e.queue_name != "deferred" for e in stack.queue()), timeout=20), stack.queue()
    finally:
        dovecot.unpause()
    assert_each_delivered_once(stack, user, subjects)
    assert held.exit_code == 0 and "placed on hold: 0 message(s)" in held.stderr, held.output
    assert f"not held: {count} message(s) in the active queue" in held.stderr, held.output
    assert released.exit_code == 0 and "released from hold: 0 message(s)" in released.stderr, released.output


@pytest.mark.parametrize("action", ["hold", "requeue"])
def test_hold_and_requeue_refuse_a_message_in_the_active_queue(stack: MailStack, action: str) -> None:
    user = stack.add_user()
    dovecot = stack.stack.container("dovecot")
    dovecot.pause()  # its delivery attempt waits for Dovecot's greeting: the message stays in the active queue
    try:
        subject = f"active-{uuid.uuid4().hex[:8]}"
        stack.send(None, to=user.address, subject=subject)
        assert wait_for(lambda: [e.queue_name for e in stack.queue()] == ["active"], timeout=20), stack.queue()
        queue_id = stack.queue()[0].queue_id
        refused = run(stack, "queue", action, queue_id)
        assert [e.queue_name for e in stack.queue()] == ["active"]
    finally:
        dovecot.unpause()
    assert refused.exit_code == 1 and f"cannot {action} {queue_id} now: in the active queue" in refused.stderr, \
        refused.output
    assert stack.wait_for_message(user, subject=subject, timeout=20)
    assert wait_for(lambda: stack.queue() == [])


def test_requeue_all_during_delivery_attempts_delivers_every_message_once(stack: MailStack) -> None:
    """requeue --all while 10 messages sit in the active queue, their LMTP deliveries in flight (Dovecot frozen):
    postsuper -r from there put each file in maildrop while its delivery went on, and measured, 5 of 10 were
    delivered by that attempt with their copy left for pickup to deliver again. Each arrives exactly once."""
    user = stack.add_user()
    count = 10
    subjects = [f"requeue-{uuid.uuid4().hex[:8]}" for _ in range(count)]
    dovecot = stack.stack.container("dovecot")
    dovecot.pause()
    try:
        for subject in subjects:
            stack.send(None, to=user.address, subject=subject)
        assert wait_for(lambda: [e.queue_name for e in stack.queue()] == ["active"] * count, timeout=20), \
            stack.queue()
        requeued = run(stack, "queue", "requeue", "--all")
        assert [e.queue_name for e in stack.queue()] == ["active"] * count
    finally:
        dovecot.unpause()
    assert requeued.exit_code == 0 and "requeued: 0 message(s)" in requeued.stderr, requeued.output
    assert f"not requeued: {count} message(s) in the active queue" in requeued.stderr, requeued.output
    assert_each_delivered_once(stack, user, subjects)
