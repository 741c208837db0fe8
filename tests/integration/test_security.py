"""Security: no one let in. Open relay, TLS versions and ciphers, plaintext logins, SQL injection in every
field Postfix or Dovecot puts into a query, brute force, the database's exposure, the secrets' modes,
and random seeds against the real database. Mail is counted as everywhere: sent / acknowledged /
delivered / duplicated / lost.

Probes that leave no trace use the session's stack. Failed logins do leave one (Dovecot's per-address
penalty, Postfix's per-client AUTH counter), and from the host every client has the same address (the
Docker gateway's): those tests run on stacks of their own, so no other test pays for them.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import os
import poplib
import smtplib
import socket
import ssl
import stat
import struct
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import product

import pymysql
import pytest
import yaml
from helpers import OUTSIDE, Ledger, Outcome, SmtpClient, settle, started_together
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mailstack import seed
from mailstack.api import MailStack, User
from mailstack.db import Database
from mailstack.errors import MailstackError
from mailstack.passwords import verify_password
from mailstack.schema import DB_NAME, MAIL_READER
from mailstack.secrets import ensure_secret

pytestmark = pytest.mark.integration

SMTP_PORTS = ("smtp", "submission", "smtps")
TLS_PORTS = ("smtps", "submission", "imaps", "pop3s", "smtp")


# --- shared ---------------------------------------------------------------------------------------


def snapshot(stack: MailStack) -> tuple[list[str], dict[str, str], dict[str, list[str]]]:
    """Every row of the mail tables, read through the schema's Store."""
    with Database.for_stack(stack.stack).transaction() as store:
        return store.domains(), store.users(), store.aliases()


def smtp_session(stack: MailStack, port: str, tls: bool = True, timeout: float = 15) -> smtplib.SMTP:
    endpoint = getattr(stack.endpoints, port)
    if port == "smtps":
        session: smtplib.SMTP = smtplib.SMTP_SSL(endpoint.host, endpoint.port, local_hostname="client.test",
                                                 context=stack.ssl_context(), timeout=timeout)
    else:
        session = smtplib.SMTP(endpoint.host, endpoint.port, local_hostname="client.test", timeout=timeout)
        if tls:
            session.starttls(context=stack.ssl_context())
    session.ehlo()
    return session


def auth_plain(username: str, password: str) -> str:
    return "PLAIN " + base64.b64encode(f"\0{username}\0{password}".encode()).decode()


def log_count(stack: MailStack, service: str, *needles: str) -> int:
    return sum(1 for line in stack.stack.logs(service).splitlines() if any(n in line for n in needles))


def report(*lines: str) -> None:
    print()
    for line in lines:
        print(line)


@pytest.fixture(scope="module")
def hostile() -> Iterator[dict[str, MailStack]]:
    """Two stacks of this module's own, started together: one for injected logins and random seeds, one
    for brute force with `make up`'s refusal behaviour (auth failure delay and penalty; its penalties would
    otherwise spill into each other's timings)."""
    stacks = {"injection": MailStack(), "brute": MailStack(fast_refusals=False)}
    with started_together(stacks):
        yield stacks


# --- open relay -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    port: str
    authenticated: bool
    recipient: str  # local | outside
    sender: str  # own | forged

    def allowed(self) -> bool:
        if self.port == "smtp":  # inbound only: any sender, local recipients, never AUTH
            return not self.authenticated and self.recipient == "local"
        return self.authenticated and self.sender == "own"

    def __str__(self) -> str:
        return f"{self.port}/{'auth' if self.authenticated else 'anon'}/{self.recipient}/{self.sender}-sender"


