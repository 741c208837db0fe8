"""Startup figures for issue 2 (and 5): cold build, first up, warm up, idle RAM and CPU, image sizes.

Prints a table; asserts nothing. Uses its own project name and random ports, so a `make up` stack
can keep running. Usage: python bench/startup.py [--skip-cold-build] [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from mail import container_cpu_seconds  # bench/mail.py, beside this script
from mailstack.api import bring_up
from mailstack.settings import PORT_NAMES, load_settings
from mailstack.stack import SERVICES, Stack

REFERENCE = {  # the naive prototype measured on this kind of machine (issue 2)
    "cold build": "51 s",
    "first up to healthy": "7-11 s",
    "warm up to healthy": "5.6-9 s",
    "idle RAM, whole stack": "95 MiB",
    "unique image layers": "459+270+256 MB over a 199 MB base",
}


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def mib(text: str) -> float:
    value = text.strip()
    units = {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024, "B": 1 / 1024 / 1024}
    for unit, factor in units.items():
        if value.endswith(unit):
            return float(value[: -len(unit)]) * factor
    return float(value)


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-cold-build", action="store_true", help="do not rebuild images without cache")
    parser.add_argument("--runs", type=int, default=3, help="repetitions of first/warm up")
    parser.add_argument("--idle-seconds", type=float, default=60,
                        help="how long to sample an idle stack's CPU (Docker's health checks run every 30 s)")
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="mailstack-bench-"))
    settings = load_settings(project="mailstack-bench", state_dir=state, hash_cost="fast",
                             **{f"{p}_port": 0 for p in PORT_NAMES})
    stack = Stack(settings)
    rows: list[tuple[str, str]] = []

    if not args.skip_cold_build:
        cold = timed(lambda: stack.docker.compose.build(cache=False, quiet=True))
        rows.append(("cold build (no cache, 3 images in parallel)", f"{cold:.1f} s"))

    first, warm, restart = [], [], []
    try:
        for _ in range(args.runs):
            stack.down(volumes=True)
            first.append(timed(lambda: bring_up(settings, provision_host=False)))  # fresh volumes: DB init
            stack.down(volumes=False)
            warm.append(timed(lambda: bring_up(settings, provision_host=False)))  # containers recreated, data kept
            for service in SERVICES:
                stack.docker.compose.stop([service])
            restart.append(timed(lambda: bring_up(settings, provision_host=False)))  # stopped containers started
        rows.append(("first up to ready (new volumes, DB init)", _spread(first)))
        rows.append(("warm up to ready (after down, data kept)", _spread(warm)))
        rows.append(("warm up to ready (stopped containers)", _spread(restart)))

        time.sleep(10)  # let the stack settle into idle before sampling memory (a measurement, not a sync)
        names = {c.id: c.config.labels["com.docker.compose.service"] for c in stack.containers()}
        stats = docker("stats", "--no-stream", "--format", "{{json .}}", *names).splitlines()
        total = 0.0
        for line in stats:
            entry = json.loads(line)
            used = mib(entry["MemUsage"].split("/")[0])
            total += used
            service = next(v for k, v in names.items() if k.startswith(entry["ID"]) or entry["ID"].startswith(k[:12]))
            rows.append((f"idle RAM {service}", f"{used:.1f} MiB"))
        rows.append(("idle RAM, whole stack", f"{total:.1f} MiB"))
        rows.append((f"idle CPU over {args.idle_seconds:.0f} s, whole stack", idle_cpu(names, args.idle_seconds)))
    finally:
        stack.down(volumes=True)

    base = json.loads(docker("image", "inspect", "debian:bookworm-slim"))[0]
    layers: dict[str, int] = {}
    sizes = []
    for name in stack.image_names():
        info = json.loads(docker("image", "inspect", name))[0]
        sizes.append((name.split(":")[0], info["Size"]))
        for layer in info["RootFS"]["Layers"]:
            layers.setdefault(layer, 0)
    base_size = base["Size"]
    unique = base_size + sum(size - base_size for _, size in sizes)
    for name, size in sizes:
        rows.append((f"image {name}", f"{size / 1e6:.0f} MB ({(size - base_size) / 1e6:.0f} MB over the base)"))
    rows.append(("base debian:bookworm-slim", f"{base_size / 1e6:.0f} MB"))
    rows.append(("unique image layers, base included", f"{unique / 1e6:.0f} MB"))

    width = max(len(label) for label, _ in rows)
    print(f"\n{'figure':<{width}}  mailstack")
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    print("\nreference (naive prototype, issue 2):")
    for label, value in REFERENCE.items():
        print(f"  {label}: {value}")


ENGINE = ("dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2")


def engine_cpu_seconds() -> dict[int, float]:
    """CPU time per Docker engine process, with its reaped children's (runc, one per exec)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, fields = stat.read_text().split(" (", 1)[1].rsplit(") ", 1)
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if name in ENGINE:  # utime stime cutime cstime
            found[int(stat.parent.name)] = sum(int(value) for value in fields.split()[11:15]) / os.sysconf("SC_CLK_TCK")
    return found


def idle_cpu(names: dict[str, str], seconds: float) -> str:
    """CPU an idle stack takes: its containers (cgroup accounting) plus Docker's engine (the health checks'
    execs are mostly engine work), as a percentage of one core."""
    before = {cid: container_cpu_seconds(cid) for cid in names}
    engine_before = engine_cpu_seconds()
    time.sleep(seconds)  # the measurement window itself
    engine_after = engine_cpu_seconds()  # processes present at both ends (a shim may have ended meanwhile)
    engine = sum(engine_after[pid] - used for pid, used in engine_before.items() if pid in engine_after)
    if any(value is None for value in before.values()):
        return f"containers unreadable here; engine {engine * 100 / seconds:.2f} % of a core"
    containers = sum((container_cpu_seconds(cid) or 0.0) - (before[cid] or 0.0) for cid in names)
    return (f"{(containers + engine) * 100 / seconds:.2f} % of a core (containers {containers * 100 / seconds:.2f}, "
            f"Docker engine {engine * 100 / seconds:.2f})")


def _spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f}, n={len(values)})"


if __name__ == "__main__":
    main()
