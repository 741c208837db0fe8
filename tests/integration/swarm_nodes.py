"""A Docker Swarm of its own for an integration test, made of inner Docker engines.

`swarm_of(2, "mailstack-test-swarm", images)` starts two "nodes" (containers of the swarm_node image, each running
dockerd with overlay2 on a tmpfs or a volume, its API on a unix socket in a host directory: no TCP listener) on one
outer bridge network of their own, loads `images` into every node, forms a swarm (node 0 the manager, the others
workers) and yields the nodes; afterwards, or when the start fails half way, it removes everything it created.
The outer engine never joins a swarm: leaving one breaks the embedded DNS of its bridge networks (Docker 20.10).

Every outer resource carries the labels of the project's disposable stacks (compose project, project, ephemeral,
owner), so `mailstack prune` removes them when a test run is killed; the socket directories live in the project's
state directory under stacks_dir() (with its owner file), which prune removes too.

What this machine needs (found by trying; Docker 20.10, cgroup v1, kernel without IPVS):
- The nodes are not `--privileged`: the machine's capability bounding set lacks CAP_SYS_RESOURCE, and runc fails
  every privileged container ("unable to apply caps: operation not permitted"), as it does `--cap-add ALL`. They get
  every other capability, no seccomp/AppArmor profile and unmasked /proc (systempaths=unconfined); Docker still
  mounts /sys and the container's cgroup v1 hierarchies read-only, so the entrypoint remounts them read-write
  (that is all the cgroup setup v1 needs; hack/dind's nesting dance is for v2). Inner containers cannot be
  privileged or get CAP_SYS_RESOURCE either.
- The inner bridges get a fixed pool (INNER_BRIDGE_POOL): an inner engine only sees its own node's routes, so it
  would pick 172.x/192.168.x subnets other outer networks use, and traffic from inner containers to those (or
  replies to clients there) would stay inside the node.
- Overlay networks work across the nodes as they are: VXLAN (udp/4789) and gossip (7946) between the nodes'
  addresses on the outer bridge, inter-container traffic allowed there; the overlay's MTU is 1450 under the outer
  1500. Harmless inner log lines: the net.ipv4.vs.* sysctls (no IPVS: use dnsrr services and host-mode ports) and
  "enabling default vlan on bridge br0 failed" (seen on ordinary hosts too).
- `docker load` into an inner engine costs CPU per file (about twice a plain `tar -x`); into a tmpfs it takes half
  the time it takes into a volume on this disk, and a tmpfs needs no deleting afterwards (a volume holding the
  three images takes seconds).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mailstack.stack import (
    LABEL_COMPOSE_PROJECT,
    LABEL_EPHEMERAL,
    LABEL_OWNER,
    LABEL_PROJECT,
    OWNER_FILE,
    owner_label,
    remove_project,
    stacks_dir,
)

NODE_CONTEXT = Path(__file__).with_name("swarm_node")
NODE_IMAGE = "mailstack-swarm-node"
SOCKET_MOUNT = "/run/swarm-node"  # in the node (entrypoint.sh)
# The inner engines' bridges (docker0, docker_gwbridge): a fixed pool, away from the outer engine's 172.16/12 and
# 192.168/16 pools (an inner engine cannot see the outer networks it might otherwise pick) and from the swarm's
# overlay pool (10.0.0.0/8 from 10.0.0.0/24 up).
INNER_BRIDGE_POOL = "base=10.210.0.0/16,size=24"
# Everything runc can grant here but CAP_SYS_RESOURCE (see the module's docstring), without the confinement a
# nested engine cannot work under.
NODE_PRIVILEGES = ("--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE", "--security-opt", "seccomp=unconfined",
                   "--security-opt", "apparmor=unconfined", "--security-opt", "systempaths=unconfined")
POLL = 0.1  # seconds between two looks at something being started
Storage = Literal["tmpfs", "volume"]


class SwarmError(RuntimeError):
    """A node or the swarm did not come up; the message says what was seen."""


def progress(message: str) -> None:
    print(f"swarm: {message}", file=sys.stderr, flush=True)


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _run(args: Sequence[str], env: dict[str, str] | None = None, input: bytes | None = None,
         timeout: float = 120) -> str:
    done = subprocess.run(list(args), input=input, capture_output=True, env=env, timeout=timeout, check=False)
    if done.returncode != 0:
        said = _tail(done.stderr.decode(errors="replace") or done.stdout.decode(errors="replace"))
        raise SwarmError(f"`{' '.join(args)}` failed ({done.returncode}):\n{said}")
    return done.stdout.decode(errors="replace").strip()


def outer(*args: str, timeout: float = 120) -> str:
    """The docker CLI against the outer engine (the one the environment names)."""
    return _run(["docker", *args], timeout=timeout)


@dataclass(frozen=True)
class Node:
    name: str  # the outer container's name
    address: str  # its IPv4 address on the nodes' outer network, reachable from the host (host-mode ports)
    socket_dir: Path  # the host directory holding docker.sock
    hostname: str  # the inner engine's host name: its swarm node's name (node.hostname in constraints)

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket_dir / 'docker.sock'}"

    @property
    def env(self) -> dict[str, str]:
        """The environment for a docker CLI (or Compose, python-on-whales...) talking to this node's engine."""
        outer_only = ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")
        return {**{k: v for k, v in os.environ.items() if k not in outer_only}, "DOCKER_HOST": self.docker_host}

    def docker(self, *args: str, input: bytes | None = None, timeout: float = 120) -> str:
        """The docker CLI against this node's inner engine; raises SwarmError with the tail of stderr."""
        return _run(["docker", *args], env=self.env, input=input, timeout=timeout)

    def ping(self, timeout: float = 1.0) -> bool:
        """Whether the inner engine's API answers (GET /_ping over its socket)."""
        path = str(self.socket_dir / "docker.sock")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(path)
                connection = http.client.HTTPConnection("localhost", timeout=timeout)
                connection.sock = sock
                connection.request("GET", "/_ping")
                return connection.getresponse().status == 200
        except OSError:
            return False


