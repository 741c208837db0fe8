"""Mail figures for issues 3 and 17: delivery latency (587 -> visible over IMAP), end-to-end throughput
against the machine (smtp-sink in the same run), and what one message costs, part by part.

Latency: N messages through 587 (STARTTLS + AUTH, one session), each timed from the 250 after DATA to
the IMAP IDLE notification of its arrival; p50/p95.
Throughput: Postfix's smtp-source (inside the Postfix container) sends M messages of 1 KB over S
sessions to port 25; delivered = files in the maildir; next to smtp-sink (accept and discard) as the
machine's yardstick: this machine's speed moves by 2-3x from day to day, so every figure is read as a
ratio to smtp-sink measured in the same run (before and after each stack's part of a run: their mean).
Decomposition (issue 17, --no-decompose to skip), in each run on each stack, the same load:
- Postfix alone: smtpd -> cleanup -> qmgr into the discard transport (virtual_transport switched to
  discard: in the running container for that part, then back), on that stack's queue (disk or memory);
- Dovecot alone: smtp-source -L straight to Dovecot's LMTP socket (each session keeps its connection, as
  Postfix's LMTP client does under load), with the stack's mail_fsync;
- MariaDB: queries and new connections per message (its global counters) and mysqld's CPU per message.
The floor is the parts' CPU per message added, counted in the stack's containers (cgroup accounting):
Postfix alone's (smtp-source included, as end to end) + Dovecot's and MariaDB's in Dovecot alone (its
load generator left out: end to end, Postfix's LMTP client is a joint). CPU, not the parts' times per
message added (1 / (1/postfix alone + 1/dovecot alone), printed too): that sum is a floor only while each
part alone keeps both cores busy; on a shared machine it does not, end to end overlaps the parts and
beats that "floor" (measured: up to 1.27x at load 10-18; 0.87-0.91 of it at load 2). CPU per message
does not depend on how many cores the stack gets. As a rate, the floor is what end to end would deliver
with the CPU it got if its messages cost only the floor. MariaDB's lookups happen inside both parts, so
they are counted there, not added. End to end minus the floor is the joints: Postfix's LMTP client and
connection cache, qmgr's scheduling of real deliveries, their logging.
Uses its own disposable stacks: by default four, one with Postfix's queue on its volume (every stack's
default), one with it on tmpfs (queue_in_memory), disk-no-features with quotas and Sieve off
(mailbox_features=False: what they cost), disk-quotas with a (roomy) quota on every receiving mailbox, so
that Postfix asks Dovecot's quota-status at each RCPT (it asks only for mailboxes with a limit).
Prints figures; asserts nothing.
Usage: python bench/mail.py [--latency-messages 100] [--messages 3000] [--sessions 20] [--mailboxes 4]
                            [--runs 3] [--queue all | disk memory disk-no-features disk-quotas]
                            [--no-decompose]
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
from collections.abc import Iterator
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


LMTP_SOCKET = "unix:/var/spool/postfix/private/dovecot-lmtp"  # Dovecot's, as Postfix's container sees it


def engine_cpu_seconds(container_ids: list[str]) -> float:
    """CPU time of Docker's engine (dockerd, containerd) and of these containers' shims, with the children
    they reaped (runc, once per `docker exec`): the container hops and the log path, outside the containers'
    cgroups. dockerd and containerd also serve every other stack on the machine."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            comm = text[text.index("(") + 1:text.rindex(")")]
            if comm.startswith("containerd-shim"):
                argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
                if not any(arg.decode(errors="replace") in container_ids for arg in argv):
                    continue
            elif comm not in ("dockerd", "containerd"):
                continue
        except (OSError, ValueError):
            continue  # ended meanwhile
        fields = text[text.rindex(")") + 2:].split()
        total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")


MARIADB_COUNTERS = ("Com_select", "Questions", "Connections")


def mariadb_counters(stack: MailStack) -> dict[str, int]:
    """MariaDB's global counters (one connection of ours: +1 connection, +1 question per call)."""
    connection = stack.database.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW GLOBAL STATUS WHERE Variable_name IN (%s, %s, %s)", MARIADB_COUNTERS)
            return {name: int(value) for name, value in cursor.fetchall()}
    finally:
        connection.close()


