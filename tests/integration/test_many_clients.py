"""One host is many clients: every script and test suite on the machine reaches the published ports from
the Docker bridge gateway. Authenticated submissions are not rate-limited as one client; failed logins
are still refused (535), answered at once on disposable stacks and slowed down on `make up`'s settings.
"""

from __future__ import annotations

import contextlib
import imaplib
import json
import smtplib
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from mailstack.api import MailStack, User

SUBMISSIONS = 600
THREADS = 4


@pytest.fixture(scope="module")
def production_refusals() -> Iterator[MailStack]:
    """A stack with `make up`'s refusal behaviour: Dovecot's auth_failure_delay and penalty, Postfix's
    error sleep (all other settings as a disposable stack's)."""
    with MailStack(fast_refusals=False) as stack:
        yield stack


def submit_each_on_a_new_connection(stack: MailStack, user: User, count: int, token: str) -> Counter[str]:
    """count messages through 587, one connection (STARTTLS + AUTH) per message; the replies counted."""

    def one(number: int) -> str:
        try:
            with smtplib.SMTP(stack.endpoints.submission.host, stack.endpoints.submission.port,
                              local_hostname="client.test", timeout=60) as smtp:
                smtp.starttls(context=stack.ssl_context())
                smtp.login(user.address, user.password)
                message = (f"From: <{user.address}>\r\nTo: <{user.address}>\r\nSubject: {token} {number}\r\n"
                           f"Message-ID: <{token}.{number}@mailstack.test>\r\n\r\nmessage {number}\r\n")
                refused = smtp.sendmail(user.address, [user.address], message)  # raises unless 250
                return "250" if not refused else f"refused {refused}"
        except smtplib.SMTPResponseException as exc:
            return f"{exc.smtp_code} {exc.smtp_error.decode(errors='replace')[:60]}"
        except (OSError, smtplib.SMTPException) as exc:
            return f"dropped {exc!r}"[:80]

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        return Counter(pool.map(one, range(count)))


def delivered(stack: MailStack, user: User, token: str, expected: int) -> int:
    """How many of the token's messages are in the INBOX, once all are there (or the wait ran out)."""
    with stack.imap(user) as client:
        client.select_folder("INBOX", readonly=True)
        deadline = time.monotonic() + 30
        while True:
            found = client.search(["SUBJECT", token])
            if len(found) >= expected or time.monotonic() > deadline:
                return len(found)
            time.sleep(0.1)  # poll interval, bounded by the deadline
            client.noop()


@pytest.mark.parametrize("which", ["disposable", "make-up refusals"])
def test_600_authenticated_submissions_from_the_host_all_accepted(
        which: str, mailstack: MailStack, production_refusals: MailStack) -> None:
    stack = mailstack if which == "disposable" else production_refusals
    user = stack.add_user()
    token = uuid.uuid4().hex[:12]
    replies = submit_each_on_a_new_connection(stack, user, SUBMISSIONS, token)
    assert replies == Counter({"250": SUBMISSIONS}), replies.most_common(5)
    assert delivered(stack, user, token, SUBMISSIONS) == SUBMISSIONS
    # anvil still limits clients that have an address of their own: only the gateway is exempt
    exempt = stack.stack.exec("postfix", ["postconf", "-h", "smtpd_client_event_limit_exceptions"]).stdout.decode()
    assert exempt.split() == ["$mynetworks", gateway(stack)]
    assert stack.stack.exec("postfix", ["postconf", "-h", "smtpd_client_auth_rate_limit"]).stdout.strip() == b"30"


def gateway(stack: MailStack) -> str:
    """The stack network's gateway, as Docker created it: where host clients' connections come from."""
    network = f"{stack.settings.project}_default"
    found = subprocess.run(["docker", "network", "inspect", "--format", "{{(index .IPAM.Config 0).Gateway}}",
                            network], capture_output=True, text=True, check=True)
    return found.stdout.strip()


def smtp_wrong_password(stack: MailStack, user: User) -> int:
    with smtplib.SMTP(stack.endpoints.submission.host, stack.endpoints.submission.port,
                      local_hostname="client.test", timeout=60) as smtp:
        smtp.starttls(context=stack.ssl_context())
        try:
            smtp.login(user.address, "not-the-password")
        except smtplib.SMTPAuthenticationError as exc:
            return exc.smtp_code
    return 235


def imap_wrong_password(stack: MailStack, user: User) -> str:
    endpoint = stack.endpoints.imaps
    client = imaplib.IMAP4_SSL(endpoint.host, endpoint.port, ssl_context=stack.ssl_context(), timeout=60)
    try:
        client.login(user.address, "not-the-password")
    except imaplib.IMAP4.error as exc:
        return str(exc)
    finally:
        with contextlib.suppress(Exception):
            client.shutdown()
    return "ACCEPTED"


def penalties(stack: MailStack) -> dict[str, int]:
    """Dovecot's auth penalty per client address (doveadm penalty: IP, penalty, last_penalty, last_update)."""
    rows = stack.stack.exec("dovecot", ["doveadm", "penalty"]).stdout.decode().splitlines()[1:]
    return {row.split()[0]: int(row.split()[1]) for row in rows if row.strip()}


def test_refusals_still_refuse_and_disposable_stacks_keep_no_penalty(mailstack: MailStack) -> None:
    user = mailstack.add_user()
    assert smtp_wrong_password(mailstack, user) == 535
    assert "AUTHENTICATIONFAILED" in imap_wrong_password(mailstack, user)
    assert penalties(mailstack) == {}  # auth_failure_delay = 0: no failure is delayed, none is penalised
    settings = mailstack.stack.exec("dovecot", ["doveconf", "-h", "auth_failure_delay"]).stdout.strip()
    assert settings == b"0"


def test_make_up_refusals_are_slowed_by_the_penalty(production_refusals: MailStack) -> None:
    stack = production_refusals
    user = stack.add_user()
    assert smtp_wrong_password(stack, user) == 535
    assert "AUTHENTICATIONFAILED" in imap_wrong_password(stack, user)
    found = penalties(stack)
    assert found.get(gateway(stack), 0) >= 1, found  # the host's address is penalised: brute force slowed
    assert stack.stack.exec("dovecot", ["doveconf", "-h", "auth_failure_delay"]).stdout.strip() == b"2 secs"
    # a right password still logs in (the penalty delays it, and a success resets it)
    with stack.imap(user):
        pass
    assert penalties(stack).get(gateway(stack), 0) == 0, json.dumps(penalties(stack))
