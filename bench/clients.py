"""Figures for "one host is many clients": refused logins and authenticated submissions from the host.

Two stacks side by side in one run: a disposable one (fast refusals) and one with `make up`'s refusal
behaviour (Dovecot's 2 s failure delay and per-address penalty). For each:
- a refused login: smtplib's login() with a wrong password on 587 (it tries PLAIN, then LOGIN: two
  refusals), and an IMAP LOGIN on 993; median of --refusals runs, each on a new connection;
- --submissions authenticated submissions through 587, one connection each, from --threads threads:
  how many were answered 250, and the rate.
Prints a table; asserts nothing.
Usage: python bench/clients.py [--refusals N] [--submissions N] [--threads N]
"""

from __future__ import annotations

import argparse
import imaplib
import smtplib
import statistics
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from mailstack.api import MailStack, User


def refused_smtp_login(stack: MailStack, user: User) -> float:
    endpoint = stack.endpoints.submission
    with smtplib.SMTP(endpoint.host, endpoint.port, local_hostname="client.test", timeout=60) as smtp:
        smtp.starttls(context=stack.ssl_context())
        started = time.perf_counter()
        try:
            smtp.login(user.address, "not-the-password")
        except smtplib.SMTPAuthenticationError:
            return time.perf_counter() - started
    raise RuntimeError("a wrong password was accepted")


def refused_imap_login(stack: MailStack, user: User) -> float:
    endpoint = stack.endpoints.imaps
    client = imaplib.IMAP4_SSL(endpoint.host, endpoint.port, ssl_context=stack.ssl_context(), timeout=60)
    started = time.perf_counter()
    try:
        client.login(user.address, "not-the-password")
    except imaplib.IMAP4.error:
        return time.perf_counter() - started
    finally:
        client.shutdown()
    raise RuntimeError("a wrong password was accepted")


def submissions(stack: MailStack, user: User, count: int, threads: int) -> tuple[Counter[str], float]:
    token = uuid.uuid4().hex[:10]
    endpoint = stack.endpoints.submission

    def one(number: int) -> str:
        try:
            with smtplib.SMTP(endpoint.host, endpoint.port, local_hostname="client.test", timeout=60) as smtp:
                smtp.starttls(context=stack.ssl_context())
                smtp.login(user.address, user.password)
                smtp.sendmail(user.address, [user.address],
                              f"Subject: {token} {number}\r\nMessage-ID: <{token}.{number}@bench.test>\r\n\r\nx\r\n")
                return "250"
        except smtplib.SMTPResponseException as exc:
            return str(exc.smtp_code)
        except (OSError, smtplib.SMTPException) as exc:
            return type(exc).__name__

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        replies = Counter(pool.map(one, range(count)))
    return replies, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--refusals", type=int, default=5, help="refused logins to time per protocol")
    parser.add_argument("--submissions", type=int, default=600)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    stacks = {"disposable (fast refusals)": MailStack(), "make up's refusals": MailStack(fast_refusals=False)}
    rows: list[tuple[str, str, str]] = []
    try:
        for stack in stacks.values():
            stack.start()
        for name, stack in stacks.items():
            user = stack.add_user()
            smtp = [refused_smtp_login(stack, user) for _ in range(args.refusals)]
            imap = [refused_imap_login(stack, user) for _ in range(args.refusals)]
            with stack.imap(user):  # a success resets the penalty before the submissions
                pass
            replies, took = submissions(stack, user, args.submissions, args.threads)
            rows.append((name, "refused login 587 (smtplib: PLAIN + LOGIN)",
                         f"median {statistics.median(smtp):.2f} s (first {smtp[0]:.2f}, max {max(smtp):.2f})"))
            rows.append((name, "refused IMAP LOGIN 993",
                         f"median {statistics.median(imap):.2f} s (first {imap[0]:.2f}, max {max(imap):.2f})"))
            rows.append((name, f"{args.submissions} submissions, 1 connection each, {args.threads} threads",
                         f"{dict(replies)} in {took:.1f} s ({args.submissions / took:.0f}/s)"))
    finally:
        for stack in stacks.values():
            stack.stop()
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for stack_name, figure, value in rows:
        print(f"{stack_name:<{widths[0]}}  {figure:<{widths[1]}}  {value}")


if __name__ == "__main__":
    main()
