"""Figures for issue 5: what a disposable stack costs another project's test suite.

- a fresh MailStack, from cached images, until ready (median of --fresh runs), with where the time goes
  (from the progress messages) and how many CLI processes (docker, docker compose) one start spawns;
- its teardown (containers, volumes, network and state directory removed);
- attaching to a running stack with reuse=True (--mailstack-reuse), median of --reuse runs;
- one add_user (what the mail_user fixture does per test), median and p95 of --users calls;
- --parallel stacks started at once (what `pytest -n N` does): each start's time under that contention, the
  containers' memory per stack (cgroup usage as `docker stats` reports it) and what each extra stack took
  of the machine's MemAvailable (containers, their shims and the engine's bookkeeping).

Prints a table; asserts nothing. Its stacks use their own project names and random ports, so a `make up`
stack keeps running. The machine may be shared: compare the figures of runs made together, and repeat.
Usage: python bench/fixtures.py [--fresh N] [--reuse N] [--users N]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from mailstack.api import MailStack
from mailstack.stack import Stack

TARGETS = {"fresh stack ready": "<= 3 s from cached images", "mail_user": "< 50 ms",
           "each extra stack": "<= 50 MiB"}


COMPOSE_VERBS = ("up", "down", "ps", "start", "stop", "build", "version", "config", "logs", "create")


def describe(args: object) -> str | None:
    """'docker container start', 'docker compose up', ... for a docker CLI call; None for anything else."""
    argv = [str(a) for a in args] if isinstance(args, list | tuple) else str(args).split()
    argv = [a for a in argv if not a.startswith("MAILSTACK_") and a.rsplit("/", 1)[-1] != "env"]
    if not argv or argv[0].rsplit("/", 1)[-1] != "docker":
        return None
    if "compose" in argv:
        return "docker compose " + next((a for a in argv if a in COMPOSE_VERBS), "?")
    words = [a for a in argv[1:] if not a.startswith("-") and not re.fullmatch(r"[0-9a-f]{12,64}", a)]
    return " ".join(["docker", *words[:2]])


class Spawns:
    """Counts the docker CLI processes started through subprocess.Popen."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        self._lock = threading.Lock()

    @contextmanager
    def counting(self) -> Iterator[None]:
        original = subprocess.Popen.__init__

        def init(popen: subprocess.Popen, args: object, *rest: object, **kwargs: object) -> None:
            command = describe(args)
            if command:
                with self._lock:
                    self.commands.append(command)
            original(popen, args, *rest, **kwargs)  # type: ignore[arg-type]

        subprocess.Popen.__init__ = init  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            subprocess.Popen.__init__ = original  # type: ignore[method-assign]


