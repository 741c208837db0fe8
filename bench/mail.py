"""Mail figures for issue 3: delivery latency (587 -> visible over IMAP) and end-to-end throughput.

Latency: N messages through 587 (STARTTLS + AUTH, one session), each timed from the 250 after DATA to
the IMAP IDLE notification of its arrival; p50/p95.
Throughput: Postfix's smtp-source (inside the Postfix container) sends M messages of 1 KB over S
sessions to port 25; delivered = files in the maildir; next to smtp-sink (accept and discard) as the
upper bound. Prints figures; asserts nothing. Uses its own disposable stacks: by default two, one with
Postfix's queue on its volume (every stack's default) and one with it on tmpfs (queue_in_memory).
A third stack, disk-no-features, has quotas and Sieve off (mailbox_features=False): what they cost; a
fourth, disk-quotas, gives every receiving mailbox a (roomy) quota, so that Postfix asks Dovecot's
quota-status at each RCPT (it asks only for mailboxes with a limit).
Usage: python bench/mail.py [--latency-messages 100] [--messages 3000] [--sessions 20] [--mailboxes 4]
                            [--runs 3] [--queue all | disk memory disk-no-features disk-quotas]
"""

from __future__ import annotations

import argparse
import contextlib
import email.message
import os
import smtplib
import statistics
import subprocess
import threading
import time
from pathlib import Path

from mailstack.api import MailStack

REFERENCE = "naive prototype (issue 3): p50 10-11 ms; 118-136 msg/s end to end; smtp-sink 2,700-2,900 msg/s"


def latency(stack: MailStack, count: int) -> list[float]:
    sender, receiver = stack.add_user(), stack.add_user()
    imap = stack.imap(receiver)
    imap.select_folder("INBOX", readonly=True)
    endpoint = stack.endpoints.submission
    smtp = smtplib.SMTP(endpoint.host, endpoint.port, local_hostname="bench.test")
    smtp.starttls(context=stack.ssl_context())
    smtp.login(sender.address, sender.password)
    samples = []
    try:
        for number in range(count):
            message = email.message.EmailMessage()
            message["From"], message["To"], message["Subject"] = sender.address, receiver.address, f"lat {number}"
            message.set_content("x" * 512)
            smtp.send_message(message)
            accepted = time.perf_counter()
            # Poll with NOOP (not IDLE: Dovecot delays IDLE notifications by 0.5 s to coalesce changes).
            while not any(len(r) > 1 and r[1] == b"EXISTS" and r[0] > number for r in imap.noop()[1]):
                if time.perf_counter() - accepted > 10:
                    raise RuntimeError(f"message {number} did not arrive within 10 s")
                time.sleep(0.0005)  # poll interval: a busy NOOP loop would take CPU from the delivery it times
            samples.append(time.perf_counter() - accepted)
    finally:
        smtp.quit()
        imap.logout()
    return samples


def docker_exec(container: str, *argv: str) -> str:
    return subprocess.run(["docker", "exec", container, *argv], capture_output=True, text=True, check=True).stdout


def _maildirs(addresses: list[str]) -> str:
    return " ".join("/var/mail/vmail/{1}/{0}/Maildir/new".format(*a.split("@")) for a in addresses)


# bash only (globs and builtins, no process per poll): the waiter must not take CPU from the delivery.
_COUNT = "shopt -s nullglob; n=0; for d in {dirs}; do f=($d/*); n=$((n + ${{#f[@]}})); done; "


def start_delivery_waiter(container: str, addresses: list[str], total: int, timeout: float = 300) -> subprocess.Popen:
    """One `docker exec` that polls the maildirs inside the container and prints "<count> <epoch seconds>"
    once `total` messages are there (or at the timeout). Polling from the host would cost a `docker exec`
    per poll, CPU the system under test would otherwise get; and a count lists every file (~2.5 ms for
    3000), so the pause is what is still missing at 1000 msg/s (faster than this stack delivers), between
    50 ms (the resolution at the end) and 1 s."""
    count = _COUNT.format(dirs=_maildirs(addresses))
    # read -t on a fifo nobody writes to: a pause without starting a process
    script = (
        f"fifo=$(mktemp -u); mkfifo $fifo; exec 9<>$fifo; rm $fifo; end=$((SECONDS + {int(timeout)})); "
        f"while :; do {count} ((n >= {total} || SECONDS > end)) && break; "
        f"ms=$(( {total} - n )); ms=$(( ms < 50 ? 50 : ms > 1000 ? 1000 : ms )); "
        "printf -v frac %03d $((ms % 1000)); read -t $((ms / 1000)).$frac -u 9; done; "
        "echo $n $EPOCHREALTIME"
    )
    return subprocess.Popen(["docker", "exec", container, "bash", "-c", script], stdout=subprocess.PIPE, text=True)


