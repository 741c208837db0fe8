"""Postfix's queue with Postfix's own tools: `postqueue -j` to list, `postcat` to show, `postsuper` to hold,
release, delete and requeue, `postqueue -f` to flush. Queue ids are checked against the queue first, so
an unknown id is one clear error and nothing is changed."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

from mailstack.errors import MailstackError
from mailstack.stack import Stack

QUEUE_ID = re.compile(r"^[0-9A-Za-z]{6,20}$")  # short (hex) or long (hash_queue_names-free) queue ids
ACTIONS = {"hold": "-h", "release": "-H", "delete": "-d", "requeue": "-r"}
# postsuper -h moves a file out of the active queue too, but qmgr keeps the message it read from there in memory
# and goes on delivering it. Released while qmgr still has it, the file is read into the active queue a second
# time: two in-core copies of one message; measured on Postfix 3.7, mail was removed undelivered, delivered twice,
# and qmgr aborted ("panic: qmgr_job_free: non-zero recipient count"). qmgr holds in memory only what is in the
# active queue (it renames a file there before reading it, and frees its copy once it has moved it out), so holding
# only from these queues never races with it.
HOLDABLE_QUEUES = ("incoming", "deferred")
# postsuper -r of a file in the active queue races the same way: the file goes to maildrop (pickup makes a new
# message of it) while qmgr's delivery attempt of the old one goes on; measured: of 10 messages requeued with their
# LMTP deliveries in flight, 5 were delivered by those attempts and sat in maildrop too, to be delivered again.
REQUEUEABLE_QUEUES = ("hold", "incoming", "deferred")


@dataclass(frozen=True)
class OutsideActive:
    """An action that leaves the active queue alone: the queues it takes from, and how its messages say so."""

    queues: tuple[str, ...]
    done: str  # "not held: ..."
    risk: str  # why a message in the active queue is left


OUTSIDE_ACTIVE = {
    "hold": OutsideActive(HOLDABLE_QUEUES, "held", "holding a message mid-delivery can lose it"),
    "requeue": OutsideActive(REQUEUEABLE_QUEUES, "requeued", "requeueing a message mid-delivery can deliver it twice"),
}


@dataclass(frozen=True)
class Recipient:
    address: str
    delay_reason: str | None = None


@dataclass(frozen=True)
class QueueEntry:
    """One message in Postfix's queue, as `postqueue -j` describes it."""

    queue_id: str
    queue_name: str  # incoming, active, deferred, hold, corrupt
    arrival_time: int
    message_size: int
    sender: str
    recipients: tuple[Recipient, ...]

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def parse_postqueue_json(output: str) -> list[QueueEntry]:
    """`postqueue -j` prints one JSON object per line."""
    entries = []
    for line in output.splitlines():
        if not line.strip():
            continue
        data = json.loads(line)
        entries.append(QueueEntry(
            queue_id=data["queue_id"], queue_name=data["queue_name"], arrival_time=int(data["arrival_time"]),
            message_size=int(data["message_size"]), sender=data.get("sender", ""),
            recipients=tuple(Recipient(r["address"], r.get("delay_reason")) for r in data.get("recipients", []))))
    return entries


class Queue:
    """The operations behind `mailstack queue`, on a running stack's Postfix container."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def entries(self) -> list[QueueEntry]:
        return parse_postqueue_json(self.stack.exec("postfix", ["postqueue", "-j"]).stdout.decode(errors="replace"))

    def show(self, queue_id: str) -> str:
        """The queued message as postcat shows it: envelope, headers and body."""
        self._known([queue_id])
        return self.stack.exec("postfix", ["postcat", "-q", "-b", "-h", "-e", queue_id]).stdout.decode(
            errors="replace")

    def flush(self) -> None:
        """Attempt delivery of every deferred message now."""
        self.stack.exec("postfix", ["postqueue", "-f"])

    def act(self, action: str, queue_ids: Iterable[str] = (), everything: bool = False,
            notice: Callable[[str], None] | None = None) -> int:
        """hold / release / delete / requeue the given messages (or all); returns how many were affected.

        hold and requeue leave alone what is in the active queue (Postfix is delivering it: see HOLDABLE_QUEUES,
        REQUEUEABLE_QUEUES): named ids there are refused before anything changes; with everything=True, or when a
        message went active meanwhile, notice() is told which were left (run it again once they have left the
        active queue)."""
        flag = ACTIONS[action]
        ids = list(dict.fromkeys(queue_ids))
        if everything == bool(ids):
            raise MailstackError(f"queue {action}: give queue ids or --all (not both)",
                                 "`mailstack queue list` shows the ids")
        if not everything:
            entries = self._known(ids)
            if action in OUTSIDE_ACTIVE:
                self._refuse_active(action, [i for i in ids if entries[i] == "active"])
        argv = ["postsuper", flag, "-"] if not everything else ["postsuper", flag, "ALL"]
        rule = OUTSIDE_ACTIVE.get(action)
        argv += rule.queues if rule else ()
        result = self.stack.exec("postfix", argv, input="".join(f"{i}\n" for i in ids).encode() if ids else None)
        # postsuper reports on stderr, e.g. "postsuper: Placed on hold: 2 messages"
        said = result.stderr.decode(errors="replace")
        counts = [int(n) for n in re.findall(r": (\d+) messages?", said)]
        if rule is not None and notice is not None:
            wanted = set(ids)
            busy = sorted(e.queue_id for e in self.entries()
                          if e.queue_name == "active" and (everything or e.queue_id in wanted))
            if busy:
                notice(f"not {rule.done}: {len(busy)} message(s) in the active queue ({_some(busy)}): Postfix "
                       f"is delivering them now, and {rule.risk}; {action} again once they have left the "
                       "active queue (`mailstack queue list`)")
        return sum(counts)

    @staticmethod
    def _refuse_active(action: str, active: list[str]) -> None:
        if active:
            raise MailstackError(
                f"cannot {action} {_some(active)} now: in the active queue (Postfix is delivering "
                f"{'it' if len(active) == 1 else 'them'}; {OUTSIDE_ACTIVE[action].risk})",
                "try again once it has left the active queue (`mailstack queue list`: delivered, or deferred); "
                "nothing was changed")

    def _known(self, queue_ids: list[str]) -> dict[str, str]:
        """Every id is a queued message's (else one error, nothing changed); returns id -> queue name."""
        bad = [i for i in queue_ids if not QUEUE_ID.match(i)]
        if bad:
            raise MailstackError(f"not a queue id: {bad[0]!r}", "queue ids look like 4F2C21A0B3; "
                                 "`mailstack queue list` shows them")
        present = {entry.queue_id: entry.queue_name for entry in self.entries()}
        missing = [i for i in queue_ids if i not in present]
        if missing:
            raise MailstackError(f"no message {missing[0]} in the queue" + (
                f" (and {len(missing) - 1} more unknown id(s))" if len(missing) > 1 else ""),
                "`mailstack queue list` shows what is queued; nothing was changed")
        return present


def _some(queue_ids: list[str], shown: int = 3) -> str:
    """A few queue ids for a message: "A, B, C and 4 more"."""
    more = len(queue_ids) - shown
    return ", ".join(queue_ids[:shown]) + (f" and {more} more" if more > 0 else "")
