"""Counting helpers for the fault and security tests: every message is accounted for.

A Ledger records every message a test sends and every reply it got (250, 4xx, 5xx, or a dropped
connection). `settle` then polls the recipients' mailboxes over IMAPS (and Postfix's queue) until every
acknowledged message is there and nothing is left in the queue, or a deadline passes; `Tally` says how
many were sent, acknowledged, delivered, duplicated and lost.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email
import email.policy
import email.utils
import imaplib
import json
import smtplib
import socket
import ssl
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import imapclient.exceptions
from imapclient import IMAPClient
from mailstack.api import MailStack, User

ACKNOWLEDGED = "acknowledged"  # 250 after the final dot: the server took responsibility
TEMPORARY = "temporary"  # 4xx: try again later
PERMANENT = "permanent"  # 5xx: never
DROPPED = "dropped"  # the connection broke without a reply

OUTSIDE = "outside.test"  # a domain that is not ours


@dataclass(frozen=True)
class Message:
    message_id: str
    subject: str
    sender: str
    recipients: tuple[str, ...]

    def raw(self) -> bytes:
        return (
            f"From: <{self.sender}>\r\nTo: {', '.join(f'<{r}>' for r in self.recipients)}\r\n"
            f"Subject: {self.subject}\r\nMessage-ID: {self.message_id}\r\n"
            f"Date: {email.utils.formatdate()}\r\n\r\ncounted message {self.message_id}\r\n"
        ).encode()


@dataclass(frozen=True)
class Outcome:
    status: str
    code: int | None
    text: str
    stage: str  # connect, AUTH, MAIL, RCPT, DATA
    at: float = field(default_factory=time.monotonic)

    @classmethod
    def of(cls, code: int, text: bytes | str, stage: str) -> Outcome:
        text = text.decode(errors="replace") if isinstance(text, bytes) else text
        if 200 <= code < 300:
            return cls(ACKNOWLEDGED if stage == "DATA" else "ok", code, text, stage)
        return cls(TEMPORARY if 400 <= code < 500 else PERMANENT, code, text, stage)

    def __str__(self) -> str:
        return f"{self.stage}: {self.code or ''} {self.text}".strip()


def smtp_client(stack: MailStack, port: str) -> smtplib.SMTP:
    """A client on one of the stack's SMTP endpoints, TLS verified against its CA: implicit TLS on smtps,
    STARTTLS done on smtp and submission."""
    endpoint = getattr(stack.endpoints, port)
    if port == "smtps":
        return smtplib.SMTP_SSL(endpoint.host, endpoint.port, local_hostname="client.test",
                                context=stack.ssl_context(), timeout=30)
    smtp = smtplib.SMTP(endpoint.host, endpoint.port, local_hostname="client.test", timeout=30)
    smtp.starttls(context=stack.ssl_context())
    return smtp


def is_drop(exc: BaseException) -> bool:
    return isinstance(exc, (smtplib.SMTPServerDisconnected, OSError, ssl.SSLError, EOFError))


class SmtpClient:
    """One SMTP session that reconnects when it has to: 25 (STARTTLS, no AUTH), 587 (STARTTLS + AUTH)
    or 465 (implicit TLS + AUTH). TLS is verified against the stack's CA."""

    def __init__(self, stack: MailStack, port: str = "smtp", user: User | None = None, timeout: float = 15.0):
        self.endpoint = getattr(stack.endpoints, port)
        self.port = port
        self.user = user
        self.context = stack.ssl_context()
        self.timeout = timeout
        self.smtp: smtplib.SMTP | None = None

    def connect(self) -> Outcome | None:
        """Open the session; None when ready, else why it could not be opened."""
        host, port = self.endpoint.host, self.endpoint.port
        try:
            if self.port == "smtps":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(host, port, local_hostname="client.test", context=self.context,
                                                      timeout=self.timeout)
            else:
                smtp = smtplib.SMTP(host, port, local_hostname="client.test", timeout=self.timeout)
                smtp.starttls(context=self.context)
            smtp.ehlo()
        except smtplib.SMTPResponseException as exc:
            return Outcome.of(exc.smtp_code, exc.smtp_error, "connect")
        except Exception as exc:  # noqa: BLE001 - any failure to connect is a dropped connection here
            if not is_drop(exc) and not isinstance(exc, smtplib.SMTPException):
                raise
            return Outcome(DROPPED, None, repr(exc), "connect")
        if self.user is not None:
            try:
                smtp.login(self.user.address, self.user.password)
            except smtplib.SMTPResponseException as exc:
                smtp.close()
                return Outcome.of(exc.smtp_code, exc.smtp_error, "AUTH")
            except Exception as exc:  # noqa: BLE001
                smtp.close()
                if not is_drop(exc) and not isinstance(exc, smtplib.SMTPException):
                    raise
                return Outcome(DROPPED, None, repr(exc), "AUTH")
        self.smtp = smtp
        return None

    def send(self, message: Message) -> Outcome:
        """One transaction: MAIL, RCPT (every recipient), DATA. Returns the first refusal or the DATA reply."""
        if self.smtp is None:
            failed = self.connect()
            if failed is not None:
                return failed
        assert self.smtp is not None
        stage = "MAIL"
        try:
            code, text = self.smtp.mail(message.sender)
            if code == 250:
                stage = "RCPT"
                for recipient in message.recipients:
                    code, text = self.smtp.rcpt(recipient)
                    if code not in (250, 251):
                        break
            if code not in (250, 251):
                outcome = Outcome.of(code, text, stage)
                self._reset(code)
                return outcome
            stage = "DATA"
            code, text = self.smtp.data(message.raw())
            outcome = Outcome.of(code, text, stage)
            if code == 421:
                self.close()
            return outcome
        except smtplib.SMTPDataError as exc:  # refused at DATA, before the message was sent
            self._reset(exc.smtp_code)
            return Outcome.of(exc.smtp_code, exc.smtp_error, stage)
        except Exception as exc:  # noqa: BLE001
            self.close()
            if not is_drop(exc) and not isinstance(exc, smtplib.SMTPException):
                raise
            return Outcome(DROPPED, None, repr(exc), stage)

    def _reset(self, code: int) -> None:
        if code == 421:
            self.close()
            return
        try:
            assert self.smtp is not None
            self.smtp.rset()
        except Exception:  # noqa: BLE001 - a broken session is reopened on the next send
            self.close()

    def close(self) -> None:
        if self.smtp is not None:
            try:
                self.smtp.close()
            finally:
                self.smtp = None


