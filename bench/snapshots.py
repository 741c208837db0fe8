"""Figures for issue 14 §3: snapshots of a stack holding 1,000 messages in 50 mailboxes (and a few queued).

- save: a snapshot of the database, maildirs and queue (median of --runs);
- restore: after mail arrived since the save, back to the snapshot, services running (median of --runs;
  aim <= 1 s), with its staging and swap phases: from the ready copies a restore leaves in the volumes
  (the usual case: restoring the same snapshot again), and without them (the tars unpacked);
- two rounds of three concurrent `docker exec true`: the floor of a restore (stage, then swap) here;
- the snapshot's size, per part;
- what the alternatives would cost, for the design's choices: restarting Postfix (instead of swapping its
  queue directories and `postfix reload`) and restarting MariaDB (the least a copy of its data directory
  with the server stopped costs), each until the service answers again.

Prints a table; asserts nothing. A disposable stack of its own (random ports). The machine may be shared:
compare runs made together, and repeat.
Usage: python bench/snapshots.py [--users 50] [--messages 1000] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import re
import smtplib
import statistics
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from mailstack import snapshots
from mailstack.api import MailStack, User

AIM = {"restore": "<= 1 s"}


def timed(action: Callable[[], object]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def count_messages(stack: MailStack) -> int:
    """Message files in the mailboxes (not in what a restore moved aside and is still deleting)."""
    out = stack.stack.exec("dovecot", ["bash", "-c", "find /var/mail/vmail/[!.]* -path '*/Maildir/new/*' -type f -o "
                                       "-path '*/Maildir/cur/*' -type f"], check=False).stdout
    return len(out.splitlines())


def fill(stack: MailStack, users: int, messages: int) -> None:
    """`messages` messages, each its own file, over `users` mailboxes: through port 25 as an outside
    sender, one SMTP connection per mailbox, five at a time."""
    people = [stack.add_user() for _ in range(users)]
    per_user = messages // users
    body = "a line of a test message, long enough to look like mail\n" * 40
    endpoint = stack.endpoints.smtp

    def deliver(user: User) -> None:
        with smtplib.SMTP(endpoint.host, endpoint.port, local_hostname="bench.test", timeout=60) as smtp:
            smtp.starttls(context=stack.ssl_context())
            for number in range(per_user):
                message = f"From: <bench@outside.test>\r\nTo: <{user.address}>\r\nSubject: bench {number}\r\n" \
                          f"Message-ID: <{uuid.uuid4().hex}@bench.test>\r\n\r\n{body}"
                smtp.sendmail("bench@outside.test", [user.address], message.encode())

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=5) as pool:
        list(pool.map(deliver, people))
    deadline = time.monotonic() + 300
    while count_messages(stack) < per_user * users:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {count_messages(stack)} of {per_user * users} messages delivered in 300 s")
        time.sleep(0.2)  # poll interval, bounded by the deadline
    print(f"filled: {per_user * users} messages in {users} mailboxes in {time.monotonic() - started:.1f}s")
    address = stack.stack.snapshot()["mysql"].addresses[0]
    for number in range(10):  # deferred: nothing listens on port 25 there
        stack.send(people[0], to=f"nobody{number}@[{address}]", subject=f"queued {number}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    phases: list[str] = []  # "cold" or "warm", then that restore's "restored ..." message

    def report(message: str) -> None:
        if "restored" in message:
            phases.append(message)

    with MailStack(report=report) as stack:
        fill(stack, args.users, args.messages)
        user = stack.add_user()
        saves, cold, warm, ready_after, floor = [], [], [], [], []
        for _ in range(args.runs):
            saves.append(timed(lambda: stack.snapshot("bench", force=True)))
        info = stack.snapshots()[0]
        manifest = json.loads((info.path / "manifest.json").read_text())
        for run in range(args.runs):
            for kind, times in (("cold", cold), ("warm", warm)):
                stack.send(user, to=user.address, subject=f"since {run} {kind}")
                stack.wait_for_message(user, subject=f"since {run} {kind}")
                if kind == "cold":  # without the ready copies: the tars are unpacked
                    for name, entry in manifest["parts"].items():
                        snapshots.PARTS[name].forget(stack.stack, entry["sha256"])
                else:  # the ready copies are made in the background after each restore
                    started = time.monotonic()
                    while not snapshots.is_ready(stack.stack, "bench"):
                        time.sleep(0.1)  # poll interval
                    ready_after.append(time.monotonic() - started)
                phases.append(kind)
                times.append(timed(lambda: stack.restore("bench")))
        def exec_round() -> None:
            with ThreadPoolExecutor(max_workers=3) as pool:
                list(pool.map(lambda service: stack.stack.exec(service, ["true"]), ("mysql", "dovecot", "postfix")))

        for _ in range(args.runs):  # the least a restore can cost: two rounds of three execs at once
            floor.append(timed(lambda: (exec_round(), exec_round())))
        after = count_messages(stack)
        parts = {name: (info.path / name).stat().st_size for name in ("database.sql", "mail.tar", "queue.tar")}
        reload = statistics.median(timed(lambda: stack.stack.exec("postfix", ["postfix", "reload"]))
                                   for _ in range(3))

        def restart(service: str) -> None:
            stack.stack.restart_service(service)
            stack.stack.wait_ready([service])

        postfix_restart = timed(lambda: restart("postfix"))
        mysql_restart = timed(lambda: restart("mysql"))
        stack.stack.wait_ready()

    def phase(kind: str, which: str) -> str:
        found = [float(m) for before, message in zip(phases, phases[1:], strict=False) if before == kind
                 for m in re.findall(rf"{which} in ([\d.]+)s", message)]
        return f"{statistics.median(found):.2f} s" if found else "-"

    def spread(times: list[float]) -> str:
        return f"min {min(times):.2f}, max {max(times):.2f}"

    rows = [
        ("stack", f"{args.messages // args.users * args.users} messages in {args.users} mailboxes, 10 queued",
         f"{after} messages after the last restore"),
        ("save (median)", f"{statistics.median(saves):.2f} s", spread(saves)),
        ("restore, ready copy (median)", f"{statistics.median(warm):.2f} s", f"{spread(warm)}; aim {AIM['restore']}"),
        ("  staging / swap", f"{phase('warm', 'staged')} / {phase('warm', 'swapped')}", ""),
        ("  ready copy made after", f"{statistics.median(ready_after):.2f} s", "in the background, after a restore"),
        ("restore, unpacking (median)", f"{statistics.median(cold):.2f} s", spread(cold)),
        ("  staging / swap", f"{phase('cold', 'staged')} / {phase('cold', 'swapped')}", ""),
        ("2 rounds of 3 docker execs", f"{statistics.median(floor):.2f} s", "the least a restore costs here"),
        ("snapshot size", f"{info.size / 1e6:.1f} MB",
         ", ".join(f"{name} {size / 1e6:.2f} MB" for name, size in parts.items())),
        ("postfix reload", f"{reload:.2f} s", "`postfix reload` (a restore signals master directly)"),
        ("postfix restart + ready", f"{postfix_restart:.2f} s", "the alternative for the queue"),
        ("mariadb restart + ready", f"{mysql_restart:.2f} s", "the least a datadir copy would cost"),
    ]
    width = max(len(row[0]) for row in rows)
    value_width = max(len(row[1]) for row in rows)
    print(f"\n{'snapshots':<{width}}  {'figure':<{value_width}}  notes")
    for label, value, note in rows:
        print(f"{label:<{width}}  {value:<{value_width}}  {note}")


if __name__ == "__main__":
    main()