class Phases:
    """Timestamps of MailStack's progress messages, relative to the start."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.marks: list[tuple[str, float]] = []

    def __call__(self, message: str) -> None:
        self.marks.append((message, time.perf_counter() - self.started))

    def first(self, predicate: Callable[[str], bool]) -> float | None:
        """When the first message the predicate accepts came (None: none did)."""
        return next((at for message, at in self.marks if predicate(message)), None)


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def spread(values: list[float], unit: str = "s", scale: float = 1.0) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (f"median {statistics.median(values) * scale:.{1 if unit == 'ms' else 2}f} {unit} "
            f"(min {ordered[0] * scale:.{1 if unit == 'ms' else 2}f}, p95 {p95 * scale:.{1 if unit == 'ms' else 2}f}, "
            f"max {ordered[-1] * scale:.{1 if unit == 'ms' else 2}f}, n={len(values)})")


def load() -> str:
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fresh", type=int, default=5, help="fresh starts to time")
    parser.add_argument("--reuse", type=int, default=5, help="reuse attaches to time")
    parser.add_argument("--users", type=int, default=100, help="add_user calls to time")
    parser.add_argument("--parallel", type=int, default=4, help="stacks started at once (pytest -n N)")
    args = parser.parse_args()
    rows: list[tuple[str, str]] = []
    print(f"load average before: {load()}")

    with MailStack():  # warm-up, not counted: builds the images if this tag has none, fills caches
        pass

    ready: list[float] = []
    teardown: list[float] = []
    phases: dict[str, list[float]] = {}
    user_costs: list[float] = []
    spawns = Spawns()
    for run in range(args.fresh):
        report = Phases()
        stack = MailStack(report=report)
        with spawns.counting() if run == 0 else _nothing():
            ready.append(timed(stack.start))
        for message, at in report.marks:
            phases.setdefault(message, []).append(at)
        if run == 0:
            for _ in range(args.users):
                user_costs.append(timed(stack.add_user))
        teardown.append(timed(stack.stop))

    rows.append(("fresh stack: MailStack() until ready", spread(ready)))
    for message, values in phases.items():
        rows.append((f"  at '{message}'", f"median {statistics.median(values):.2f} s"))
    counts: dict[str, int] = {}
    for command in spawns.commands:
        counts[command] = counts.get(command, 0) + 1
    rows.append(("  CLI processes per start", f"{len(spawns.commands)}: "
                 + ", ".join(f"{n}x {c}" for c, n in sorted(counts.items(), key=lambda kv: -kv[1]))))
    rows.append(("fresh stack: teardown (all removed)", spread(teardown)))
    rows.append(("add_user (mail_user fixture)", spread(user_costs, "ms", 1000)))

    project = f"mailstack-bench-reuse-{uuid.uuid4().hex[:6]}"
    first = MailStack(project=project, reuse=True)
    try:
        first_start = timed(first.start)  # not running yet: a fresh start, then left running
        first.stop()
        attach: list[float] = []
        for _ in range(args.reuse):
            again = MailStack(project=project, reuse=True)
            attach.append(timed(again.start))
            again.stop()
        rows.append(("reuse: first session (starts it)", f"{first_start:.2f} s"))
        rows.append(("reuse: later sessions, until ready", spread(attach)))
    finally:
        Stack(first.settings).down(volumes=True)
        shutil.rmtree(first.settings.state_dir, ignore_errors=True)

    rows += parallel_stacks(args.parallel)

    width = max(len(label) for label, _ in rows)
    print(f"\n{'figure':<{width}}  value")
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    print(f"\nload average after: {load()}")
    print("targets: " + "; ".join(f"{name} {target}" for name, target in TARGETS.items()))


def mem_available_mib() -> float:
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def ready_side_by_side(variants: dict[str, dict[str, object]], starts: int) -> None:
    """Print how fast a fresh disposable stack of each variant (MailStack options) is ready: `starts` starts
    each, interleaved so that the machine's mood affects all alike."""
    ready: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(starts):
        for name, options in variants.items():
            started = time.perf_counter()
            with MailStack(**options):
                ready[name].append(time.perf_counter() - started)
    for name, values in ready.items():
        print(f"{name}: fresh disposable stack ready in {statistics.median(values):.2f} s median "
              f"({min(values):.2f}-{max(values):.2f}, {len(values)} starts)")


def containers_mib(stack: MailStack) -> float:
    ids = [c.id for c in stack.stack.containers()]
    lines = subprocess.run(["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", *ids],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    units = {"KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0}
    total = 0.0
    for line in lines:
        used = line.split("/")[0].strip()
        unit = next(u for u in units if used.endswith(u))
        total += float(used[: -len(unit)]) * units[unit]
    return total


def parallel_stacks(count: int) -> list[tuple[str, str]]:
    """count stacks started together (as pytest -n count's workers do), then their memory."""
    if count < 2:
        return []
    subprocess.run(["sync"], check=True)
    before = mem_available_mib()
    stacks = [MailStack() for _ in range(count)]
    starts: list[float] = []
    try:
        with ThreadPoolExecutor(max_workers=count) as pool:
            starts = list(pool.map(lambda s: timed(s.start), stacks))
        time.sleep(10)  # let the stacks settle into idle before sampling memory (a measurement, not a sync)
        after = mem_available_mib()
        per_stack = [containers_mib(s) for s in stacks]
    finally:
        for stack in stacks:
            stack.stop()
    return [
        (f"{count} stacks started at once: each until ready", spread(starts)),
        (f"{count} stacks: containers' memory per stack", spread(per_stack, "MiB")),
        (f"{count} stacks: machine MemAvailable taken per stack", f"{(before - after) / count:.1f} MiB "
         f"({before - after:.0f} MiB for {count}, page cache included)"),
    ]


@contextmanager
def _nothing() -> Iterator[None]:
    yield


if __name__ == "__main__":
    main()