def cpu_sample(names: dict[str, str], stop: threading.Event, peaks: dict[str, float]) -> None:
    """Peak CPU % per container over 1 s windows, from cgroup accounting (file reads: `docker stats`
    costs the engine CPU the system under test would otherwise get); `docker stats` where unreadable."""
    ids = {service: container_id for container_id, service in names.items()}
    last = {service: container_cpu_seconds(cid) for service, cid in ids.items()}
    if any(value is None for value in last.values()):
        _docker_stats_sample(names, stop, peaks)
        return
    then = time.monotonic()
    while not stop.wait(1.0):
        now = time.monotonic()
        for service, cid in ids.items():
            used = container_cpu_seconds(cid) or 0.0
            peaks[service] = max(peaks.get(service, 0.0), (used - (last[service] or 0.0)) * 100 / (now - then))
            last[service] = used
        then = now


def _docker_stats_sample(names: dict[str, str], stop: threading.Event, peaks: dict[str, float]) -> None:
    while not stop.is_set():
        out = subprocess.run(["docker", "stats", "--no-stream", "--format", "{{.ID}} {{.CPUPerc}}", *names],
                             capture_output=True, text=True).stdout
        for line in out.splitlines():
            short_id, percent = line.rsplit(" ", 1)
            service = next((s for cid, s in names.items() if cid.startswith(short_id)), short_id)
            peaks[service] = max(peaks.get(service, 0.0), float(percent.rstrip("%") or 0))
        stop.wait(1.0)  # docker stats is not free either: sample once a second


