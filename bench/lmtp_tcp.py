"""LMTP, SASL auth and quota-status over TCP (issue 16) against the unix sockets, side by side: bench/mail.py's
end-to-end run (smtp-source on 25 -> smtpd -> LMTP -> Dovecot -> maildirs) on fresh disposable stacks, the two
variants interleaved so that both see the same machine; CPU per delivered message for the whole machine and each
container (the figures docs/scaling.md turns into a sizing table). Prints figures; asserts nothing.
Usage: python bench/lmtp_tcp.py [--runs 3] [--messages 2000] [--sessions 20] [--quota]
"""

from __future__ import annotations

import argparse
import statistics

from mail import throughput  # bench/mail.py, beside this script
from mailstack.api import MailStack

KEYS = ("delivered msg/s (end to end)", "CPU ms per message, whole machine", "CPU ms per message, postfix",
        "CPU ms per message, dovecot", "CPU ms per message, mysql")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="runs per variant (interleaved, a fresh stack each)")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--quota", action="store_true",
                        help="receivers with a quota: Postfix asks quota-status at every RCPT")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"unix sockets": [], "tcp": []}
    for run in range(args.runs):
        for label, tcp in (("unix sockets", False), ("tcp", True)):
            with MailStack(lmtp_auth_tcp=tcp) as stack:
                found = throughput(stack, args.messages, args.sessions, quota="1G" if args.quota else None)
            results[label].append(found)
            print(f"run {run + 1} {label}: " + ", ".join(f"{k} {found.get(k, 0):.2f}" for k in KEYS), flush=True)
    print(f"medians of {args.runs} runs ({args.messages} messages of 1 KiB, {args.sessions} sessions"
          f"{', receivers with a quota' if args.quota else ''}):")
    for label, runs in results.items():
        print(f"  {label}: " + ", ".join(f"{k} {statistics.median(r.get(k, 0) for r in runs):.2f}" for k in KEYS))


if __name__ == "__main__":
    main()