def test_open_relay_matrix(mailstack: MailStack) -> None:
    me, other, recipient = mailstack.add_user(), mailstack.add_user(), mailstack.add_user()
    outside = f"someone-{uuid.uuid4().hex[:8]}@{OUTSIDE}"
    ledger = Ledger("relay-matrix")
    results: dict[Cell, str] = {}
    for port, authenticated in product(SMTP_PORTS, (False, True)):
        session = smtp_session(mailstack, port)
        try:
            logged_in = False
            if authenticated:
                if port == "smtp":
                    assert not session.has_extn("auth"), "AUTH offered on port 25"
                    code, text = session.docmd("AUTH", auth_plain(me.address, me.password))
                    assert code >= 500, f"AUTH on 25: {code} {text!r}"
                    for cell in (Cell(port, True, r, s) for r in ("local", "outside") for s in ("own", "forged")):
                        results[cell] = f"AUTH refused {code}"
                    continue
                session.login(me.address, me.password)
                logged_in = True
            for recipient_kind, sender_kind in product(("local", "outside"), ("own", "forged")):
                cell = Cell(port, logged_in, recipient_kind, sender_kind)
                sender = me.address if sender_kind == "own" else other.address
                to = recipient.address if recipient_kind == "local" else outside
                code, text = session.docmd("MAIL", f"FROM:<{sender}>")
                if code == 250:
                    code, text = session.docmd("RCPT", f"TO:<{to}>")
                    if code == 250 and recipient_kind == "local":
                        message = ledger.new_message(sender, [to], str(cell).replace("/", "-"))
                        code, text = session.data(message.raw())
                        ledger.record(message, port, Outcome.of(code, text, "DATA"))
                    elif code == 250:
                        session.rset()  # an outside recipient accepted: never send it anything
                        code, text = 250, b"RCPT accepted (not sent)"
                    else:
                        session.rset()
                else:
                    session.rset()
                results[cell] = f"{code} {text.decode(errors='replace')[:60]}"
        finally:
            session.close()

    wrong = {str(cell): outcome for cell, outcome in results.items()
             if outcome.startswith("2") != cell.allowed()}
    refused_with_4xx = {str(c): o for c, o in results.items() if o.startswith("4")}
    result = settle(mailstack, ledger, [recipient])
    report(result.line(), "[relay] " + "; ".join(f"{cell}: {'ACCEPT' if o.startswith('2') else o[:30]}"
                                                 for cell, o in results.items()))
    assert len(results) == 24
    assert not wrong, f"cells not as the policy says: {wrong}"
    assert not refused_with_4xx, f"policy refusals must be permanent: {refused_with_4xx}"
    assert result.acknowledged == result.sent == sum(c.allowed() and c.recipient == "local" for c in results)
    result.assert_nothing_lost()


RELAY_TRICKS = [
    "victim%{outside}@{domain}", "@{domain},@{outside}:victim@{outside}", "@{domain}:victim@{outside}",
    "{outside}!victim@{domain}", "\"victim@{outside}\"@{domain}", "victim@{outside}.", "victim@[192.0.2.1]",
    "victim@{outside}@{domain}", "victim@{domain}.{outside}", "postmaster@{outside}",
]


def test_relay_tricks_on_25_are_refused(mailstack: MailStack) -> None:
    outside = OUTSIDE
    replies = {}
    session = smtp_session(mailstack, "smtp")
    try:
        for trick in RELAY_TRICKS:
            address = trick.format(outside=outside, domain=mailstack.domain)
            assert session.docmd("MAIL", "FROM:<spammer@elsewhere.test>")[0] == 250
            code, text = session.docmd("RCPT", f"TO:<{address}>")
            replies[address] = (code, text.decode(errors="replace"))
            session.rset()
    finally:
        session.close()
    report("[relay-tricks] " + "; ".join(f"{a} -> {c}" for a, (c, _) in replies.items()))
    assert len(replies) == len(RELAY_TRICKS)
    assert all(code >= 500 for code, _ in replies.values()), replies


# --- plaintext logins ---------------------------------------------------------------------------


def test_port_25_never_offers_auth(mailstack: MailStack) -> None:
    user = mailstack.add_user()
    plain = smtp_session(mailstack, "smtp", tls=False)
    try:
        assert plain.has_extn("starttls") and not plain.has_extn("auth")
        assert plain.docmd("AUTH", auth_plain(user.address, user.password))[0] >= 500
    finally:
        plain.close()
    encrypted = smtp_session(mailstack, "smtp")
    try:
        assert not encrypted.has_extn("auth"), encrypted.esmtp_features
        code, text = encrypted.docmd("AUTH", auth_plain(user.address, user.password))
        assert code == 503, (code, text)
    finally:
        encrypted.close()


def test_submission_offers_auth_only_after_starttls(mailstack: MailStack) -> None:
    user = mailstack.add_user()
    session = smtp_session(mailstack, "submission", tls=False)
    try:
        assert session.has_extn("starttls") and not session.has_extn("auth"), session.esmtp_features
        auth = session.docmd("AUTH", auth_plain(user.address, user.password))
        mail = session.docmd("MAIL", f"FROM:<{user.address}>")
        assert auth[0] == 530 and mail[0] == 530, (auth, mail)  # 5.7.0 Must issue a STARTTLS command first
        session.starttls(context=mailstack.ssl_context())
        session.ehlo()
        assert "PLAIN" in session.esmtp_features.get("auth", "").upper()
    finally:
        session.close()