def machine_busy_seconds() -> float:
    """CPU time all cores spent not idle since boot (/proc/stat; steal time counts as busy)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle, iowait = fields[3], fields[4]
    return (sum(fields[:8]) - idle - iowait) / os.sysconf("SC_CLK_TCK")


def container_cpu_seconds(container_id: str) -> float | None:
    """CPU time a container has used so far (cgroup v1 cpuacct or v2 cpu.stat); None where unreadable."""
    candidates = [
        (Path(f"/sys/fs/cgroup/cpuacct/docker/{container_id}/cpuacct.usage"), 1e9, None),
        (Path(f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/cpu.stat"), 1e6, "usage_usec"),
    ]
    for path, scale, key in candidates:
        try:
            text = path.read_text()
        except OSError:
            continue
        if key is None:
            return int(text) / scale
        return next(int(line.split()[1]) for line in text.splitlines() if line.startswith(key)) / scale
    return None


def throughput(stack: MailStack, messages: int, sessions: int, mailboxes: int = 4,
               quota: str | None = None) -> dict[str, float]:
    receivers = [stack.add_user(quota=quota) for _ in range(mailboxes)]
    postfix = stack.stack.container("postfix").name
    names = {c.id: c.config.labels["com.docker.compose.service"] for c in stack.stack.containers()}
    results: dict[str, float] = {}

    # upper bound: smtp-sink accepts and discards (both inside the Postfix container)
    script = (
        "smtp-sink -u postfix 127.0.0.1:2525 5000 & sink=$!; "
        "until grep -q ':09DD 00000000:0000 0A' /proc/net/tcp; do kill -0 $sink || exit 1; done; "  # listening?
        "start=${EPOCHREALTIME/./}; "
        f"smtp-source -l 1024 -m {messages} -s {sessions} -f bench@outside.test -t {receivers[0].address} "
        "127.0.0.1:2525; end=${EPOCHREALTIME/./}; kill $sink; echo $(( end - start ))"
    )
    micros = int(docker_exec(postfix, "bash", "-c", script).split()[-1])
    results["smtp-sink msg/s"] = messages / (micros / 1e6)

    # end to end: smtp-source -> smtpd -> cleanup -> qmgr -> lmtp -> Dovecot -> maildir
    per_receiver = messages // len(receivers)
    ids = {service: container_id for container_id, service in names.items()}
    cpu_before = {service: container_cpu_seconds(cid) for service, cid in ids.items()}
    machine_before = machine_busy_seconds()
    stop, peaks = threading.Event(), {}
    sampler = threading.Thread(target=cpu_sample, args=(names, stop, peaks), daemon=True)
    sampler.start()
    total = per_receiver * len(receivers)
    addresses = [r.address for r in receivers]
    # it counts what is in the maildirs whenever it looks: starting a little late changes nothing
    waiter = start_delivery_waiter(stack.stack.container("dovecot").name, addresses, total)
    started_epoch, started = time.time(), time.perf_counter()
    procs = [
        subprocess.Popen(["docker", "exec", postfix, "smtp-source", "-l", "1024", "-m", str(per_receiver),
                          "-s", str(max(1, sessions // len(receivers))), "-f", "bench@outside.test",
                          "-t", receiver.address, "127.0.0.1:25"], stdout=subprocess.DEVNULL)
        for receiver in receivers
    ]
    for proc in procs:
        proc.wait()
    accepted = time.perf_counter() - started
    out, _ = waiter.communicate()
    delivered_text, done_epoch = out.split()
    elapsed = float(done_epoch) - started_epoch
    stop.set()
    delivered = int(delivered_text)
    results["accepted msg/s (smtpd 250)"] = total / accepted
    results["delivered msg/s (end to end)"] = delivered / elapsed
    results["delivered"] = delivered
    if delivered:
        # everything this machine did meanwhile: containers, engine, the load generator, this script
        results["CPU ms per message, whole machine"] = (machine_busy_seconds() - machine_before) * 1000 / delivered
        results["cores"] = os.cpu_count() or 0
    results["sent"] = total
    for service, peak in sorted(peaks.items()):
        results[f"peak CPU {service} %"] = peak
    for service, cid in sorted(ids.items()):
        after, before = container_cpu_seconds(cid), cpu_before[service]
        if after is not None and before is not None and delivered:
            # CPU milliseconds per delivered message (postfix includes smtp-source, which runs in it)
            results[f"CPU ms per message, {service}"] = (after - before) * 1000 / delivered
    return results


QUEUES = {"disk": {}, "memory": {"queue_in_memory": True},
          # the disk queue without quotas and Sieve: what the mailbox features cost
          "disk-no-features": {"mailbox_features": False},
          # the disk queue, every receiver with a quota: quota-status asked at each RCPT
          "disk-quotas": {}}
RECEIVER_QUOTA = {"disk-quotas": "10G"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency-messages", type=int, default=100)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--mailboxes", type=int, default=4,
                        help="receivers the messages are spread over (one smtp-source each, with "
                             "sessions // mailboxes sessions, at least 1)")
    parser.add_argument("--runs", type=int, default=3,
                        help="throughput runs (fresh mailboxes each); a shared machine varies by +-20 %% between runs")
    parser.add_argument("--queue", choices=[*QUEUES, "all"], default=["all"], nargs="+",
                        help="Postfix's queue on its volume (disk, the default of every stack), on tmpfs "
                             "(memory: queue_in_memory), the disk queue without quotas and Sieve "
                             "(disk-no-features), with a quota on every receiver (disk-quotas), or all "
                             "side by side, runs interleaved")
    args = parser.parse_args()
    queues = list(QUEUES) if "all" in args.queue else list(dict.fromkeys(args.queue))
    with contextlib.ExitStack() as stacks:
        started = {queue: stacks.enter_context(MailStack(fast_retry=False, **QUEUES[queue])) for queue in queues}
        samples = latency(started[queues[0]], args.latency_messages)
        ms = sorted(s * 1000 for s in samples)
        p95 = ms[max(0, int(round(0.95 * len(ms))) - 1)]
        print(f"latency 587 -> IMAP over {len(ms)} messages ({queues[0]} queue): p50 {statistics.median(ms):.1f} ms, "
              f"p95 {p95:.1f} ms, max {ms[-1]:.1f} ms")
        runs: dict[str, list[dict[str, float]]] = {queue: [] for queue in queues}
        for number in range(1, args.runs + 1):
            for queue, stack in started.items():  # interleaved: the machine's mood affects all alike
                run = throughput(stack, args.messages, args.sessions, args.mailboxes, RECEIVER_QUOTA.get(queue))
                runs[queue].append(run)
                ratio = run["delivered msg/s (end to end)"] / run["smtp-sink msg/s"]
                print(f"run {number}, {queue} queue: delivered {run['delivered msg/s (end to end)']:.0f} msg/s, "
                      f"smtp-sink {run['smtp-sink msg/s']:.0f} msg/s (ratio {ratio:.3f}), "
                      f"{run.get('CPU ms per message, whole machine', 0):.2f} ms CPU per message", flush=True)
    for queue, results in runs.items():
        print(f"{queue} queue, median of {len(results)} runs ({args.messages} x 1 KB, {args.sessions} sessions, "
              f"{args.mailboxes} mailboxes):")
        for label in results[0]:
            values = sorted(run[label] for run in results if label in run)
            digits = 2 if "per message" in label else 0
            spread = f" ({values[0]:.{digits}f}-{values[-1]:.{digits}f})" if len(values) > 1 else ""
            print(f"  {label}: {statistics.median(values):.{digits}f}{spread}")
    print(REFERENCE)


if __name__ == "__main__":
    main()