@dataclass
class Event:
    message_id: str
    port: str
    outcome: Outcome


class Ledger:
    """Every message sent and every reply it got; thread-safe, with waits on its own state."""

    def __init__(self, name: str, explain: Callable[[], str] | None = None) -> None:
        self.name = name
        self.explain = explain  # more context for a failed wait (e.g. a log tail)
        self.token = f"{name}-{uuid.uuid4().hex[:8]}"
        self.messages: dict[str, Message] = {}
        self.events: list[Event] = []
        self.acknowledged: dict[str, float] = {}
        self._condition = threading.Condition()
        self._seq = 0

    def new_message(self, sender: str, recipients: Iterable[str], label: str = "") -> Message:
        with self._condition:
            self._seq += 1
            seq = self._seq
        tag = f"{label}-{seq}" if label else str(seq)
        message = Message(f"<{self.token}.{tag}@mailstack.test>", f"{self.token} {tag}", sender, tuple(recipients))
        with self._condition:
            self.messages[message.message_id] = message
        return message

    def record(self, message: Message, port: str, outcome: Outcome) -> Outcome:
        with self._condition:
            self.events.append(Event(message.message_id, port, outcome))
            if outcome.status == ACKNOWLEDGED:
                self.acknowledged.setdefault(message.message_id, outcome.at)
            self._condition.notify_all()
        return outcome

    def send(self, client: SmtpClient, message: Message) -> Outcome:
        return self.record(message, client.port, client.send(message))

    def wait_until(self, what: str, predicate: Callable[[Ledger], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with self._condition:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    extra = f"\n{self.explain()}" if self.explain else ""
                    raise AssertionError(f"{self.name}: not within {timeout:.0f}s: {what}\n{self.summary()}{extra}")
                self._condition.wait(left)

    # --- counts -------------------------------------------------------------------------------

    def count(self, status: str, port: str | None = None, after: float = 0.0, before: float = float("inf")) -> int:
        """Replies of this status (on this port, between two instants)."""
        with self._condition:
            return sum(1 for e in self.events if e.outcome.status == status and (port is None or e.port == port)
                       and after <= e.outcome.at < before)

    def first(self, status: str, port: str | None = None, after: float = 0.0) -> float | None:
        """When the first reply of this status came (on this port), after an instant."""
        with self._condition:
            return min((e.outcome.at for e in self.events if e.outcome.status == status
                        and (port is None or e.port == port) and e.outcome.at >= after), default=None)

    def last(self, status: str, port: str | None = None) -> float | None:
        """When the last reply of this status came (on this port)."""
        with self._condition:
            return max((e.outcome.at for e in self.events if e.outcome.status == status
                        and (port is None or e.port == port)), default=None)

    def outcomes(self, status: str | None = None) -> list[Outcome]:
        with self._condition:
            return [e.outcome for e in self.events if status is None or e.outcome.status == status]

    def codes(self) -> Counter[str]:
        with self._condition:
            return Counter(f"{e.outcome.code or e.outcome.status}" for e in self.events)

    def summary(self) -> str:
        replies = ", ".join(f"{code}: {n}" for code, n in sorted(self.codes().items()))
        return (f"{self.name}: {len(self.messages)} message(s), {len(self.events)} attempt(s), "
                f"{len(self.acknowledged)} acknowledged; replies {replies or 'none'}")


@dataclass(frozen=True)
class Tally:
    """The count of one test's messages, and the judgement."""

    name: str
    sent: int
    acknowledged: int
    delivered: int
    duplicated: int
    lost: int
    delivered_unacknowledged: int
    strangers: int
    replies: str
    duplicates: frozenset[str] = frozenset()
    login_retries: int = 0  # IMAP logins Dovecot refused temporarily while counting

    def line(self) -> str:
        extra = f", delivered without a 250: {self.delivered_unacknowledged}" if self.delivered_unacknowledged else ""
        if self.login_retries:
            extra += f", IMAP login refused temporarily {self.login_retries}x while counting"
        return (f"[count] {self.name}: sent {self.sent} / acknowledged {self.acknowledged} / delivered "
                f"{self.delivered} / duplicated {self.duplicated} / lost {self.lost}{extra} (replies: {self.replies})")

    def assert_nothing_lost(self) -> None:
        assert self.lost == 0, f"messages acknowledged with 250 but never delivered\n{self.line()}"
        assert self.duplicated == 0, f"messages delivered more than once\n{self.line()}"
        assert self.strangers == 0, f"mail in the mailboxes that no one sent\n{self.line()}"


def tally(ledger: Ledger, delivered: Counter[str]) -> Tally:
    ours = {mid: n for mid, n in delivered.items() if mid in ledger.messages}
    acked = set(ledger.acknowledged)
    return Tally(
        name=ledger.name,
        sent=len(ledger.messages),
        acknowledged=len(acked),
        delivered=sum(1 for mid in acked if ours.get(mid)),
        duplicated=sum(n - 1 for n in ours.values() if n > 1),
        lost=sum(1 for mid in acked if not ours.get(mid)),
        delivered_unacknowledged=sum(1 for mid in ours if mid not in acked),
        strangers=sum(n for mid, n in delivered.items() if mid not in ledger.messages),
        replies=", ".join(f"{code}: {n}" for code, n in sorted(ledger.codes().items())),
        duplicates=frozenset(mid for mid, n in ours.items() if n > 1),
    )


# --- mailboxes and the queue ------------------------------------------------------------------


class Mailbox:
    """A user's INBOX over IMAPS, counting the messages whose subject carries a token, by Message-ID."""

    def __init__(self, stack: MailStack, user: User) -> None:
        self.stack, self.user = stack, user
        self.client: IMAPClient | None = None
        self.unavailable = 0  # logins refused with a temporary failure

    def count(self, token: str) -> Counter[str] | None:
        """Messages by Message-ID, or None when Dovecot cannot log the user in just now ([UNAVAILABLE]:
        its SQL connection is still in reconnect back-off after a MariaDB outage); the caller polls."""
        if self.client is None:
            try:
                self.client = self.stack.imap(self.user)
            except imapclient.exceptions.LoginError as exc:
                if "UNAVAILABLE" not in str(exc):
                    raise
                self.unavailable += 1
                return None
            self.client.select_folder("INBOX", readonly=True)
        else:
            self.client.noop()
        found = self.client.search(["SUBJECT", token])
        counts: Counter[str] = Counter()
        if not found:
            return counts
        for data in self.client.fetch(found, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]).values():
            header = email.message_from_bytes(data[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"], policy=email.policy.default)
            counts[str(header["Message-ID"]).strip()] += 1
        return counts

    def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):  # closing a session that may already be gone
                self.client.logout()
            self.client = None


def queued(stack: MailStack) -> list[dict]:
    """Postfix's queue (every queue: incoming, active, deferred, hold), one dict per message."""
    out = stack.stack.exec("postfix", ["postqueue", "-j"]).stdout.decode()
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def queued_for(stack: MailStack, addresses: Iterable[str]) -> list[dict]:
    """Queued messages with at least one of these recipients (other tests' mail is not ours to wait for)."""
    wanted = {address.lower() for address in addresses}
    return [entry for entry in queued(stack)
            if any(r.get("address", "").lower() in wanted for r in entry.get("recipients", []))]


def settle(stack: MailStack, ledger: Ledger, users: Iterable[User], timeout: float = 45.0) -> Tally:
    """Poll until every acknowledged message is in a mailbox and nothing for these users is left in
    Postfix's queue (so no copy can still arrive), or until the deadline; then count. A deferred queue
    is flushed now and then."""
    users = list(users)
    mailboxes = [Mailbox(stack, user) for user in users]
    deadline = time.monotonic() + timeout
    next_flush = 0.0
    try:
        while True:
            queue_empty = not queued_for(stack, [user.address for user in users])
            delivered: Counter[str] = Counter()
            counted = True
            for mailbox in mailboxes:
                found = mailbox.count(ledger.token)
                counted = counted and found is not None
                delivered.update(found or Counter())
            if counted and queue_empty and all(delivered.get(mid) for mid in ledger.acknowledged):
                result = tally(ledger, delivered)
                refused = sum(m.unavailable for m in mailboxes)
                return dataclasses.replace(result, login_retries=refused) if refused else result
            now = time.monotonic()
            if now > deadline:
                result = tally(ledger, delivered)
                left = queued_for(stack, [user.address for user in users])
                raise AssertionError(f"not settled within {timeout:.0f}s ({len(left)} message(s) still queued: "
                                     f"{[q.get('recipients') for q in left][:5]})\n{result.line()}")
            if not queue_empty and now >= next_flush:
                stack.stack.exec("postfix", ["postqueue", "-f"], check=False)
                next_flush = now + 1.0
            time.sleep(0.1)  # poll interval, bounded by the deadline
    finally:
        for mailbox in mailboxes:
            mailbox.close()


# --- bursts: senders that keep sending while a test breaks things -------------------------------


class Burst(threading.Thread):
    """Sends messages one after another on one port, like an MTA with a small retry queue: a message
    refused with 4xx (or whose connection broke before DATA) is retried; one whose connection broke
    during DATA is not (its fate is unknown to the sender: retrying could duplicate it).

    After a refusal the session is closed and the retry comes in a new one, as a sending MTA does (a
    Postfix smtpd process keeps its own MariaDB connection for the whole session). On 587/465 every new
    session is an AUTH, and Postfix allows 30 AUTH a minute per client: keep `retry_pause` there larger.

    `stop_new` ends the making of new messages; the thread then retries what is left until it is
    accepted or `deadline` passes. `stop_on_drop` ends the burst at the first broken connection."""

    def __init__(self, stack: MailStack, ledger: Ledger, port: str, sender: str, recipients: list[str],
                 user: User | None = None, outstanding: int = 4, retry_pause: float | None = None,
                 stop_on_drop: bool = False, deadline: float = 60.0, pace: float = 0.05) -> None:
        super().__init__(name=f"burst-{port}", daemon=True)
        self.client = SmtpClient(stack, port, user)
        self.ledger, self.port, self.sender, self.recipients = ledger, port, sender, recipients
        if retry_pause is None:
            retry_pause = 0.05 if user is None else 0.3
        self.outstanding, self.retry_pause, self.stop_on_drop = outstanding, retry_pause, stop_on_drop
        self.pace = pace  # at most one new message per `pace` seconds: a steady stream, not a flood
        self._next_new = 0.0
        self.deadline = time.monotonic() + deadline
        self.stop_new = threading.Event()
        self.halt = threading.Event()
        self.retry: deque[Message] = deque()
        self.unknown: list[Message] = []  # dropped during DATA: maybe delivered, never retried
        self.error: BaseException | None = None

    def connect(self) -> None:
        """Open the session now (e.g. AUTH while Dovecot is still up)."""
        failed = self.client.connect()
        if failed is not None:
            raise AssertionError(f"{self.port}: cannot open the session: {failed}")

    def _next(self) -> Message | None:
        if self.retry and (self.stop_new.is_set() or len(self.retry) >= self.outstanding):
            return self.retry.popleft()
        if not self.stop_new.is_set():
            wait = self._next_new - time.monotonic()
            if wait > 0:
                self.halt.wait(wait)  # pacing, not synchronisation
            self._next_new = time.monotonic() + self.pace
            return self.ledger.new_message(self.sender, self.recipients, self.port)
        return self.retry.popleft() if self.retry else None

    def run(self) -> None:
        try:
            while not self.halt.is_set() and time.monotonic() < self.deadline:
                message = self._next()
                if message is None:
                    return
                outcome = self.ledger.send(self.client, message)
                if outcome.status == DROPPED and outcome.stage == "DATA":
                    self.unknown.append(message)
                elif outcome.status in (TEMPORARY, DROPPED):
                    self.retry.append(message)
                if outcome.status == DROPPED and self.stop_on_drop:
                    return
                if outcome.status in (TEMPORARY, DROPPED):
                    self.client.close()
                    self.halt.wait(self.retry_pause)  # back-off between retries, not synchronisation
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self.error = exc
        finally:
            self.client.close()

    def finish(self, timeout: float = 60.0) -> None:
        self.stop_new.set()
        self.join(timeout)
        if self.is_alive():
            self.halt.set()
            self.join(5)
        if self.error is not None:
            raise self.error


@contextlib.contextmanager
def sending(bursts: list[Burst]) -> Iterator[list[Burst]]:
    """The bursts' threads running for the block; each finished afterwards (the block failing too)."""
    for burst in bursts:
        burst.start()
    try:
        yield bursts
    finally:
        for burst in bursts:
            burst.finish()


def permanent_refusals(ledger: Ledger) -> list[str]:
    return [f"{e.port} {e.outcome}" for e in list(ledger.events) if e.outcome.status == PERMANENT]


def bounces_in(log: str) -> list[str]:
    return [line for line in log.splitlines() if "status=bounced" in line]


@contextlib.contextmanager
def started_together(stacks: dict[str, MailStack]) -> Iterator[dict[str, MailStack]]:
    """Start the stacks concurrently (a start is mostly waiting), yield them, and stop every one afterwards,
    also when one of them failed to start."""
    with ThreadPoolExecutor(max_workers=len(stacks)) as pool:
        futures = [pool.submit(stack.start) for stack in stacks.values()]
    try:
        for future in futures:
            future.result()
        yield stacks
    finally:
        for stack in stacks.values():
            stack.stop()


def wait_for(condition: Callable[[], bool], timeout: float = 15.0, interval: float = 0.1) -> bool:
    """Poll condition until it holds (True) or the timeout passes (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)  # poll interval, bounded by the deadline
    return True


class ImapsByAddress(imaplib.IMAP4_SSL):
    """IMAPS to an address (a pod's, a swarm node's), checking the certificate for `server_name`."""

    def __init__(self, host: str, port: int, server_name: str, ssl_context: ssl.SSLContext,
                 timeout: float | None = 30) -> None:
        self.server_name = server_name
        super().__init__(host, port, ssl_context=ssl_context, timeout=timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout)
        return self.ssl_context.wrap_socket(sock, server_hostname=self.server_name)


def smtp_by_address(address: str, port: int, server_name: str, timeout: float = 30) -> smtplib.SMTP:
    """SMTP to an address; starttls() then checks the certificate for `server_name`."""
    smtp = smtplib.SMTP(address, port, local_hostname="client.test", timeout=timeout)
    smtp._host = server_name  # what starttls() checks the certificate against (we connect by address)
    return smtp