def test_port_25_starttls_is_offered_not_required(mailstack: MailStack) -> None:
    recipient = mailstack.add_user()
    ledger = Ledger("plain-25")
    session = smtp_session(mailstack, "smtp", tls=False)
    try:
        assert session.has_extn("starttls")
        message = ledger.new_message(f"peer@{OUTSIDE}", [recipient.address])
        session.mail(message.sender)
        session.rcpt(recipient.address)
        ledger.record(message, "smtp", Outcome.of(*session.data(message.raw()), "DATA"))
    finally:
        session.close()
    received = mailstack.wait_for_message(recipient, message_id=message.message_id)
    result = settle(mailstack, ledger, [recipient])
    report(result.line())
    assert "using TLS" not in str(received["Received"]), received["Received"]
    assert result.acknowledged == result.sent == 1
    result.assert_nothing_lost()


def test_no_plaintext_imap_or_pop3(mailstack: MailStack) -> None:
    listening = mailstack.stack.exec("dovecot", ["cat", "/proc/net/tcp"]).stdout.decode()
    ports = {int(line.split()[1].split(":")[1], 16) for line in listening.splitlines()[1:]
             if line.split()[3] == "0A"}
    assert {993, 995} <= ports and not ports & {143, 110}, ports
    published = mailstack.stack.container("dovecot").network_settings.ports or {}
    # ManageSieve (4190) starts in clear like IMAP's 143 would, but refuses AUTHENTICATE before STARTTLS
    # (test_sieve.py); no plaintext IMAP or POP3 port is published
    assert {port for port, bindings in published.items() if bindings} == {"993/tcp", "995/tcp", "4190/tcp"}
    config = mailstack.stack.exec("dovecot", ["doveconf", "-h", "ssl", "disable_plaintext_auth"]).stdout.split()
    assert config == [b"required", b"yes"], config


# --- TLS --------------------------------------------------------------------------------------------