def _cgroup_pids(container_id: str) -> list[str]:
    for path in (Path(f"/sys/fs/cgroup/cpuacct/docker/{container_id}/cgroup.procs"),
                 Path(f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/cgroup.procs")):
        with contextlib.suppress(OSError):
            return path.read_text().split()
    return []


def _process_cpu(pid: str) -> tuple[str, float] | None:
    """(command name, CPU seconds of the process itself, without the children it reaped)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None  # ended meanwhile
    fields = text[text.rindex(")") + 2:].split()
    return text[text.index("(") + 1:text.rindex(")")], (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ProcessSampler(threading.Thread):
    """CPU per command name in each container (smtpd, cleanup, qmgr, lmtp, auth, mysqld…), from /proc every
    `interval` s (host reads, no docker exec): a process that ends between two looks loses what it used
    since the last one (Postfix's daemons end after 100 uses: short-lived ones count a little low)."""

    def __init__(self, ids: dict[str, str], interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.ids, self.interval = ids, interval
        self.first: dict[str, float] = {}
        self.last: dict[str, tuple[str, str, float]] = {}
        self._look(first=True)
        self.halt = threading.Event()
        self.start()

    def _look(self, first: bool = False) -> None:
        for service, cid in self.ids.items():
            for pid in _cgroup_pids(cid):
                seen = _process_cpu(pid)
                if seen is not None:
                    if first:
                        self.first[pid] = seen[1]
                    self.last[pid] = (service, seen[0], seen[1])

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            self._look()

    def stop(self) -> dict[str, dict[str, float]]:
        self.halt.set()
        self.join()
        self._look()
        used: dict[str, dict[str, float]] = {}
        for pid, (service, name, seconds) in self.last.items():
            per_name = used.setdefault(service, {})
            per_name[name] = per_name.get(name, 0.0) + seconds - self.first.get(pid, 0.0)
        return used


class Meter:
    """What one load costs, from before it starts to after it ends: CPU per container (cgroup accounting),
    the stack's containers together, Docker's engine, the whole machine; per process name (sampled);
    MariaDB's queries."""

    def __init__(self, stack: MailStack) -> None:
        self.stack = stack
        self.ids = {c.config.labels["com.docker.compose.service"]: c.id for c in stack.stack.containers()}
        self.before = self._now()
        self.processes = ProcessSampler(self.ids)

    def _now(self) -> dict[str, float | None]:
        values: dict[str, float | None] = {service: container_cpu_seconds(cid) for service, cid in self.ids.items()}
        values["engine"] = engine_cpu_seconds(list(self.ids.values()))
        values["whole machine"] = machine_busy_seconds()
        values.update({f"db {name}": float(count) for name, count in mariadb_counters(self.stack).items()})
        return values

    def per_message(self, messages: int, elapsed: float) -> dict[str, float]:
        by_process = self.processes.stop()
        after = self._now()
        diff = {key: after[key] - before for key, before in self.before.items()
                if before is not None and after[key] is not None}
        results: dict[str, float] = {}
        if not messages:
            return results
        containers = [service for service in self.ids if service in diff]
        for service in sorted(containers):
            # postfix includes smtp-source, which runs in its container (docker exec joins its cgroup)
            results[f"CPU ms per message, {service}"] = diff[service] * 1000 / messages
        results["CPU ms per message, stack"] = sum(diff[service] for service in containers) * 1000 / messages
        results["CPU ms per message, engine"] = diff["engine"] * 1000 / messages
        # everything this machine did meanwhile: containers, engine, the load generator, this script, and
        # whatever else runs on a shared machine
        results["CPU ms per message, whole machine"] = diff["whole machine"] * 1000 / messages
        results["stack cores busy"] = sum(diff[service] for service in containers) / elapsed
        results["cores"] = os.cpu_count() or 0
        for name in MARIADB_COUNTERS:
            results[f"MariaDB {name} per message"] = diff[f"db {name}"] / messages
        for service, names in sorted(by_process.items()):
            for name, seconds in sorted(names.items()):
                if seconds > 0:
                    results[f"process CPU ms per message, {service} {name}"] = seconds * 1000 / messages
        return results


def smtp_sink(stack: MailStack, receiver: str, messages: int, sessions: int) -> tuple[float, float]:
    """msg/s into smtp-sink (accept and discard), both inside the Postfix container: the machine's yardstick;
    and the CPU ms per message that took (the Postfix container's: smtp-source and smtp-sink)."""
    container = stack.stack.container("postfix")
    script = (
        "smtp-sink -u postfix 127.0.0.1:2525 5000 & sink=$!; "
        "until grep -q ':09DD 00000000:0000 0A' /proc/net/tcp; do kill -0 $sink || exit 1; done; "  # listening?
        "start=${EPOCHREALTIME/./}; "
        f"smtp-source -l 1024 -m {messages} -s {sessions} -f bench@outside.test -t {receiver} "
        "127.0.0.1:2525; end=${EPOCHREALTIME/./}; kill $sink; echo $(( end - start ))"
    )
    before = container_cpu_seconds(container.id)
    micros = int(docker_exec(container.name, "bash", "-c", script).split()[-1])
    after = container_cpu_seconds(container.id)
    cpu = (after - before) * 1000 / messages if after is not None and before is not None else float("nan")
    return messages / (micros / 1e6), cpu


def start_sources(postfix: str, receivers: list[str], per_receiver: int, sessions: int,
                  target: str = "127.0.0.1:25", lmtp: bool = False) -> list[subprocess.Popen]:
    """One smtp-source per receiver, sessions // receivers sessions each (at least 1), in the Postfix
    container. Over LMTP each session keeps its connection (-d), as Postfix's LMTP client does under load
    (its connection cache: ~20 LMTP connections for 3000 messages end to end)."""
    flags = ["-L", "-d"] if lmtp else []
    return [
        subprocess.Popen(["docker", "exec", postfix, "smtp-source", *flags, "-l", "1024", "-m", str(per_receiver),
                          "-s", str(max(1, sessions // len(receivers))), "-f", "bench@outside.test",
                          "-t", receiver, target], stdout=subprocess.DEVNULL)
        for receiver in receivers
    ]


def start_queue_waiter(container: str, timeout: float = 300) -> subprocess.Popen:
    """One `docker exec` that prints "<deferred> <epoch seconds>" once the smtp-source processes in the
    Postfix container have come and gone and its incoming and active queues are empty (or at the timeout):
    every accepted message has then left the queue. bash builtins only, like the delivery waiter: it looks
    every 50 ms (the delivery waiter's resolution at the end), at the smtp-source processes it knows (a
    stat each), and lists the container's processes again only when they have all ended."""
    script = (
        "shopt -s nullglob; fifo=$(mktemp -u); mkfifo $fifo; exec 9<>$fifo; rm $fifo; "
        f"end=$((SECONDS + {int(timeout)})); seen=0; pids=(); "
        "while :; do alive=(); for p in ${pids[@]}; do [[ -e /proc/$p ]] && alive+=($p); done; "
        "if ((${#alive[@]} == 0)); then for f in /proc/[0-9]*/comm; do "
        "{ read -r c < $f; } 2>/dev/null && [[ $c == smtp-source ]] && { p=${f#/proc/}; alive+=(${p%/comm}); }; "
        "done; fi; pids=(${alive[@]}); ((${#pids[@]})) && seen=1; "
        "if ((seen && ${#pids[@]} == 0)); then q=(/var/spool/postfix/incoming/* /var/spool/postfix/active/*); "
        "((${#q[@]} == 0)) && break; fi; ((SECONDS > end)) && break; read -t 0.05 -u 9; done; "
        "d=(/var/spool/postfix/deferred/*/*); echo ${#d[@]} $EPOCHREALTIME"
    )
    return subprocess.Popen(["docker", "exec", container, "bash", "-c", script], stdout=subprocess.PIPE, text=True)


def send_and_wait(postfix: str, receivers: list[str], per_receiver: int, sessions: int,
                  waiter: subprocess.Popen) -> tuple[float, int, float]:
    """Run the smtp-sources, then wait for the waiter (started before), which prints "<count> <epoch when
    done>". Returns (seconds until every message was accepted, the count, seconds until done)."""
    started_epoch, started = time.time(), time.perf_counter()
    for proc in start_sources(postfix, receivers, per_receiver, sessions):
        proc.wait()
    accepted = time.perf_counter() - started
    out, _ = waiter.communicate()
    count_text, done_epoch = out.split()
    return accepted, int(count_text), float(done_epoch) - started_epoch


def throughput(stack: MailStack, messages: int, sessions: int, mailboxes: int = 4,
               quota: str | None = None) -> dict[str, float]:
    """smtp-sink, then end to end."""
    sink, _ = smtp_sink(stack, stack.add_user().address, messages, sessions)
    return {"smtp-sink msg/s": sink, **end_to_end(stack, messages, sessions, mailboxes, quota)}


def end_to_end(stack: MailStack, messages: int, sessions: int, mailboxes: int = 4,
               quota: str | None = None) -> dict[str, float]:
    """smtp-source -> smtpd -> cleanup -> qmgr -> lmtp -> Dovecot -> maildir; delivered = files in the maildirs."""
    receivers = [stack.add_user(quota=quota) for _ in range(mailboxes)]
    postfix = stack.stack.container("postfix").name
    names = {c.id: c.config.labels["com.docker.compose.service"] for c in stack.stack.containers()}
    results: dict[str, float] = {}
    per_receiver = messages // len(receivers)
    meter = Meter(stack)
    stop, peaks = threading.Event(), {}
    sampler = threading.Thread(target=cpu_sample, args=(names, stop, peaks), daemon=True)
    sampler.start()
    total = per_receiver * len(receivers)
    addresses = [r.address for r in receivers]
    # it counts what is in the maildirs whenever it looks: starting a little late changes nothing
    waiter = start_delivery_waiter(stack.stack.container("dovecot").name, addresses, total)
    accepted, delivered, elapsed = send_and_wait(postfix, addresses, per_receiver, sessions, waiter)
    stop.set()
    results["accepted msg/s (smtpd 250)"] = total / accepted
    results["delivered msg/s (end to end)"] = delivered / elapsed
    results["delivered"] = delivered
    results["sent"] = total
    results.update(meter.per_message(delivered, elapsed))
    for service, peak in sorted(peaks.items()):
        results[f"peak CPU {service} %"] = peak
    return results


@contextlib.contextmanager
def transport(stack: MailStack, value: str) -> Iterator[None]:
    """This stack's Postfix with virtual_transport = value for the block, its own value again afterwards
    (postconf -e in the running container + postfix reload; the image and its main.cf are not touched)."""
    def set_to(setting: str) -> None:
        # main.cf backdated as the entrypoint does: Postfix pauses to let a file written within the last
        # second "settle" (see images/postfix/entrypoint.sh)
        stack.stack.exec("postfix", ["bash", "-c", f'postconf -e "virtual_transport={setting}" && '
                                     'touch -d "-2 seconds" /etc/postfix/main.cf && postfix reload'])
        time.sleep(1)  # master restarts qmgr and lets the old processes finish

    original = stack.stack.exec("postfix", ["postconf", "-h", "virtual_transport"]).stdout.decode().strip()
    set_to(value)
    try:
        yield
    finally:
        set_to(original)


def postfix_alone(stack: MailStack, messages: int, sessions: int, mailboxes: int = 4,
                  quota: str | None = None) -> dict[str, float]:
    """The same load as end to end through smtpd -> cleanup -> qmgr into Postfix's discard transport: all
    of Postfix's side (lookups in MariaDB included, quota-status where asked), no LMTP and no Dovecot."""
    receivers = [stack.add_user(quota=quota).address for _ in range(mailboxes)]
    postfix = stack.stack.container("postfix").name
    per_receiver = messages // len(receivers)
    total = per_receiver * len(receivers)
    with transport(stack, "discard:"):
        meter = Meter(stack)
        waiter = start_queue_waiter(postfix)
        accepted, deferred, elapsed = send_and_wait(postfix, receivers, per_receiver, sessions, waiter)
        done = total - deferred
        results = {"accepted msg/s (smtpd 250)": total / accepted, "msg/s": done / elapsed,
                   "done": done, "deferred": deferred, "sent": total}
        results.update(meter.per_message(done, elapsed))
    return results


def dovecot_alone(stack: MailStack, messages: int, sessions: int, mailboxes: int = 4,
                  quota: str | None = None) -> dict[str, float]:
    """The same messages, sessions and receivers, over LMTP straight to Dovecot's socket (smtp-source -L in
    the Postfix container, as Postfix's LMTP client reaches it), with the stack's mail_fsync."""
    receivers = [stack.add_user(quota=quota).address for _ in range(mailboxes)]
    postfix = stack.stack.container("postfix").name
    dovecot = stack.stack.container("dovecot").name
    per_receiver = messages // len(receivers)
    total = per_receiver * len(receivers)
    meter = Meter(stack)
    waiter = start_delivery_waiter(dovecot, receivers, total)
    started_epoch = time.time()
    for proc in start_sources(postfix, receivers, per_receiver, sessions, target=LMTP_SOCKET, lmtp=True):
        proc.wait()
    out, _ = waiter.communicate()
    delivered_text, done_epoch = out.split()
    elapsed = float(done_epoch) - started_epoch
    delivered = int(delivered_text)
    results = {"msg/s": delivered / elapsed, "delivered": delivered, "sent": total}
    results.update(meter.per_message(delivered, elapsed))
    return results


QUEUES = {"disk": {}, "memory": {"queue_in_memory": True},
          # the disk queue without quotas and Sieve: what the mailbox features cost
          "disk-no-features": {"mailbox_features": False},
          # the disk queue, every receiver with a quota: quota-status asked at each RCPT
          "disk-quotas": {}}
RECEIVER_QUOTA = {"disk-quotas": "10G"}
PARTS = {"end to end": end_to_end, "postfix alone": postfix_alone, "dovecot alone": dovecot_alone}
RATE = {"end to end": "delivered msg/s (end to end)", "postfix alone": "msg/s", "dovecot alone": "msg/s"}


def part_cpu(part: str, run: dict[str, float]) -> float:
    """The stack's CPU per message that a part stands for. Dovecot alone: Dovecot's and MariaDB's
    containers, without its load generator (smtp-source -L in the Postfix container: end to end, Postfix's
    LMTP client is a joint). The others: every container (smtp-source included, as in both)."""
    if part == "dovecot alone":
        return sum(run.get(f"CPU ms per message, {service}", 0.0) for service in ("dovecot", "mysql"))
    return run["CPU ms per message, stack"]


def block(stack: MailStack, number: int, args: argparse.Namespace, quota: str | None) -> dict[str, float]:
    """One run on one stack: smtp-sink, the parts (order rotated per run: a drifting machine favours none),
    smtp-sink again. Ratios are to the mean of the two smtp-sink figures."""
    order = list(PARTS) if args.decompose else ["end to end"]
    order = order[number % len(order):] + order[:number % len(order)]
    before, before_cpu = smtp_sink(stack, stack.add_user().address, args.messages, args.sessions)
    runs = {part: PARTS[part](stack, args.messages, args.sessions, args.mailboxes, quota) for part in order}
    after, after_cpu = smtp_sink(stack, stack.add_user().address, args.messages, args.sessions)
    sink, sink_cpu = (before + after) / 2, (before_cpu + after_cpu) / 2
    figures = {"smtp-sink msg/s": sink, "smtp-sink before": before, "smtp-sink after": after,
               "smtp-sink stack CPU ms": sink_cpu}
    for part, run in runs.items():
        figures[f"{part} msg/s"] = run[RATE[part]]
        figures[f"{part} ratio"] = run[RATE[part]] / sink
        figures[f"{part} stack CPU ms"] = part_cpu(part, run)
        figures[f"{part} CPU ratio"] = sink_cpu / part_cpu(part, run)
        figures.update({f"{part}: {label}": value for label, value in run.items()})
    if args.decompose:
        # The floor: the parts' CPU per message added (stack containers; see part_cpu). As a rate: what
        # end to end would deliver with the CPU it got if its messages cost only the floor.
        end, floor_cpu = figures["end to end stack CPU ms"], figures["postfix alone stack CPU ms"]
        floor_cpu += figures["dovecot alone stack CPU ms"]
        figures["floor stack CPU ms"] = floor_cpu
        figures["joints stack CPU ms"] = end - floor_cpu
        figures["end to end CPU / floor CPU"] = end / floor_cpu
        figures["floor CPU ratio"] = sink_cpu / floor_cpu
        figures["floor msg/s"] = figures["end to end msg/s"] * end / floor_cpu
        figures["floor ratio"] = figures["floor msg/s"] / sink
        figures["end to end / floor"] = floor_cpu / end
        # The parts' times per message added instead (a floor only if each part alone kept the cores busy;
        # where they leave them idle, end to end overlaps the two and goes faster than this)
        serial = 1 / (1 / figures["postfix alone msg/s"] + 1 / figures["dovecot alone msg/s"])
        figures["serial msg/s"] = serial
        figures["serial ratio"] = serial / sink
        figures["end to end / serial"] = figures["end to end msg/s"] / serial
    return figures


def describe_run(number: int, queue: str, figures: dict[str, float]) -> str:
    line = (f"run {number}, {queue} queue: smtp-sink {figures['smtp-sink msg/s']:.0f} msg/s (before "
            f"{figures['smtp-sink before']:.0f}, after {figures['smtp-sink after']:.0f}), "
            f"{figures['smtp-sink stack CPU ms']:.3f} ms CPU per message")
    for part in PARTS:
        if f"{part} msg/s" in figures:
            whole = figures.get(f"{part}: CPU ms per message, whole machine", 0.0)
            line += (f"; {part} {figures[f'{part} msg/s']:.0f} msg/s = {figures[f'{part} ratio']:.3f} of smtp-sink, "
                     f"{figures[f'{part} stack CPU ms']:.2f} ms stack CPU per message ({whole:.2f} whole machine)")
    for part, done in (("end to end", "delivered"), ("postfix alone", "done"), ("dovecot alone", "delivered")):
        if figures.get(f"{part}: {done}", figures.get(f"{part}: sent")) != figures.get(f"{part}: sent"):
            line += f"; {part}: only {figures[f'{part}: {done}']:.0f} of {figures[f'{part}: sent']:.0f} messages"
    if "floor msg/s" in figures:
        line += (f"; floor {figures['floor stack CPU ms']:.2f} ms stack CPU per message, joints "
                 f"{figures['joints stack CPU ms']:.2f} ms: end to end = {figures['end to end / floor']:.2f} of the "
                 f"floor ({figures['floor msg/s']:.0f} msg/s = {figures['floor ratio']:.3f}); parts' times added "
                 f"{figures['serial msg/s']:.0f} msg/s (end to end = {figures['end to end / serial']:.2f} of that)")
    return line


def median_spread(values: list[float], digits: int) -> str:
    values = sorted(values)
    spread = f" ({values[0]:.{digits}f}-{values[-1]:.{digits}f})" if len(values) > 1 else ""
    return f"{statistics.median(values):.{digits}f}{spread}"


def summarise(queue: str, runs: list[dict[str, float]], args: argparse.Namespace) -> None:
    def of(label: str, digits: int) -> str:
        return median_spread([run[label] for run in runs if label in run], digits)

    parts = [part for part in PARTS if f"{part} msg/s" in runs[0]]
    print(f"{queue} queue, median (min-max) of {len(runs)} runs ({args.messages} x 1 KB, {args.sessions} sessions, "
          f"{args.mailboxes} mailboxes):")
    print(f"  smtp-sink msg/s: {of('smtp-sink msg/s', 0)}, CPU ms per message {of('smtp-sink stack CPU ms', 3)}")
    decomposed = "floor ratio" in runs[0]
    print("  ratio to smtp-sink (msg/s over smtp-sink's): " + "; ".join(f"{part} {of(f'{part} ratio', 3)}"
                                                                      for part in parts)
          + (f"; floor {of('floor ratio', 3)}" if decomposed else ""))
    print("  msg/s: " + "; ".join(f"{part} {of(f'{part} msg/s', 0)}" for part in parts)
          + (f"; floor {of('floor msg/s', 0)}" if decomposed else ""))
    print("  stack CPU ms per message: " + "; ".join(f"{part} {of(f'{part} stack CPU ms', 2)}" for part in parts)
          + (f"; floor (postfix alone + Dovecot's and MariaDB's in dovecot alone) {of('floor stack CPU ms', 2)}; "
             f"joints (end to end - floor) {of('joints stack CPU ms', 2)}" if decomposed else ""))
    print("  CPU ratio to smtp-sink (smtp-sink's CPU per message over the part's): " + "; ".join(
        f"{part} {of(f'{part} CPU ratio', 4)}" for part in parts)
        + (f"; floor {of('floor CPU ratio', 4)}" if decomposed else ""))
    if decomposed:
        print(f"  end to end / floor (floor CPU over end to end's): {of('end to end / floor', 2)}; the parts' times "
              f"per message added instead: {of('serial msg/s', 0)} msg/s = {of('serial ratio', 3)} of smtp-sink, "
              f"end to end {of('end to end / serial', 2)} of that")
    print("  stack cores busy: " + "; ".join(f"{part} {of(f'{part}: stack cores busy', 2)}" for part in parts))
    print("  Docker engine (dockerd, containerd, these shims) CPU ms per message: "
          + "; ".join(f"{part} {of(f'{part}: CPU ms per message, engine', 2)}" for part in parts))
    print("  MariaDB per message (selects / new connections / mysqld CPU ms): " + "; ".join(
        f"{part} {of(f'{part}: MariaDB Com_select per message', 2)} / "
        f"{of(f'{part}: MariaDB Connections per message', 3)} / {of(f'{part}: CPU ms per message, mysql', 2)}"
        for part in parts))
    prefix = "process CPU ms per message, "
    names = sorted({label.split(": ", 1)[1].removeprefix(prefix) for run in runs for label in run
                    if label.split(": ", 1)[-1].startswith(prefix)})
    print(f"  CPU ms per message by process (sampled every 0.5 s; {' | '.join(parts)}):")
    for service in ("postfix", "dovecot", "mysql"):
        rows = []
        for name in (n for n in names if n.startswith(f"{service} ")):
            cells = []
            for part in parts:
                values = [run.get(f"{part}: {prefix}{name}", 0.0) for run in runs]
                cells.append(f"{statistics.median(values):.2f}")
            if any(float(cell) >= 0.05 for cell in cells):
                rows.append(f"{name.removeprefix(service + ' ')} {' | '.join(cells)}")
        unattributed = []
        for part in parts:
            values = [run.get(f"{part}: CPU ms per message, {service}", 0.0)
                      - sum(value for label, value in run.items() if label.startswith(f"{part}: {prefix}{service} "))
                      for run in runs]
            unattributed.append(f"{statistics.median(values):.2f}")
        rows.append(f"ended between looks or not sampled {' | '.join(unattributed)}")
        print(f"    {service}: " + "; ".join(rows))
    print("  end to end, every figure:")
    for label in runs[0]:
        if label.startswith("end to end: ") and prefix not in label:
            digits = 2 if "per message" in label or "cores" in label else 0
            print(f"    {label.removeprefix('end to end: ')}: {of(label, digits)}")


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
    parser.add_argument("--decompose", action=argparse.BooleanOptionalAction, default=True,
                        help="also run Postfix alone (discard transport) and Dovecot alone (LMTP) in each run")
    args = parser.parse_args()
    queues = list(QUEUES) if "all" in args.queue else list(dict.fromkeys(args.queue))
    with contextlib.ExitStack() as stacks:
        started = {queue: stacks.enter_context(MailStack(fast_retry=False, **QUEUES[queue])) for queue in queues}
        fsync = started[queues[0]].stack.exec("dovecot", ["doveconf", "-h", "mail_fsync"]).stdout.decode().strip()
        print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start; Dovecot's mail_fsync "
              f"= {fsync}", flush=True)
        if args.latency_messages:
            samples = latency(started[queues[0]], args.latency_messages)
            ms = sorted(s * 1000 for s in samples)
            p95 = ms[max(0, int(round(0.95 * len(ms))) - 1)]
            print(f"latency 587 -> IMAP over {len(ms)} messages ({queues[0]} queue): p50 {statistics.median(ms):.1f} "
                  f"ms, p95 {p95:.1f} ms, max {ms[-1]:.1f} ms", flush=True)
        runs: dict[str, list[dict[str, float]]] = {queue: [] for queue in queues}
        for number in range(1, args.runs + 1):
            for queue, stack in started.items():  # interleaved: the machine's mood affects all alike
                figures = block(stack, number, args, RECEIVER_QUOTA.get(queue))
                runs[queue].append(figures)
                print(describe_run(number, queue, figures), flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    for queue, results in runs.items():
        summarise(queue, results, args)
    print("median ratio, end to end / smtp-sink of the same run: " + "; ".join(
        f"{queue} {median_spread([run['end to end ratio'] for run in results], 3)}" for queue, results in runs.items())
        + ("; end to end / floor (CPU): " + "; ".join(
            f"{queue} {median_spread([run['end to end / floor'] for run in results], 2)}"
            for queue, results in runs.items()) if args.decompose else ""))
    print(REFERENCE)


if __name__ == "__main__":
    main()
