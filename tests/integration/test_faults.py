"""Faults: MariaDB, Dovecot and Postfix restart, stop or die while mail flows, and the whole stack goes
down and up again. Every test counts its messages (sent / acknowledged with 250 / delivered / duplicated
/ lost) and fails on any loss: what Postfix acknowledged is delivered, exactly once, also when Postfix itself
is stopped while it delivers (its entrypoint drains it first; only a SIGKILL is not drained).

These tests break containers, so they run on their own stack (module-scoped), never the session's.
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import (
    ACKNOWLEDGED,
    DROPPED,
    OUTSIDE,
    PERMANENT,
    TEMPORARY,
    Burst,
    Ledger,
    Message,
    SmtpClient,
    bounces_in,
    permanent_refusals,
    queued,
    queued_for,
    sending,
    settle,
    wait_for,
)
from mailstack.api import MailStack, User, bring_up
from mailstack.queue import HOLDABLE_QUEUES
from mailstack.stack import SERVICES

pytestmark = pytest.mark.integration

# Without images/postfix/mysql-watch.sh, Postfix answers "451 Temporary lookup failure" for 60 s after
# MariaDB comes back; with it, within a couple of seconds. Anything under this bound proves the watcher.
RECOVERY_BOUND = 10.0


@pytest.fixture(scope="module")
def stack(own_stack_options: dict[str, bool]) -> Iterator[MailStack]:
    # MailStack chooses its ports when it creates the containers (not Docker at each start): these tests
    # start containers again while clients hold on to the endpoints.
    with MailStack(**own_stack_options) as s:
        yield s


@pytest.fixture(autouse=True)
def restored(stack: MailStack) -> Iterator[None]:
    """Whatever a test stopped, the next one starts with every service running and ready."""
    yield
    for service in SERVICES:
        container = stack.stack.container(service)
        container.reload()
        if not container.state.running:
            stack.stack.start_service(service)
    stack.stack.wait_ready()


def _started_at(stack: MailStack, service: str) -> str:
    container = stack.stack.container(service)
    container.reload()
    return str(container.state.started_at)


def _report(*lines: str) -> None:
    print()
    for line in lines:
        print(line)


def _ledger(stack: MailStack, name: str) -> Ledger:
    """A ledger whose failed waits show what Postfix and its MariaDB watcher logged meanwhile."""

    def postfix_log() -> str:
        lines = stack.stack.logs("postfix").splitlines()
        watcher = [line for line in lines if "mailstack-postfix:" in line]
        return "watcher: " + ("\n  ".join(watcher[-5:]) or "silent") + "\npostfix log tail:\n" + "\n".join(lines[-25:])

    return Ledger(name, explain=postfix_log)


def _no_bounces(stack: MailStack) -> None:
    bounced = bounces_in(stack.stack.logs("postfix"))
    assert not bounced, "Postfix bounced mail for a valid user:\n" + "\n".join(bounced[:5])


def _wait_restarted(stack: MailStack, service: str, before: str, timeout: float = 30.0) -> None:
    """Until Docker's restart policy has started the container again (a new start time), then ready."""
    deadline = time.monotonic() + timeout
    container = stack.stack.container(service)
    while True:
        container.reload()
        state = container.state
        if state.running and not state.restarting and str(state.started_at) != before:
            break
        assert time.monotonic() < deadline, f"{service} was not restarted by Docker within {timeout:.0f}s"
        time.sleep(0.05)  # poll interval, bounded by the deadline
    stack.stack.wait_ready([service])