VERSIONS = {
    "SSLv3": 0x0300, "TLSv1": 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303,
}
PY_VERSIONS = {"TLSv1": ssl.TLSVersion.TLSv1, "TLSv1.1": ssl.TLSVersion.TLSv1_1,
               "TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}

# TLS 1.2 suites of Mozilla's "intermediate" configuration (v5.7); TLS 1.3 suites are all fine.
MOZILLA_INTERMEDIATE = {0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0x009E, 0x009F, 0xCCAA}
NOT_INTERMEDIATE = {
    "NULL": [0x0001, 0x0002, 0x003B, 0xC006, 0xC010],
    "anonymous": [0x0018, 0x001B, 0x0034, 0x00A6, 0xC018, 0xC019],
    "EXPORT": [0x0003, 0x0006, 0x0008, 0x0014],
    "RC4": [0x0004, 0x0005, 0xC007, 0xC011],
    "3DES": [0x000A, 0x0016, 0xC008, 0xC012],
    "DES": [0x0009, 0x0015],
    "CBC (SHA1/SHA2)": [0xC009, 0xC00A, 0xC013, 0xC014, 0xC023, 0xC024, 0xC027, 0xC028, 0x002F, 0x0035],
    "static RSA GCM": [0x009C, 0x009D],
    "CCM / CAMELLIA / ARIA": [0xC0AC, 0xC0AD, 0xC072, 0xC05C],
}


def client_hello(version: int, suites: list[int], host: str = "localhost") -> bytes:
    """A ClientHello built by hand: offers exactly these protocol versions and suites, whatever this
    machine's OpenSSL would be willing to send (it cannot send SSLv3, NULL or EXPORT suites at all)."""
    extensions = b""
    if version >= 0x0301:
        name = host.encode()
        sni = struct.pack("!HBH", len(name) + 3, 0, len(name)) + name
        groups = b"".join(struct.pack("!H", g) for g in (0x001D, 0x0017, 0x0018, 0x0019))
        algorithms = b"".join(struct.pack("!H", a) for a in (0x0403, 0x0503, 0x0603, 0x0804, 0x0805, 0x0806,
                                                              0x0401, 0x0501, 0x0601, 0x0203, 0x0201))
        extensions = (struct.pack("!HH", 0x0000, len(sni)) + sni
                      + struct.pack("!HHH", 0x000A, len(groups) + 2, len(groups)) + groups
                      + struct.pack("!HHBB", 0x000B, 2, 1, 0)
                      + struct.pack("!HHH", 0x000D, len(algorithms) + 2, len(algorithms)) + algorithms)
    ciphers = b"".join(struct.pack("!H", s) for s in suites)
    body = (struct.pack("!H", version) + os.urandom(32) + b"\x00" + struct.pack("!H", len(ciphers)) + ciphers
            + b"\x01\x00" + (struct.pack("!H", len(extensions)) + extensions if extensions else b""))
    handshake = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return b"\x16" + struct.pack("!HH", min(version, 0x0301), len(handshake)) + handshake


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _plain_socket(stack: MailStack, port: str) -> socket.socket:
    """A TCP connection to `port`, for SMTP ports already past STARTTLS's 220 (TLS starts next)."""
    endpoint = getattr(stack.endpoints, port)
    sock = socket.create_connection((endpoint.host, endpoint.port), timeout=10)
    if port in ("smtp", "submission"):
        reader = sock.makefile("rb")
        reader.readline()
        sock.sendall(b"EHLO client.test\r\n")
        while reader.readline()[3:4] == b"-":
            pass
        sock.sendall(b"STARTTLS\r\n")
        assert reader.readline().startswith(b"220"), "STARTTLS refused"
    return sock


def raw_probe(stack: MailStack, port: str, version: int, suites: list[int]) -> tuple[int, int] | None:
    """(version, suite) of the ServerHello, or None when the server refuses (alert or close)."""
    with _plain_socket(stack, port) as sock:
        sock.sendall(client_hello(version, suites))
        try:
            head = _read(sock, 5)
            if len(head) < 5 or head[0] != 0x16:
                return None
            body = _read(sock, struct.unpack("!H", head[3:5])[0])
        except (ConnectionResetError, TimeoutError):
            return None
    if body[:1] != b"\x02":
        return None
    session_id = body[38]
    return struct.unpack("!H", body[4:6])[0], struct.unpack("!H", body[39 + session_id:41 + session_id])[0]


def python_handshake(stack: MailStack, port: str, context: ssl.SSLContext) -> tuple[str, str]:
    """A real handshake with Python's ssl (certificate verified against the stack's CA)."""
    endpoint = getattr(stack.endpoints, port)
    with _plain_socket(stack, port) as sock, context.wrap_socket(sock, server_hostname=endpoint.host) as tls:
        version, cipher = tls.version(), tls.cipher()
        assert version is not None and cipher is not None
        return version, cipher[0]


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("port", TLS_PORTS)
def test_tls_versions(mailstack: MailStack, port: str) -> None:
    accepted: dict[str, str] = {}
    for name, number in VERSIONS.items():
        hello = raw_probe(mailstack, port, number, sorted(MOZILLA_INTERMEDIATE) + [0x002F, 0xC009, 0xC013])
        accepted[f"raw {name}"] = f"{hello[0]:#06x}" if hello else "refused"
    for name, version in PY_VERSIONS.items():
        context = mailstack.ssl_context()
        context.minimum_version = context.maximum_version = version
        if version < ssl.TLSVersion.TLSv1_2:
            context.set_ciphers("DEFAULT:@SECLEVEL=0")  # so that it is the server that says no
        try:
            got, cipher = python_handshake(mailstack, port, context)
            accepted[name] = f"{got} {cipher}"
        except (ssl.SSLError, ConnectionError) as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            assert reason not in ("NO_PROTOCOLS_AVAILABLE", "UNSUPPORTED_PROTOCOL"), f"client-side: {exc}"
            accepted[name] = f"refused ({reason})"
    report(f"[tls] {port}: " + "; ".join(f"{k}: {v}" for k, v in accepted.items()))
    for name in ("raw SSLv3", "raw TLSv1", "raw TLSv1.1", "TLSv1", "TLSv1.1"):
        assert accepted[name].startswith("refused"), (name, accepted[name])
    assert accepted["raw TLSv1.2"] == "0x0303"
    assert accepted["TLSv1.2"].startswith("TLSv1.2 ") and accepted["TLSv1.3"].startswith("TLSv1.3 ")


@pytest.mark.parametrize("port", TLS_PORTS)
def test_tls_cipher_suites_are_mozilla_intermediate(mailstack: MailStack, port: str) -> None:
    accepted = {suite for suite in MOZILLA_INTERMEDIATE if raw_probe(mailstack, port, 0x0303, [suite])}
    weak = {f"{family} {suite:#06x}": raw_probe(mailstack, port, 0x0303, [suite])
            for family, suites in NOT_INTERMEDIATE.items() for suite in suites}
    everything_weak = [s for suites in NOT_INTERMEDIATE.values() for s in suites]
    # Offered all at once, next to a good one, the server must still pick a good one.
    mixed = raw_probe(mailstack, port, 0x0303, everything_weak + [0xC02B])
    report(f"[ciphers] {port}: intermediate suites accepted {sorted(hex(s) for s in accepted)}; "
           f"weak accepted {[k for k, v in weak.items() if v] or 'none'}; mixed offer -> "
           f"{hex(mixed[1]) if mixed else 'refused'}")
    assert accepted, "no Mozilla-intermediate suite accepted: the probe itself is broken"
    assert not [k for k, v in weak.items() if v], weak
    assert mixed is not None and mixed[1] in MOZILLA_INTERMEDIATE


# --- SQL injection ----------------------------------------------------------------------------------

INJECTIONS = [
    "' OR '1'='1", "x' OR '1'='1", "x'OR'1'='1", "x'; DROP TABLE users; --", "x' UNION SELECT email FROM users -- ",
    "%", "%%", "_", "\\", "x\\'", "x\\' OR 1=1 -- ", "x'/*", "*/'", "x\"", "x`", "x'#", "a" * 300,
]


def test_sql_injection_in_rcpt_and_mail_from_is_refused_cleanly(mailstack: MailStack) -> None:
    author, recipient = mailstack.add_user(), mailstack.add_user()
    domain = mailstack.domain
    before = snapshot(mailstack)
    errors_before = log_count(mailstack, "postfix", "query failed", "lookup error", "table lookup problem")
    replies: dict[str, tuple[int, str]] = {}
    probes = ([("RCPT 25", f"{i}@{domain}") for i in INJECTIONS]
              + [("RCPT 25", f"{recipient.address}{i}") for i in ("' OR '1'='1", "'--", "%")]
              + [("RCPT 25", f"victim@{domain}{i}") for i in ("' OR '1'='1", "'#")]
              + [("RCPT 25", i) for i in INJECTIONS]
              + [("MAIL 587", f"{i}@{domain}") for i in INJECTIONS]
              + [("MAIL 587", f"{author.address}{i}") for i in ("' OR '1'='1", "'--", "%")])
    # A few probes per session: Postfix slows a client down after 10 errors in one session, and on 587
    # every session is one more AUTH (30 a minute per client address).
    for kind in ("RCPT 25", "MAIL 587"):
        addresses = [address for k, address in probes if k == kind]
        for chunk in (addresses[i:i + 8] for i in range(0, len(addresses), 8)):
            session = smtp_session(mailstack, "smtp" if kind == "RCPT 25" else "submission")
            try:
                if kind == "MAIL 587":
                    session.login(author.address, author.password)
                for address in chunk:
                    if kind == "MAIL 587":
                        code, text = session.docmd("MAIL", f"FROM:<{address}>")
                    else:
                        assert session.docmd("MAIL", f"FROM:<peer@{OUTSIDE}>")[0] == 250
                        code, text = session.docmd("RCPT", f"TO:<{address}>")
                    replies[f"{kind} <{address[:40]}>"] = (code, text.decode(errors="replace")[:70])
                    session.rset()
            finally:
                session.close()
    errors_after = log_count(mailstack, "postfix", "query failed", "lookup error", "table lookup problem")

    # Then the same sessions' real use still works: a legitimate message, counted.
    ledger = Ledger("after-injection")
    ledger.send(SmtpClient(mailstack, "submission", author), ledger.new_message(author.address, [recipient.address]))
    result = settle(mailstack, ledger, [recipient])
    report(result.line(), f"[injection] {len(replies)} probes: "
           + ", ".join(f"{c}: {n}" for c, n in sorted(_histogram(replies).items())))

    not_refused = {k: v for k, v in replies.items() if v[0] < 500}
    assert not not_refused, f"accepted, or failed temporarily (a broken query answers 451): {not_refused}"
    assert errors_after == errors_before, "Postfix logged SQL errors"
    assert snapshot(mailstack) == before
    assert result.acknowledged == result.sent == 1
    result.assert_nothing_lost()


def _histogram(replies: dict[str, tuple[int, str]]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for code, _ in replies.values():
        counts[code] = counts.get(code, 0) + 1
    return counts


AUTH_INJECTIONS = [
    "' OR '1'='1", "' OR '1'='1' -- ", "x' OR 'a'='a@example.test", "admin'#@example.test", "%@example.test",
    "_@example.test", "\\@example.test", "x\\' OR 1=1 -- @example.test", "\"; DROP TABLE users; --",
    "' UNION SELECT email AS user, '{PLAIN}injected-pw' AS password FROM users -- ",
    "x' UNION SELECT 'x@example.test' AS user, '{PLAIN}injected-pw' AS password -- ",
    "a" * 2000 + "@example.test",
    # Only characters Dovecot's auth_username_chars lets through to the query: the quote is one of them.
    "victim@example.test'-'0", "victim@example.test'--", "o'brien'--@example.test", "'+'@example.test",
    "x'-'0", "victim@example.test'+'",
]


def _smtp_login(stack: MailStack, port: str, username: str, password: str) -> str:
    try:
        session = smtp_session(stack, port, timeout=60)
    except (OSError, smtplib.SMTPException) as exc:
        return f"dropped {exc!r}"
    try:
        code, text = session.docmd("AUTH", auth_plain(username, password))
        if code == 235:
            return "ACCEPTED"
        # Whatever AUTH said, a message without a login is refused.
        mail = session.docmd("MAIL", "FROM:<x@example.test>")[0]
        return f"{code} {text.decode(errors='replace')[:60]} | MAIL {mail}"
    except (OSError, smtplib.SMTPException) as exc:
        return f"dropped {exc!r}"
    finally:
        session.close()


def _imap_login(stack: MailStack, username: str, password: str) -> str:
    endpoint = stack.endpoints.imaps
    try:
        client = imaplib.IMAP4_SSL(endpoint.host, endpoint.port, ssl_context=stack.ssl_context(), timeout=60)
    except OSError as exc:
        return f"dropped {exc!r}"
    try:
        # imaplib quotes the password but sends the name as is: quote it, so that it reaches Dovecot whole.
        quoted = '"' + username.replace("\\", "\\\\").replace('"', '\\"') + '"'
        client.login(quoted, password)
        return "ACCEPTED"
    except imaplib.IMAP4.abort as exc:
        return f"closed {str(exc)[:80]}"
    except imaplib.IMAP4.error as exc:
        return f"NO {str(exc)[:80]}"
    except OSError as exc:
        return f"dropped {exc!r}"
    finally:
        with contextlib.suppress(Exception):
            client.shutdown()


def _pop3_login(stack: MailStack, username: str, password: str) -> str:
    endpoint = stack.endpoints.pop3s
    try:
        client = poplib.POP3_SSL(endpoint.host, endpoint.port, context=stack.ssl_context(), timeout=60)
    except OSError as exc:
        return f"dropped {exc!r}"
    try:
        client.user(username)
        client.pass_(password)
        return "ACCEPTED"
    except poplib.error_proto as exc:
        return f"-ERR {exc!s:.80}"
    except OSError as exc:
        return f"dropped {exc!r}"
    finally:
        with contextlib.suppress(OSError):
            client.close()


TEMPORARY_MARKS = ("454", "UNAVAILABLE", "SYS/TEMP", "Temporary")


def _sql_errors(stack: MailStack) -> int:
    return sum(1 for line in stack.stack.logs("dovecot").splitlines() if "Error" in line and "sql" in line.lower())


def test_sql_injection_in_login_names_is_refused_cleanly(hostile: dict[str, MailStack]) -> None:
    stack = hostile["injection"]
    stack.add_user(f"victim@{stack.domain}")
    before = snapshot(stack)
    sql_errors_before = _sql_errors(stack)
    attempts: dict[str, Callable[[], str]] = {}
    for name in AUTH_INJECTIONS:
        attempts[f"587 AUTH {name[:40]!r}"] = lambda n=name: _smtp_login(stack, "submission", n, "injected-pw")
        attempts[f"IMAP LOGIN {name[:40]!r}"] = lambda n=name: _imap_login(stack, n, "injected-pw")
        attempts[f"POP3 USER {name[:40]!r}"] = lambda n=name: _pop3_login(stack, n, "injected-pw")
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(attempts)) as pool:  # at once: each failure costs seconds
        outcomes = dict(zip(attempts, pool.map(lambda attempt: attempt(), attempts.values()), strict=True))
    took = time.monotonic() - started
    sql_errors_after = _sql_errors(stack)
    report(f"[auth-injection] {len(outcomes)} login attempts in {took:.1f}s: "
           + "; ".join(f"{k} -> {v[:50]}" for k, v in list(outcomes.items())[:9]) + " ...")

    assert not [k for k, v in outcomes.items() if "ACCEPTED" in v], outcomes
    temporary = {k: v for k, v in outcomes.items() if any(mark in v for mark in TEMPORARY_MARKS)}
    assert not temporary, f"temporary failures: a query broke? {temporary}"
    unsent = {k: v for k, v in outcomes.items() if "| MAIL" in v and not v.split("| MAIL")[1].strip().startswith("5")}
    assert not unsent, f"mail accepted without a login: {unsent}"
    assert snapshot(stack) == before
    assert sql_errors_after == sql_errors_before, "Dovecot logged SQL errors"


# --- brute force ---------------------------------------------------------------------------------


def test_brute_force_is_slowed_down_then_refused(hostile: dict[str, MailStack]) -> None:
    stack = hostile["brute"]
    victim = stack.add_user()

    def timed(attempt: Callable[[], str]) -> tuple[float, str]:
        started = time.monotonic()
        outcome = attempt()
        return time.monotonic() - started, outcome

    right = timed(lambda: _imap_login(stack, victim.address, victim.password))
    first_wrong = timed(lambda: _imap_login(stack, victim.address, "guess-number-0"))
    # Then a burst, in parallel, from the same address: 30 SMTP AUTH guesses on 465 and a few IMAP ones;
    # each after a failure, so Dovecot's penalty applies.
    guesses = [lambda i=i: _smtp_login(stack, "smtps", victim.address, f"guess-number-{i}") for i in range(1, 31)]
    guesses += [lambda i=i: _imap_login(stack, victim.address, f"imap-guess-{i}") for i in range(4)]
    with ThreadPoolExecutor(max_workers=len(guesses)) as pool:
        burst = list(pool.map(timed, guesses))
    # The 31st AUTH in a minute, with the right password: accepted. Every host client shares the bridge
    # gateway's address, so Postfix's per-client AUTH limit does not apply to it (test_many_clients.py);
    # the guesses were slowed down by Dovecot's penalty instead.
    last = timed(lambda: _smtp_login(stack, "smtps", victim.address, victim.password))

    durations = sorted(t for t, _ in burst)
    report(f"[brute-force] right password {right[0]:.2f}s; first wrong {first_wrong[0]:.2f}s; "
           f"{len(burst)} parallel guesses took {durations[0]:.2f}-{durations[-1]:.2f}s each; "
           f"31st SMTP AUTH (right password) {last[0]:.2f}s: {last[1]}")
    assert right[1] == "ACCEPTED" and right[0] < 1.0, right
    assert first_wrong[1].startswith("NO ") and first_wrong[0] >= 1.0, first_wrong  # auth_failure_delay
    assert not [o for _, o in burst if "ACCEPTED" in o], burst
    assert all("| MAIL 5" in o for _, o in burst if o.startswith("535")), burst  # no mail without a login
    assert durations[0] >= 3.0, f"no penalty after a failure: {durations}"  # Dovecot's auth penalty
    assert last[1] == "ACCEPTED", last


# --- the database and the secrets ---------------------------------------------------------------


def test_database_is_not_published_and_the_mail_reader_cannot_write(mailstack: MailStack) -> None:
    container = mailstack.stack.container("mysql")
    container.reload()
    published = {port: bindings for port, bindings in (container.network_settings.ports or {}).items() if bindings}
    assert not published, f"MariaDB published on the host: {published}"
    host, port = mailstack.stack.db_address()
    mail_password = ensure_secret(mailstack.settings.state_dir / "secrets", "db_mail_password")
    reader = pymysql.connect(host=host, port=port, user=MAIL_READER, password=mail_password, database=DB_NAME,
                             connect_timeout=5)
    try:
        with reader.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM users")
            with pytest.raises(pymysql.err.OperationalError) as denied:
                cursor.execute("INSERT INTO domains (name) VALUES ('written-by-reader.test')")
            assert denied.value.args[0] == 1142  # INSERT command denied
    finally:
        reader.close()
    with pytest.raises(pymysql.err.OperationalError) as refused:
        pymysql.connect(host=host, port=port, user="root", password="", connect_timeout=5)
    assert refused.value.args[0] in (1045, 1698), refused.value  # root: unix socket only


def test_generated_secrets_and_keys_are_owner_only(mailstack: MailStack) -> None:
    state = mailstack.settings.state_dir
    secret_values = [ensure_secret(state / "secrets", name).encode()
                     for name in ("db_admin_password", "db_mail_password")]
    sensitive = []
    for path in sorted(p for p in state.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if b"PRIVATE KEY" in data or any(value in data for value in secret_values):
            sensitive.append(path)
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode == 0o600 and path.stat().st_uid == os.getuid(), f"{path}: {oct(mode)}"
    assert stat.S_IMODE((state / "secrets").stat().st_mode) == 0o700
    names = {p.name for p in sensitive}
    assert {"db_admin_password", "db_mail_password", "ca.key", "server.key", "dovecot-sql.conf.ext"} <= names, names
    inside = {
        "postfix": "stat -c '%a %U:%G %n' /etc/postfix/sql/*.cf",
        "dovecot": "stat -c '%a %U:%G %n' /etc/dovecot/dovecot-sql.conf.ext",
        "mysql": "stat -c '%a %U:%G %n' /run/mysqld/init.sql /run/mysqld/health.cnf",
    }
    modes = {service: mailstack.stack.exec(service, ["bash", "-c", command]).stdout.decode().split("\n")
             for service, command in inside.items()}
    report(f"[secrets] {len(sensitive)} owner-only files in the state dir; in the containers: "
           + "; ".join(line for lines in modes.values() for line in lines if line))
    assert all(line.startswith("640 root:postfix") for line in modes["postfix"] if line)
    assert all(line.startswith("600 ") for line in modes["dovecot"] + modes["mysql"] if line)


# --- an address with a quote, end to end --------------------------------------------------------


def test_address_with_a_quote_works_end_to_end(mailstack: MailStack) -> None:
    address, password = "o'brien@example.test", "o'brien-password"
    alias = f"o'reilly-{uuid.uuid4().hex[:6]}@example.test"
    parsed = seed.parse(yaml.safe_dump({"domains": ["example.test"], "users": [{"address": address,
                                                                                 "password": password}],
                                        "aliases": [{"source": alias, "destinations": [address]}]}))
    seed.seed_database(mailstack.database, parsed, mailstack.settings.password_scheme, mailstack.settings.hash_cost)
    user = User(address, password)
    ledger = Ledger("quote")
    outside = SmtpClient(mailstack, "smtp")
    ledger.send(outside, ledger.new_message(f"peer@{OUTSIDE}", [address], "to-user"))
    ledger.send(outside, ledger.new_message(f"peer@{OUTSIDE}", [alias], "to-alias"))
    outside.close()
    for port in ("submission", "smtps"):  # AUTH as o'brien, MAIL FROM checked against o'brien's logins
        client = SmtpClient(mailstack, port, user)
        ledger.send(client, ledger.new_message(address, [address], f"from-user-{port}"))
        client.close()
    result = settle(mailstack, ledger, [user])  # IMAP login as o'brien
    endpoint = mailstack.endpoints.pop3s
    pop = poplib.POP3_SSL(endpoint.host, endpoint.port, context=mailstack.ssl_context(), timeout=30)
    try:
        pop.user(address)
        pop.pass_(password)
        in_pop = sum(ledger.token.encode() in b"\n".join(pop.top(i, 0)[1])
                     for i in range(1, pop.stat()[0] + 1))
    finally:
        pop.quit()
    report(result.line(), f"[quote] {address}: {in_pop} of the messages also seen over POP3")
    assert result.acknowledged == result.sent == 4, ledger.summary()
    result.assert_nothing_lost()
    assert in_pop == 4


# --- random seeds against the real database ------------------------------------------------------

_labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,5}[a-z0-9])?", fullmatch=True)
_domains = st.builds(lambda a, b: f"{a}.{b}", _labels, st.sampled_from(["test", "example", "invalid"]))
_locals = st.from_regex(r"[a-z0-9_'+-]{1,8}", fullmatch=True)
_junk = st.one_of(st.text(max_size=12), st.sampled_from(["' OR '1'='1", "%", "\\", "ü@ü.test", "a" * 300, ""]),
                  st.integers(), st.none())