def node_image(timings: dict[str, float] | None = None) -> str:
    """The node image of this checkout, built on the outer engine when missing (tagged by a hash of its context,
    as the project's images are): half a minute, once."""
    digest = hashlib.sha256()
    for path in sorted(NODE_CONTEXT.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(NODE_CONTEXT)).encode())
            digest.update(path.read_bytes())
    image = f"{NODE_IMAGE}:{digest.hexdigest()[:12]}"
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False).returncode != 0:
        progress(f"building {image}")
        mark = time.monotonic()
        outer("build", "--quiet", "--tag", image, str(NODE_CONTEXT), timeout=600)
        if timings is not None:
            timings["build"] = time.monotonic() - mark
    return image


def wait_until(what: str, ready: Callable[[], bool], timeout: float, failed: Callable[[], str | None] = lambda: None,
               interval: float = POLL, details: Callable[[], str] = lambda: "") -> None:
    """Poll `ready` until it holds; stop early when `failed` returns a reason (something died), or at the timeout
    (with `details`: what there is to see then)."""
    deadline = time.monotonic() + timeout
    while not ready():
        reason = failed()
        if reason is not None:
            raise SwarmError(f"{what}: {reason}")
        if time.monotonic() > deadline:
            raise SwarmError(f"{what}: not within {timeout:.0f} s\n{details()}".rstrip())
        time.sleep(interval)


def _log_tail(name: str) -> str:
    logs = subprocess.run(["docker", "logs", "--tail", "30", name], capture_output=True, text=True, check=False)
    return f"the log of {name} ends:\n{_tail(logs.stdout + logs.stderr, 30)}"