def _restart_and_measure(stack: MailStack, name: str, restart: Callable[[], None]) -> bool:
    """Restart a service (`restart`, which returns once it is ready) under a steady stream of mail on 25 and
    587; measure how soon mail is accepted again; count. Returns whether Postfix was restarted along the way."""
    postfix_started = _started_at(stack, "postfix")
    recipient, author = stack.add_user(), stack.add_user()
    ledger = _ledger(stack, name)
    bursts = [Burst(stack, ledger, "smtp", f"peer@{OUTSIDE}", [recipient.address]),
              Burst(stack, ledger, "submission", author.address, [recipient.address], user=author)]
    for burst in bursts:
        burst.connect()
    with sending(bursts):
        ledger.wait_until("both ports acknowledge mail",
                          lambda led: all(led.count(ACKNOWLEDGED, b.port) >= 3 for b in bursts))
        started = time.monotonic()
        restart()
        ready = time.monotonic()
        # Generous on purpose: if recovery took Postfix's 60 s, the failure should show the real gap.
        ledger.wait_until("both ports acknowledge mail again after the restart",
                          lambda led: all(led.count(ACKNOWLEDGED, b.port, after=ready) >= 3 for b in bursts),
                          timeout=75)

    refusals = ledger.count(TEMPORARY, after=started) + ledger.count(DROPPED, after=started)
    back = {}
    for burst in bursts:
        failed = max(ledger.last(TEMPORARY, burst.port) or 0, ledger.last(DROPPED, burst.port) or 0)
        back[burst.port] = ledger.first(ACKNOWLEDGED, burst.port, after=failed or started)
        assert back[burst.port] is not None
    gaps = {port: at - ready for port, at in back.items()}
    first_failure = min(t for t in (ledger.first(TEMPORARY, after=started), ledger.first(DROPPED, after=started),
                                    ready) if t is not None)
    outage = max(back.values()) - first_failure
    watcher = [line for line in stack.stack.logs("postfix").splitlines() if "mailstack-postfix: MariaDB" in line]
    postfix_restarted = _started_at(stack, "postfix") != postfix_started
    result = settle(stack, ledger, [recipient])
    _report(result.line(),
            f"[gap] {name}: {refusals} refusal(s) seen; mail accepted again "
            + ", ".join(f"{port} {gap:+.2f}s" for port, gap in gaps.items())
            + f" after the restart was done ({ready - started:.2f}s after it began); "
            f"outage seen by senders {outage:.2f}s; Postfix {'restarted' if postfix_restarted else 'kept running'}"
            f"; watcher: {watcher[-1] if watcher else 'silent'}")

    assert refusals > 0, "the restart was not seen by any sender: the measurement proves nothing"
    assert not permanent_refusals(ledger), permanent_refusals(ledger)
    assert max(gaps.values()) < RECOVERY_BOUND, f"mail accepted again only after {gaps} (Postfix's 60 s delay?)"
    if postfix_restarted:
        # Postfix's entrypoint drains a stop: the LMTP deliveries in flight finish and mark their recipients
        # done before master goes, so none is repeated after the restart (and a duplicate fails below).
        _report(f"[duplicates] {name}: {result.duplicated} message(s) delivered more than once across the "
                "Postfix restart")
    result.assert_nothing_lost()
    _no_bounces(stack)
    return postfix_restarted


def test_mariadb_restart_lookups_answer_again_within_seconds(stack: MailStack) -> None:
    """MariaDB restarts behind Compose's back (mysqld exits, Docker's restart policy starts it again):
    Postfix is not restarted, so only images/postfix/mysql-watch.sh stands between its maps and
    Postfix's fixed 60 s "server down" delay."""
    mysql_started = _started_at(stack, "mysql")

    def restart() -> None:
        stack.stack.exec("mysql", ["bash", "-c", "kill -TERM 1"])  # a clean exit; Docker restarts it
        _wait_restarted(stack, "mysql", mysql_started)

    postfix_restarted = _restart_and_measure(stack, "mariadb-restart", restart)
    assert not postfix_restarted, "Postfix was restarted: the recovery measured is not the watcher's"


def test_mariadb_compose_restart_loses_nothing(stack: MailStack) -> None:
    """`docker compose restart mysql`. Postfix keeps running (no `restart: true` in compose.yaml); the
    watcher reloads it. Were Postfix restarted too, it could repeat the LMTP deliveries it was in the middle
    of, which _restart_and_measure allows only for mail acknowledged before the restart."""

    def restart() -> None:
        stack.stack.restart_service("mysql")
        stack.stack.wait_ready(["mysql", "postfix"])

    _restart_and_measure(stack, "mariadb-compose-restart", restart)