@st.composite
def _random_seeds(draw: st.DrawFn) -> str:
    domains = draw(st.lists(_domains, min_size=1, max_size=3, unique=True))
    everywhere = [*domains, *draw(st.lists(_domains, max_size=1))]  # sometimes a domain nobody listed
    address = st.builds(lambda local, d: f"{local}@{d}", _locals, st.sampled_from(everywhere))
    document = {
        "domains": domains + draw(st.lists(_junk, max_size=1)),
        "users": draw(st.lists(st.fixed_dictionaries({
            "address": st.one_of(address, address.map(str.upper), _junk),
            "password": st.one_of(st.text(min_size=8, max_size=20), _junk)}), max_size=3)),
        "aliases": draw(st.lists(st.fixed_dictionaries({
            "source": st.one_of(address, _junk), "destinations": st.lists(st.one_of(address, _junk), max_size=2)}),
            max_size=2)),
    }
    if draw(st.integers(0, 4)) == 0:
        document[draw(st.text(max_size=8))] = draw(_junk)
    return yaml.safe_dump(document)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_random_seeds())
def test_random_seeds_apply_completely_or_not_at_all(hostile: dict[str, MailStack], text: str) -> None:
    stack = hostile["injection"]
    database = stack.database
    before = snapshot(stack)
    try:
        parsed = seed.parse(text, "random.yaml")
        changes = seed.seed_database(database, parsed, stack.settings.password_scheme, stack.settings.hash_cost)
    except MailstackError as exc:
        assert exc.message.startswith("random.yaml") or "not a local domain" in exc.message, exc.message
        assert len(exc.message) < 300 and exc.hint, exc
        assert snapshot(stack) == before
        return
    domains, users, aliases = snapshot(stack)
    assert set(parsed.domains) <= set(domains)
    for user in parsed.users:
        assert user.password is not None and verify_password(user.password, users[user.address])
    for alias in parsed.aliases:
        assert set(alias.destinations) <= set(aliases[alias.source])
    assert not changes or snapshot(stack) != before
    assert seed.seed_database(database, parsed, stack.settings.password_scheme, stack.settings.hash_cost) == []
