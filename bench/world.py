"""The outside world's cost (issue 13), world on vs off side by side in one run: a fresh disposable stack's
time to ready, the whole stack's idle RAM (per container), CPU per message and end-to-end throughput
(bench/mail.py's smtp-source run, with smtp-sink as the machine's yardstick), and with the world on the
same for submitted mail leaving through rspamd (signed) to the outside MX. Prints figures; asserts nothing.
Usage: python bench/world.py [--starts 3] [--messages 2000] [--sessions 20] [--idle-seconds 20]
"""

from __future__ import annotations

import argparse
import subprocess
import time

from fixtures import containers_mib, load, ready_side_by_side  # bench/fixtures.py, beside this script
from mail import throughput  # bench/mail.py
from mailstack.api import MailStack

AIMS = "aims: fresh disposable stack ready <= 4 s with the world on; whole-stack idle RAM <= 150 MiB with rspamd + DNS"


def per_container_mib(stack: MailStack) -> dict[str, float]:
    names = {c.id: c.config.labels["com.docker.compose.service"] for c in stack.stack.containers()}
    out = subprocess.run(["docker", "stats", "--no-stream", "--format", "{{.ID}} {{.MemUsage}}", *names],
                         capture_output=True, text=True, check=True).stdout
    units = {"KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0}
    found: dict[str, float] = {}
    for line in out.splitlines():
        short, usage = line.split(" ", 1)
        used = usage.split("/")[0].strip()
        unit = next(u for u in units if used.endswith(u))
        service = next(s for cid, s in names.items() if cid.startswith(short))
        found[service] = float(used[: -len(unit)]) * units[unit]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--starts", type=int, default=3, help="fresh stacks started per variant (interleaved)")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--idle-seconds", type=float, default=20.0, help="settling time before RAM is read")
    args = parser.parse_args()
    print(f"load average before: {load()}")
    ready_side_by_side({"world off": {"world": False}, "world on": {"world": True}}, args.starts)

    with MailStack(world=False, fast_retry=False) as off, MailStack(world=True, fast_retry=False) as on:
        stacks = {"world off": off, "world on": on}
        time.sleep(args.idle_seconds)  # settle: idle RAM after the start's work is done, not a synchronisation
        for name, stack in stacks.items():
            parts = per_container_mib(stack)
            detail = ", ".join(f"{service} {value:.1f}" for service, value in sorted(parts.items()))
            print(f"{name}: idle RAM {containers_mib(stack):.1f} MiB ({detail})")
        for name, stack in stacks.items():
            run = throughput(stack, args.messages, args.sessions)
            ratio = run["delivered msg/s (end to end)"] / run["smtp-sink msg/s"]
            cpu = {k.removeprefix("CPU ms per message, "): v for k, v in run.items() if k.startswith("CPU ms per")}
            print(f"{name}: inbound on 25, {args.messages} x 1 KB: delivered {run['delivered msg/s (end to end)']:.0f} "
                  f"msg/s, smtp-sink {run['smtp-sink msg/s']:.0f} msg/s (ratio {ratio:.3f}); CPU ms per message: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in sorted(cpu.items())))
        for name, stack in stacks.items():
            outbound_submissions(name, stack, min(args.messages, 300))
    print(f"load average after: {load()}")
    print(AIMS)


def outbound_submissions(name: str, stack: MailStack, count: int) -> None:
    """Submitted mail (587, one session) to an outside domain: accepted per second (with the world: scanned
    and DKIM-signed by rspamd first), and with the world, per second until the outside MX stored them all
    (delivered by Postfix over verified TLS). Without one it waits in the queue: only acceptance counts."""
    import smtplib  # noqa: PLC0415

    user = stack.add_user()
    world = stack.settings.world
    if world:
        stack.clear_outbound()
    endpoint = stack.endpoints.submission
    started = time.perf_counter()
    with smtplib.SMTP(endpoint.host, endpoint.port, local_hostname="bench.test") as smtp:
        smtp.starttls(context=stack.ssl_context())
        smtp.login(user.address, user.password)
        for number in range(count):
            smtp.sendmail(user.address, [f"r{number % 10}@example.com"],
                          f"From: {user.address}\r\nTo: r@example.com\r\nSubject: out {number}\r\n\r\n" + "x" * 1000)
    submitted = time.perf_counter() - started
    line = (f"{name}: {count} submissions via 587 (one session) to an outside domain: "
            f"accepted {count / submitted:.0f} msg/s")
    if world:
        deadline = time.monotonic() + 120
        while len(stack.outbound_messages()) < count and time.monotonic() < deadline:
            time.sleep(0.2)  # poll interval, bounded by the deadline
        elapsed = time.perf_counter() - started
        line += f", at the outside MX (signed, TLS) {len(stack.outbound_messages()) / elapsed:.0f} msg/s"
    print(line)


if __name__ == "__main__":
    main()