def test_mariadb_stopped_while_mail_arrives_on_25_and_587(stack: MailStack) -> None:
    recipient, author = stack.add_user(), stack.add_user()
    ledger = _ledger(stack, "mariadb-stopped")
    bursts = [Burst(stack, ledger, "smtp", f"peer@{OUTSIDE}", [recipient.address]),
              Burst(stack, ledger, "submission", author.address, [recipient.address], user=author)]
    for burst in bursts:
        burst.connect()  # AUTH now: Dovecot's auth cache then carries the 587 sender's new sessions
    with sending(bursts):
        ledger.wait_until("both ports acknowledge mail",
                          lambda led: all(led.count(ACKNOWLEDGED, b.port) >= 3 for b in bursts))
        stopped = time.monotonic()
        stack.stack.stop_service("mysql")
        ledger.wait_until("both ports refuse mail temporarily while MariaDB is down",
                          lambda led: all(led.count(TEMPORARY, b.port, after=stopped) >= 3 for b in bursts))
        waiting = len(queued(stack))
        stack.stack.start_service("mysql")
        stack.stack.wait_ready(["mysql"])
        ready = time.monotonic()
        ledger.wait_until("both ports acknowledge mail again",
                          lambda led: all(led.count(ACKNOWLEDGED, b.port, after=ready) >= 3 for b in bursts))

    result = settle(stack, ledger, [recipient])
    during = ledger.count(TEMPORARY, after=stopped, before=ready)
    _report(result.line(), f"[outage] MariaDB stopped {ready - stopped:.1f}s: {during} temporary refusal(s) "
            f"({', '.join(sorted({str(o.code) for o in ledger.outcomes(TEMPORARY)}))}), {waiting} message(s) "
            "in Postfix's queue meanwhile; every refused message accepted on a retry")

    assert not permanent_refusals(ledger), permanent_refusals(ledger)
    assert all(o.code in (451, 454) for o in ledger.outcomes(TEMPORARY)), ledger.codes()
    assert not [m for b in bursts for m in [*b.retry, *b.unknown]], "messages never acknowledged"
    assert result.acknowledged == result.sent, result.line()
    result.assert_nothing_lost()
    _no_bounces(stack)