def _container_gone(name: str) -> str | None:
    """None while the container runs; else its state and the tail of its log."""
    state = subprocess.run(["docker", "inspect", "--format", "{{.State.Status}} (exit {{.State.ExitCode}})", name],
                           capture_output=True, text=True, check=False).stdout.strip()
    return None if state.startswith("running") else f"container {name} is {state or 'gone'}; {_log_tail(name)}"


def _labels(project: str) -> list[str]:
    labels = {LABEL_COMPOSE_PROJECT: project, LABEL_PROJECT: project, LABEL_EPHEMERAL: "true",
              LABEL_OWNER: owner_label()}
    return [arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")]


def _start_node(project: str, network: str, image: str, index: int, root: Path, storage: Storage,
                timeout: float) -> Node:
    name, hostname = f"{project}-node{index}", f"node{index}"
    socket_dir = root / hostname
    socket_dir.mkdir(parents=True)
    if storage == "volume":  # named and labelled: prune finds it even when the container is gone
        volume = f"{name}-docker"
        outer("volume", "create", *_labels(project), volume)
        data = f"type=volume,source={volume},target=/var/lib/docker"
    else:
        data = "type=tmpfs,target=/var/lib/docker,tmpfs-mode=0711"
    outer("run", "--detach", "--name", name, "--hostname", hostname, "--network", network, *NODE_PRIVILEGES,
          *_labels(project), "--mount", data, "--mount", f"type=bind,source={socket_dir},target={SOCKET_MOUNT}",
          image, "--default-address-pool", INNER_BRIDGE_POOL)
    address = outer("inspect", "--format", f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}', name)
    node = Node(name, address, socket_dir, hostname)
    wait_until(f"the engine of {name}", node.ping, timeout, failed=lambda: _container_gone(name),
               details=lambda: _log_tail(name))
    return node


def load_images(nodes: Sequence[Node], images: Sequence[str], timeout: float = 300) -> int:
    """`docker save` the images once (one archive: shared layers once) on the outer engine, streamed into
    `docker load` on every node at the same time. Returns the archive's size in bytes."""
    if not images:
        return 0
    save = subprocess.Popen(["docker", "save", *images], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    loads = {node.name: subprocess.Popen(["docker", "load", "--quiet"], stdin=subprocess.PIPE, env=node.env,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for node in nodes}
    processes = {"docker save": save, **{f"docker load on {name}": load for name, load in loads.items()}}
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        for process in processes.values():
            process.kill()

    timer = threading.Timer(timeout, expire)
    timer.start()
    size = 0
    try:
        assert save.stdout is not None
        try:
            while chunk := save.stdout.read(1 << 20):
                size += len(chunk)
                if size % (100 << 20) < len(chunk):
                    progress(f"{size >> 20} MB streamed into {len(loads)} node(s)")
                for load in loads.values():
                    load.stdin.write(chunk)  # type: ignore[union-attr]
        except BrokenPipeError:
            save.kill()  # a load gave up (its stderr says why): the others get a truncated archive and fail too
        for load in loads.values():
            with suppress(BrokenPipeError):
                load.stdin.close()  # type: ignore[union-attr]
        failures = []
        for what, process in processes.items():
            said = process.stderr.read().decode(errors="replace")  # type: ignore[union-attr]
            if process.wait() != 0:
                failures.append(f"{what}: {_tail(said) or f'exit {process.returncode}'}")
    finally:
        timer.cancel()
        for process in processes.values():
            if process.poll() is None:
                process.kill()
            process.wait()
    if expired.is_set():
        failures.insert(0, f"not within {timeout:.0f} s")
    if failures:
        raise SwarmError("loading the images failed:\n" + "\n".join(failures))
    return size


def _form_swarm(nodes: Sequence[Node], timeout: float) -> None:
    manager, workers = nodes[0], nodes[1:]
    manager.docker("swarm", "init", "--advertise-addr", manager.address)
    token = manager.docker("swarm", "join-token", "--quiet", "worker")
    with ThreadPoolExecutor(max(1, len(workers))) as pool:
        list(pool.map(lambda node: node.docker("swarm", "join", "--token", token, "--advertise-addr", node.address,
                                               f"{manager.address}:2377"), workers))

    def all_ready() -> bool:
        states = manager.docker("node", "ls", "--format", "{{.Hostname}} {{.Status}}").splitlines()
        return len(states) == len(nodes) and all(line.endswith(" Ready") for line in states)

    def dead() -> str | None:
        return next(filter(None, (_container_gone(node.name) for node in nodes)), None)

    wait_until("every node Ready in `docker node ls`", all_ready, timeout, failed=dead, interval=0.2,
               details=lambda: manager.docker("node", "ls"))


def _remove_nodes(project: str, count: int) -> None:
    """The nodes' containers and volumes (if any), all at once (a volume holding images takes seconds to delete),
    then whatever else is labelled with the project (the network; anything a half-way start left)."""
    def remove(index: int) -> None:
        name = f"{project}-node{index}"
        subprocess.run(["docker", "rm", "--force", "--volumes", name], capture_output=True, check=False)
        subprocess.run(["docker", "volume", "rm", "--force", f"{name}-docker"], capture_output=True, check=False)

    with ThreadPoolExecutor(count) as pool:
        list(pool.map(remove, range(count)))
    remove_project(project)


@contextmanager
def swarm_of(nodes: int, name: str, images: Sequence[str], storage: Storage = "tmpfs", timeout: float = 60,
             timings: dict[str, float] | None = None) -> Iterator[list[Node]]:
    """A swarm of `nodes` inner engines (node 0 the manager) with `images` loaded into each; removed afterwards,
    also when the start fails half way. `name` prefixes the project (a random suffix keeps runs apart).
    `storage`: where each inner engine keeps its images, containers and volumes (/var/lib/docker): "tmpfs" (memory:
    one load of the three images takes 8 s there against 15 s on this disk, and nothing is left to delete) or
    "volume" (a named volume, for tests that write more than memory should hold). `timings` (when given) gets the
    seconds each step took: build (the node image, when it was missing), start (the engines up), load (and
    load_bytes), swarm (formed while the images load), teardown."""
    if nodes < 1:
        raise ValueError("a swarm needs a node")
    timings = {} if timings is None else timings
    project = f"{name}-{uuid.uuid4().hex[:8]}"
    root = stacks_dir() / project
    network = f"{project}_nodes"
    image = node_image(timings)
    try:
        root.mkdir(parents=True)
        (root / OWNER_FILE).write_text(owner_label())  # prune removes the directory when the owner is gone
        mark = time.monotonic()
        outer("network", "create", *_labels(project), network)
        progress(f"starting {nodes} node(s) of {project}")
        with ThreadPoolExecutor(nodes) as pool:
            members = list(pool.map(lambda i: _start_node(project, network, image, i, root, storage, timeout),
                                    range(nodes)))
        timings["start"] = time.monotonic() - mark
        progress(f"{nodes} engine(s) up in {timings['start']:.1f} s; loading {', '.join(images) or 'no images'}")

        def form() -> None:
            begun = time.monotonic()
            _form_swarm(members, timeout)
            timings["swarm"] = time.monotonic() - begun
            progress(f"swarm of {nodes} formed in {timings['swarm']:.1f} s")

        with ThreadPoolExecutor(1) as pool:
            formed = pool.submit(form)
            mark = time.monotonic()
            timings["load_bytes"] = load_images(members, images)
            timings["load"] = time.monotonic() - mark
            progress(f"loaded {timings['load_bytes'] / 1e6:.0f} MB into {nodes} node(s) in {timings['load']:.1f} s")
            formed.result()
        yield members
    finally:
        mark = time.monotonic()
        _remove_nodes(project, nodes)
        shutil.rmtree(root, ignore_errors=True)  # the sockets' directories (written by the nodes' root)
        timings["teardown"] = time.monotonic() - mark
        progress(f"{project} removed in {timings['teardown']:.1f} s")