def _submission_back(stack: MailStack, ledger: Ledger, port: str, user: User, message: Message,
                     timeout: float = 75.0) -> float:
    """Open fresh sessions on `port` (short timeouts) until one authenticates and sends `message`."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = ledger.send(SmtpClient(stack, port, user, timeout=3), message)
        if outcome.status == ACKNOWLEDGED:
            return time.monotonic()
        assert outcome.status != PERMANENT, f"{port}: {outcome}"
        if time.monotonic() > deadline:
            raise AssertionError(f"{port} did not accept AUTH + mail within {timeout:.0f}s: {outcome}")


def test_dovecot_stopped_postfix_defers_then_drains(stack: MailStack) -> None:
    recipient, author = stack.add_user(), stack.add_user()
    ledger = _ledger(stack, "dovecot-stopped")
    bursts = [Burst(stack, ledger, "smtp", f"peer@{OUTSIDE}", [recipient.address]),
              Burst(stack, ledger, "submission", author.address, [recipient.address], user=author)]
    bursts[1].connect()  # authenticated before Dovecot goes away
    probes = {port: ledger.new_message(author.address, [recipient.address], f"{port}-fresh-session")
              for port in ("submission", "smtps")}
    stack.stack.stop_service("dovecot")
    stopped = time.monotonic()
    try:
        for burst in bursts:
            burst.start()
        ledger.wait_until("Postfix accepts mail on both ports while Dovecot is down",
                          lambda led: all(led.count(ACKNOWLEDGED, b.port, after=stopped) >= 5 for b in bursts))
        # New authenticated sessions cannot work without Dovecot's auth: they must fail softly.
        during = {port: ledger.send(SmtpClient(stack, port, author, timeout=3), message)
                  for port, message in probes.items()}
        waiting = len(queued(stack))
    finally:
        for burst in bursts:
            burst.stop_new.set()
        for burst in bursts:
            burst.finish()

    def deferrals() -> int:  # LMTP over its socket defers at once; over TCP after a connect timeout (<= 10 s)
        return sum(1 for line in stack.stack.logs("postfix").splitlines()
                   if "status=deferred" in line and ("dovecot-lmtp" in line or "dovecot-internal" in line))

    wait_for(lambda: deferrals() > 0, timeout=15, interval=0.5)
    deferred = deferrals()
    stack.stack.start_service("dovecot")
    stack.stack.wait_ready(["dovecot"])
    ready = time.monotonic()
    back = {port: _submission_back(stack, ledger, port, author, message) - ready for port, message in probes.items()}

    result = settle(stack, ledger, [recipient])
    _report(result.line(), f"[outage] Dovecot stopped: {waiting} message(s) queued, {deferred} LMTP deferral(s); "
            f"new AUTH sessions during the outage: {', '.join(f'{p} {o}' for p, o in during.items())}; "
            f"AUTH back after Dovecot was ready: {', '.join(f'{p} {t:.2f}s' for p, t in back.items())}")

    assert waiting > 0 and deferred > 0, "nothing waited for Dovecot: the test did not exercise deferral"
    assert all(o.status in (TEMPORARY, DROPPED) for o in during.values()), during
    assert not permanent_refusals(ledger), permanent_refusals(ledger)
    # Postfix's smtpd dies when Dovecot's auth socket is missing and master throttles the service for
    # service_throttle_time (default 60 s); images/postfix/main.cf shortens that.
    assert max(back.values()) < RECOVERY_BOUND, f"submission came back only after {back}"
    assert result.acknowledged == result.sent, result.line()
    result.assert_nothing_lost()
    _no_bounces(stack)


def test_postfix_killed_mid_burst_delivers_everything_it_acknowledged(stack: MailStack) -> None:
    recipient, author = stack.add_user(), stack.add_user()
    ledger = _ledger(stack, "postfix-killed")
    bursts = [Burst(stack, ledger, "smtp", f"peer@{OUTSIDE}", [recipient.address], stop_on_drop=True),
              Burst(stack, ledger, "submission", author.address, [recipient.address], user=author,
                    stop_on_drop=True)]
    bursts[1].connect()
    # Dovecot away first: what Postfix acknowledges stays in its queue, so the kill hits a full queue.
    stack.stack.stop_service("dovecot")
    try:
        for burst in bursts:
            burst.start()
        ledger.wait_until("both ports acknowledge mail",
                          lambda led: all(led.count(ACKNOWLEDGED, b.port) >= 5 for b in bursts))
        waiting = len(queued(stack))
        killed = time.monotonic()
        stack.stack.kill_service("postfix")  # SIGKILL, mid-burst
        for burst in bursts:
            burst.join(30)
    finally:
        for burst in bursts:
            burst.halt.set()
            burst.finish()
    acked_before_kill = {mid for mid, at in ledger.acknowledged.items() if at < killed}
    in_flight = [m.message_id for b in bursts for m in [*b.retry, *b.unknown]]
    stack.stack.start_service("dovecot")
    stack.stack.start_service("postfix")
    stack.stack.wait_ready(["dovecot", "postfix"])

    result = settle(stack, ledger, [recipient])
    _report(result.line(), f"[kill] Postfix killed with {waiting} message(s) queued and {len(in_flight)} "
            f"in flight without a 250 (never retried, so never duplicated)")

    assert waiting > 0
    assert len(acked_before_kill) >= 10
    assert not permanent_refusals(ledger), permanent_refusals(ledger)
    result.assert_nothing_lost()
    _no_bounces(stack)


def test_postfix_compose_restart_mid_burst_repeats_nothing(stack: MailStack) -> None:
    """`docker compose restart postfix` while mail arrives on 25 and 587 and is delivered as it comes. The
    entrypoint drains the stop (images/postfix/entrypoint.sh): what was acknowledged is delivered once."""

    def restart() -> None:
        stack.stack.restart_service("postfix")
        stack.stack.wait_ready(["postfix"])

    assert _restart_and_measure(stack, "postfix-compose-restart", restart), "Postfix was not restarted"


# Messages queued for one mailbox and released at once: Postfix delivers them over LMTP up to 20 at a time
# (lmtp_destination_concurrency_limit), 150-300 a second on this kind of machine: 2-4 s of deliveries.
BACKLOG = 600


def _last_restart(log: str, address: str) -> tuple[int, int, list[str]]:
    """From Postfix's log: deliveries to `address` before its last start and since, and what the entrypoint
    logged of the stop before that start (its drain)."""
    lines = log.splitlines()
    starts = [n for n, line in enumerate(lines) if "starting the Postfix mail system" in line] or [0]
    sent = [n for n, line in enumerate(lines) if f"to=<{address}>" in line and "status=sent" in line]
    drain = [line for line in lines[starts[-2] if len(starts) > 1 else 0:starts[-1]]
             if "mailstack-postfix: stopping:" in line]
    return sum(1 for n in sent if n < starts[-1]), sum(1 for n in sent if n > starts[-1]), drain


def test_postfix_restarted_while_delivering_repeats_nothing(stack: MailStack) -> None:
    """`docker restart` of Postfix in the middle of a burst of LMTP deliveries (a backlog released at once),
    with sessions open on 25 and 587. Without the entrypoint's drain, master's SIGTERM killed LMTP clients
    after Dovecot had stored a message but before they marked its recipient done in the queue file, and
    the restarted Postfix delivered those messages again. With it, no new delivery starts, the ones in
    flight finish, and what is left is delivered at once after the start (not deferred). The engine's own
    restart (the SIGTERM and grace period of `docker stop`, as `compose restart` asks the engine for) comes
    within a fraction of a second; compose's CLI can take seconds, by which time the backlog may be gone."""
    backlog_user, recipient, author = stack.add_user(), stack.add_user(), stack.add_user()
    ledger = _ledger(stack, "postfix-restart-delivering")

    def queue(count: int) -> None:
        client = SmtpClient(stack, "smtp")
        try:
            for _ in range(count):
                outcome = ledger.send(client, ledger.new_message(f"peer@{OUTSIDE}", [backlog_user.address],
                                                                 "backlog"))
                assert outcome.status == ACKNOWLEDGED, outcome
        finally:
            client.close()

    bursts = [Burst(stack, ledger, "smtp", f"peer@{OUTSIDE}", [recipient.address]),
              Burst(stack, ledger, "submission", author.address, [recipient.address], user=author)]
    for burst in bursts:
        burst.connect()  # AUTH now: right after Dovecot's restart Postfix's submission may not be back yet
    # The backlog: accepted while Dovecot is down, then held, so that it is delivered only when released.
    stack.stack.stop_service("dovecot")
    with ThreadPoolExecutor(max_workers=4) as pool:
        for future in [pool.submit(queue, BACKLOG // 4) for _ in range(4)]:
            future.result()

    def held() -> int:
        # Never the active queue: qmgr keeps its messages in memory, and one held there and released while
        # its delivery attempt still runs (a TCP connect to the stopped Dovecot lasts until its timeout) is
        # removed when that attempt ends (seen: hundreds lost). Deferred and incoming files are only renamed.
        stack.stack.exec("postfix", ["postsuper", "-h", "ALL", *HOLDABLE_QUEUES], check=False)
        return sum(1 for entry in queued_for(stack, [backlog_user.address]) if entry.get("queue_name") == "hold")

    assert wait_for(lambda: held() == BACKLOG, timeout=60, interval=0.5), "the backlog could not be held"
    stack.stack.start_service("dovecot")
    stack.stack.wait_ready(["dovecot"])

    with sending(bursts):
        ledger.wait_until("both ports acknowledge mail",
                          lambda led: all(led.count(ACKNOWLEDGED, b.port) >= 3 for b in bursts))
        stack.stack.exec("postfix", ["postsuper", "-H", "ALL"])
        stack.stack.exec("postfix", ["postqueue", "-f"])
        assert wait_for(lambda: len(queued_for(stack, [backlog_user.address])) <= BACKLOG - 5, timeout=30,
                        interval=0.05), "the backlog's delivery did not start"
        started = time.monotonic()
        subprocess.run(["docker", "restart", stack.stack.container("postfix").id], check=True,
                       capture_output=True, timeout=60)
        restarted = time.monotonic()
        stack.stack.wait_ready(["postfix"])
        ready = time.monotonic()
        ledger.wait_until("both ports acknowledge mail again after the restart",
                          lambda led: all(led.count(ACKNOWLEDGED, b.port, after=ready) >= 3 for b in bursts))

    result = settle(stack, ledger, [backlog_user, recipient])
    log = stack.stack.logs("postfix")
    before, after, drain = _last_restart(log, backlog_user.address)
    in_flight = [int(m.group(1)) for line in drain if (m := re.search(r"in flight at the reload: (\d+)", line))]
    _report(result.line(),
            f"[duplicates] postfix-restart-delivering: {result.duplicated} message(s) delivered more than once",
            f"[restart] backlog of {BACKLOG}: {before} delivered before the stop, {after} after the start; "
            f"docker restart {restarted - started:.2f}s, ready {ready - started:.2f}s after it began; "
            f"drain: {drain[-1] if drain else 'not logged'}")

    # The stop hit the backlog's delivery: part of it was delivered before, the rest after the restart, and
    # the drain found deliveries in flight and let them finish (none left at its deadline).
    assert before > 0 and after > 0, f"the restart did not come while the backlog was delivered: {before}/{after}"
    assert in_flight and in_flight[-1] > 0, f"no delivery in flight when Postfix was stopped: {drain}"
    assert not [line for line in drain if "still at work" in line], drain
    assert not permanent_refusals(ledger), permanent_refusals(ledger)
    result.assert_nothing_lost()
    _no_bounces(stack)
    # What the drain changed in main.cf and master.cf is gone: the restarted container has its own config.
    config = stack.stack.exec("postfix", ["postconf", "-h", "master_service_disable"]).stdout.decode().strip()
    assert config == "", f"the drain's master_service_disable outlived the stop: {config!r}"
    services = stack.stack.exec("postfix", ["postconf", "-M"]).stdout.decode()
    assert "mailstack_shutting_down" not in services and "mailstack_drain" not in services, services


def test_whole_stack_down_and_up_keeps_mailboxes_queue_and_database(stack: MailStack) -> None:
    recipient = stack.add_user()
    ledger = _ledger(stack, "down-up")
    client = SmtpClient(stack, "smtp")
    for _ in range(3):
        assert ledger.send(client, ledger.new_message(f"peer@{OUTSIDE}", [recipient.address], "stored")
                           ).status == ACKNOWLEDGED
    client.close()
    settle(stack, ledger, [recipient])  # these three are in the mailbox
    stack.stack.stop_service("dovecot")
    client = SmtpClient(stack, "smtp")
    for _ in range(3):
        assert ledger.send(client, ledger.new_message(f"peer@{OUTSIDE}", [recipient.address], "queued")
                           ).status == ACKNOWLEDGED
    client.close()
    waiting = len(queued(stack))
    with stack.database.transaction() as store:
        before = (store.domains(), store.users(), store.aliases())

    stack.stack.down(volumes=False)
    assert not stack.stack.containers()
    started = time.monotonic()
    bring_up(stack.settings, provision_host=False)
    up_took = time.monotonic() - started
    # The containers (and ports) are new: a second view of the same project, reusing it.
    again = MailStack(project=stack.settings.project, state_dir=stack.settings.state_dir, reuse=True,
                      hash_cost="fast", fast_retry=True).start()
    try:
        with again.database.transaction() as store:
            after = (store.domains(), store.users(), store.aliases())
        result = settle(again, ledger, [recipient])  # logs in with the old password: the DB survived
    finally:
        again.stop()  # a reused stack is left running: the module's fixture removes it
    _report(result.line(), f"[down-up] {waiting} message(s) queued at `down`; up again in {up_took:.1f}s")

    assert waiting == 3
    assert after == before
    assert result.acknowledged == result.sent == 6
    result.assert_nothing_lost()


def test_postfix_stop_keeps_its_last_log_lines_and_exits_cleanly(stack: MailStack) -> None:
    """Postfix logs through a batching pipe (images/postfix/log-batch.pl), behind a shell that stays PID 1:
    a stop must still bring every line logged before it to `docker logs` (the kernel kills what is left
    of a container when PID 1 exits), and end with exit code 0 as `postfix start-fg` did."""
    stack.stack.stop_service("postfix")
    container = stack.stack.container("postfix")
    container.reload()
    assert container.state.exit_code == 0, f"stop: exit code {container.state.exit_code}"
    stack.stack.start_service("postfix")
    stack.stack.wait_ready(["postfix"])
    for attempt in range(3):
        marker = f"last words {attempt} {uuid.uuid4().hex}"
        before = _started_at(stack, "postfix")
        # The first line ends log-batch's wait for input and starts its pause; the marker comes within the
        # pause, the SIGTERM to PID 1 right after it (`docker stop` itself is too slow to hit the pause).
        stack.stack.exec("postfix", ["bash", "-c", 'postlog -t mailstack-test first; '
                                     f'postlog -t mailstack-test "{marker}"; kill -TERM 1'], check=False)
        _wait_restarted(stack, "postfix", before)  # the restart policy starts it again
        assert marker in stack.stack.logs("postfix"), f"{marker!r} lost:\n{stack.stack.logs('postfix', 10)}"
    author, recipient = stack.add_user(), stack.add_user()
    message_id = stack.send(author, recipient.address, subject="after the stops")
    assert stack.wait_for_message(recipient, message_id=message_id)["Message-ID"] == message_id


def test_postfix_with_a_broken_main_cf_exits_and_says_why(stack: MailStack, tmp_path: Path) -> None:
    """A production main.cf brought in to reproduce a bug may not suit Postfix 3.7. `postfix check` then
    fails before Postfix's log service runs, and Postfix would tell why only to a terminal: the container
    must not just exit 1 in silence."""
    image = next(name for name in stack.stack.image_names() if name.startswith("mailstack-postfix:"))
    # production settings reach main.cf as rendered postconf calls (`up --from`): one of them is bad
    (tmp_path / "postconf.overrides").write_text("-e\tdefault_process_limit=abc\n")
    done = subprocess.run(["docker", "run", "--rm", "-v", f"{tmp_path}:/run/mailstack/postfix:ro", image],
                          capture_output=True, text=True, timeout=120, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "bad numerical configuration: default_process_limit = abc" in output, output
    assert "postfix check failed" in output, output


def test_endpoints_stay_the_same_when_services_restart(stack: MailStack) -> None:
    """A disposable stack's ports are chosen once: a restarted container publishes the same ones (with a
    port of 0 Docker would pick new ones at each start, and every client holding an endpoint would break)."""
    before = stack.endpoints
    for service in SERVICES:
        stack.stack.restart_service(service)
    stack.stack.wait_ready()
    assert stack.stack.endpoints() == before
    author, recipient = stack.add_user(), stack.add_user()
    message_id = stack.send(author, recipient.address, subject="after the restarts")  # 587, then IMAPS
    assert stack.wait_for_message(recipient, message_id=message_id)["Message-ID"] == message_id
