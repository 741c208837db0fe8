"""The only module that talks to Docker and Compose (through python-on-whales).

A Stack is one compose project: its containers, network and volumes, all labelled with the project.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from python_on_whales import Container, DockerClient, DockerException
from python_on_whales.utils import run as docker_run

from mailstack import certs, schema, secrets, webmail
from mailstack.errors import CommandError, MailstackError, NotReady, PortTaken, StackNotRunning, tail
from mailstack.production import render as production_render
from mailstack.production.plan import Plan
from mailstack.settings import Settings, image_tag, stack_files_dir
from mailstack.stack.netns import host_probe, listening, runs_in
from mailstack.world import dkim
from mailstack.world import network as world_network
from mailstack.world import state as world_state

Report = Callable[[str], None]

SERVICES = ("mysql", "dovecot", "postfix")
WORLD_SERVICES = ("dns", "rspamd", "outside")  # compose.world.yaml: a stack with its outside world
WORLD_SUBNET_FILE = "world-subnet"  # in the config dir: the subnet chosen for the stack's network
WEBMAIL_SERVICES = ("webmail",)  # compose.webmail.yaml: Roundcube and the client autoconfiguration
# lmtp_auth_tcp (compose.lmtp-tcp.yaml): the internal network only Postfix and Dovecot join, a /27 chosen once
# (in the config dir); Dovecot's fixed address there is its second host (.2; Docker allocates the upper half).
BACKEND_NETWORK = "backend"
BACKEND_SUBNET_FILE = "backend-subnet"
# endpoint name -> (service, container port)
ENDPOINTS = {
    "smtp": ("postfix", 25),
    "submission": ("postfix", 587),
    "smtps": ("postfix", 465),
    "imaps": ("dovecot", 993),
    "pop3s": ("dovecot", 995),
    "managesieve": ("dovecot", 4190),
    "webmail": ("webmail", 80),  # HTTP; only on a stack with its webmail
}
HEALTHCHECK = ["/usr/local/bin/healthcheck.sh"]
# Dovecot's check is an auth lookup through SQL: probed before MariaDB answers, it can only fail, and each
# failure logs errors and lengthens Dovecot's SQL reconnect delay. Probed once MariaDB is ready.
PROBE_AFTER = {"dovecot": "mysql"}
# What each service's health check needs listening first (its first test, or what it connects to): while the
# engine runs on this machine these are asked from the host (stack/netns.py: a sock_diag dump in the
# container's network namespace, microseconds); the probe runs only once they listen: the check's own
# conversation from the host too where netns.HOST_PROBES has it, else by `docker exec` of the check (~0.3 s
# and a share of both cores while six containers start). (protocol, ports)
LISTEN_FIRST: dict[str, tuple[str, tuple[int, ...]]] = {
    "mysql": ("tcp", (3306,)),
    "dovecot": ("tcp", (993, 995, 4190)),
    "postfix": ("tcp", (25, 587, 465)),
    "dns": ("udp", (53,)),
    "rspamd": ("tcp", (11332, 11334)),
    "outside": ("tcp", (25,)),
    "webmail": ("tcp", (80,)),
}
LABEL_PROJECT = "io.mailstack.project"
LABEL_EPHEMERAL = "io.mailstack.ephemeral"
# Disposable stacks only (compose.ephemeral.yaml): "<namespace>/<pid>/<start time>", where the namespace names
# the machine, boot and pid namespace in which the pid means something.
LABEL_OWNER = "io.mailstack.owner"
LABEL_COMPOSE_PROJECT = "com.docker.compose.project"
LABEL_COMPOSE_SERVICE = "com.docker.compose.service"
TLS_MOUNT = "/run/mailstack/tls"  # a bind mount of <state dir>/config/tls in dovecot and postfix
OWNER_FILE = "owner"  # in a disposable stack's state directory: its owner label


def stacks_dir() -> Path:
    """Where disposable stacks keep their state directories."""
    return Path(tempfile.gettempdir()) / "mailstack-stacks"


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def client_host(self) -> str:
        """Where a client on this machine connects: a wildcard bind is reached on loopback."""
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host  # noqa: S104 - a wildcard bind


@dataclass(frozen=True)
class Endpoints:
    smtp: Endpoint
    submission: Endpoint
    smtps: Endpoint
    imaps: Endpoint
    pop3s: Endpoint
    managesieve: Endpoint
    webmail: Endpoint | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {name: None if getattr(self, name) is None else str(getattr(self, name)) for name in ENDPOINTS}

    @property
    def webmail_url(self) -> str | None:
        return None if self.webmail is None else f"http://{self.webmail.client_host}:{self.webmail.port}"


@dataclass(frozen=True)
class ContainerInfo:
    """What one `docker container inspect` said about a service's container, at one moment."""

    id: str
    name: str
    service: str
    status: str  # created, running, restarting, exited, ...
    running: bool
    health: str | None
    ports: Mapping[str, Sequence[Mapping[str, str]]] = field(default_factory=dict)
    addresses: tuple[str, ...] = ()
    mounts: Mapping[str, str] = field(default_factory=dict)  # destination -> source
    labels: Mapping[str, str] = field(default_factory=dict)
    pid: int = 0  # its main process, in the engine's machine's pid namespace (0: not running)

    @classmethod
    def from_inspect(cls, data: Mapping[str, object]) -> ContainerInfo:
        state: dict = data.get("State") or {}  # type: ignore[assignment]
        config: dict = data.get("Config") or {}  # type: ignore[assignment]
        network: dict = data.get("NetworkSettings") or {}  # type: ignore[assignment]
        labels = config.get("Labels") or {}
        return cls(
            id=str(data["Id"]),
            name=str(data.get("Name", "")).lstrip("/"),
            service=labels.get(LABEL_COMPOSE_SERVICE, ""),
            status=str(state.get("Status", "")),
            running=bool(state.get("Running")),
            health=(state.get("Health") or {}).get("Status"),
            ports={port: list(bindings) for port, bindings in (network.get("Ports") or {}).items() if bindings},
            addresses=tuple(n["IPAddress"] for n in (network.get("Networks") or {}).values() if n.get("IPAddress")),
            mounts={m["Destination"]: m["Source"] for m in data.get("Mounts") or [] if m.get("Source")},  # type: ignore[union-attr]
            labels=labels,
            pid=int(state.get("Pid") or 0),
        )

    def host_port(self, container_port: int) -> int | None:
        bindings = self.ports.get(f"{container_port}/tcp")
        return int(bindings[0]["HostPort"]) if bindings else None


def _docker_error(exc: DockerException, hint: str | None = None) -> CommandError:
    stderr = exc.stderr or exc.stdout or ""
    return CommandError(exc.docker_command, exc.return_code, stderr, hint)


def port_problem(host: str, port: int) -> str | None:
    """Why `port` cannot be published on `host`, or None when it is free (0: Docker picks one)."""
    if port == 0:
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As Docker's proxy binds: connections of a stack just taken down linger in TIME_WAIT on its
        # ports, and without SO_REUSEADDR they would read as "in use" for a minute. A listener still fails.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "in use"
            if exc.errno == errno.EADDRNOTAVAIL:
                return f"{host} is not an address of this machine"
            return None  # e.g. EACCES for ports < 1024 as a normal user: Docker's proxy binds as root
    return None


def adopt_started(settings: Settings) -> Settings:
    """An existing stack keeps the optional parts it was last started with (its state directory remembers the
    world's subnet and the webmail's documents) unless the settings say otherwise: `mailstack user add` on a
    stack without a world must not look for its DNS, nor `status` for a webmail it lacks. `up` starts it as
    the settings say."""
    started = {"world": (settings.config_dir / WORLD_SUBNET_FILE).is_file(), "webmail": webmail.has_webmail(settings)}
    update = {name: value for name, value in started.items()
              if name not in settings.model_fields_set and getattr(settings, name) != value}
    return settings.model_copy(update=update) if update else settings


def pin_free_ports(settings: Settings) -> Settings:
    """Settings whose ports of 0 are replaced by ports free now. Docker picks a new host port for a port
    of 0 at every container start, so a stopped and started container would move; pinned at creation, a
    port stays the same for the container's life. Another program may take a port before Docker binds
    it: Stack.start then raises PortTaken, and the caller may pin again."""
    wanted = [name for name, port in settings.ports().items() if port == 0]
    if not wanted:
        return settings
    sockets: list[socket.socket] = []
    try:
        for _ in wanted:  # all held open at once, so the kernel hands out distinct ports
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(probe)
            probe.bind((settings.bind_address, 0))
        ports = {f"{name}_port": probe.getsockname()[1] for name, probe in zip(wanted, sockets, strict=True)}
    finally:
        for probe in sockets:
            probe.close()
    return settings.model_copy(update=ports)


class Stack:
    """One compose project. Construct with resolved Settings; nothing here reads the environment."""

    def __init__(self, settings: Settings, network_of: Stack | None = None) -> None:
        """network_of: a Stack of the same project constructed just before (the same start with other ports),
        whose world network this one takes instead of asking Docker again."""
        self.settings = settings
        self.files = stack_files_dir()
        self.tag = image_tag(self.files)
        self._by_service: dict[str, Container] = {}
        self.services = (SERVICES + (WORLD_SERVICES if settings.world else ())
                         + (WEBMAIL_SERVICES if settings.webmail else ()))
        self._subnet_checked = False  # against Docker's networks by this process, just now (_pick_subnet)
        if network_of is not None and settings.world and network_of.network is not None:
            self.network: world_network.StackNetwork | None = network_of.network
            self._subnet_checked = network_of._subnet_checked
        else:
            self.network = self._world_network() if settings.world else None
        self.backend = self._backend_subnet() if settings.lmtp_auth_tcp else None
        self.docker = self._client()
        self._world_files: Future[bool] | None = None  # prepare()'s rendering, done by the time containers start

    def _client(self) -> DockerClient:
        settings = self.settings
        layers = (  # in this order; an optional part's owner labels right after it, for disposable stacks
            ("compose.db-port.yaml", settings.db_port is not None),
            ("compose.ephemeral.yaml", settings.ephemeral),
            ("compose.queue-in-memory.yaml", settings.queue_in_memory),
            ("compose.world.yaml", settings.world),
            ("compose.world-ephemeral.yaml", settings.world and settings.ephemeral),
            ("compose.webmail.yaml", settings.webmail),
            ("compose.webmail-ephemeral.yaml", settings.webmail and settings.ephemeral),
            ("compose.lmtp-tcp.yaml", settings.lmtp_auth_tcp),
        )
        compose_files = [self.files / "compose.yaml", *(self.files / name for name, wanted in layers if wanted)]
        # Compose interpolates from the shell first: pass our resolved values explicitly, so a stray
        # MAILSTACK_* in the caller's environment never overrides what these settings decided.
        return DockerClient(
            client_call=["env", *(f"{key}={value}" for key, value in self.compose_environment().items()), "docker"],
            compose_files=compose_files,
            compose_project_name=settings.project,
            compose_project_directory=self.files,
        )

    # --- configuration ------------------------------------------------------------------------

    def compose_environment(self) -> dict[str, str]:
        s = self.settings
        env = {
            "MAILSTACK_PROJECT": s.project,
            "MAILSTACK_HOSTNAME": s.hostname,
            "MAILSTACK_BIND_ADDRESS": s.bind_address,
            "MAILSTACK_STATE_DIR": str(s.state_dir),
            "MAILSTACK_IMAGE_TAG": self.tag,
            "MAILSTACK_FAST_RETRY": "1" if s.fast_retry else "0",
            "MAILSTACK_FAST_REFUSALS": "1" if s.fast_refusals else "0",
            "MAILSTACK_MAILBOX_FEATURES": "1" if s.mailbox_features else "0",
            "MAILSTACK_MAIL_FSYNC": s.mail_fsync,
            "MAILSTACK_EPHEMERAL": "true" if s.ephemeral else "false",
            "MAILSTACK_HEALTH_INTERVAL": f"{s.health_interval}s",
        }
        if s.ephemeral:
            env["MAILSTACK_OWNER"] = owner_label()
        for name, port in s.ports().items():
            env[f"MAILSTACK_{name.upper()}_PORT"] = str(port) if port else ""
        if s.db_port is not None:
            env["MAILSTACK_DB_PORT"] = str(s.db_port) if s.db_port else ""
        if self.network is not None:
            env["MAILSTACK_WORLD_SUBNET"] = str(self.network.subnet)
            env["MAILSTACK_WORLD_IP_RANGE"] = str(self.network.ip_range)
            env["MAILSTACK_DMARC_REJECT"] = "1" if s.dmarc_reject else "0"
            for host in ("dns", "outside", "postfix", "dovecot", "mysql", "rspamd"):
                env[f"MAILSTACK_{host.upper()}_IP"] = self.network.ip(host)
        if self.backend is not None:
            env["MAILSTACK_BACKEND_SUBNET"] = str(self.backend)
            env["MAILSTACK_BACKEND_IP_RANGE"] = str(list(self.backend.subnets(prefixlen_diff=1))[1])
            env["MAILSTACK_DOVECOT_INTERNAL_IP"] = str(self.backend.network_address + 2)
        return env

    # --- the internal network (lmtp_auth_tcp) -------------------------------------------------

    def _backend_subnet(self, refused: Iterable[str] = ()) -> ipaddress.IPv4Network:
        """The backend network's subnet: the one chosen before (config/backend-subnet), else the one the network
        has, else a free /27 (remembered by prepare()). Another network taking it meanwhile makes Docker refuse
        to create it: _create picks again."""
        remembered = _read(str(self.settings.config_dir / BACKEND_SUBNET_FILE))
        if remembered and remembered not in refused:
            with suppress(ValueError):
                return ipaddress.IPv4Network(remembered)
        try:
            mine, others = self._networks(BACKEND_NETWORK)
        except (DockerException, OSError, ValueError):
            mine, others = [], []
        for subnet in mine:
            if subnet not in refused and ":" not in subnet:
                return ipaddress.IPv4Network(subnet)
        world = [str(self.network.subnet)] if self.network is not None else []  # same pool, maybe not created yet
        return world_network.pick_subnet([*others, *world, *refused], prefix=27,
                                         seed=f"{self.settings.project}/backend")

    def _remember_backend(self) -> None:
        if self.backend is not None:
            self.settings.config_dir.mkdir(parents=True, exist_ok=True)
            (self.settings.config_dir / BACKEND_SUBNET_FILE).write_text(f"{self.backend}\n")

    @property
    def publishes_domains(self) -> bool:
        """Whether an optional part shows the local domains: the world's DNS and DKIM keys, the webmail's
        autoconfiguration (accounts.publish_local_domains keeps them current)."""
        return self.network is not None or self.settings.webmail

    # --- the world's network ------------------------------------------------------------------

    def _world_network(self, refused: Iterable[str] = ()) -> world_network.StackNetwork:
        """The subnet given in the settings; else the one chosen before (config/world-subnet); else a free
        one. Checked against Docker's networks only when none was chosen yet (check_subnet at start)."""
        given = self.settings.world_subnet
        if given:
            return world_network.stack_network(given)
        remembered = _read(str(self.settings.config_dir / WORLD_SUBNET_FILE)).strip()
        if remembered and remembered not in refused:
            with suppress(MailstackError, ValueError):
                return world_network.stack_network(remembered)
        return self._pick_subnet(refused)

    def _networks(self, network: str = "default") -> tuple[list[str], list[str]]:
        """(this project's network's subnets, every other network's subnets)."""
        cmd = DockerClient().client_config.docker_cmd  # also while __init__ has no compose client yet
        listing = docker_run([*cmd, "network", "ls", "--quiet", "--no-trunc"])
        ids = listing.split()
        found = json.loads(docker_run([*cmd, "network", "inspect", *ids]) or "[]") if ids else []
        ours = f"{self.settings.project}_{network}"
        mine = [sub for net in found if net.get("Name") == ours for sub in world_network.subnets_of(net)]
        others = [sub for net in found if net.get("Name") != ours for sub in world_network.subnets_of(net)]
        return mine, others

    def _pick_subnet(self, refused: Iterable[str] = ()) -> world_network.StackNetwork:
        try:
            mine, others = self._networks()
        except (DockerException, OSError, ValueError):
            mine, others = [], []
        for subnet in mine:  # the network exists already with a stack subnet: keep it
            with suppress(MailstackError, ValueError):
                if subnet not in refused:
                    return world_network.stack_network(subnet)
        subnet = world_network.pick_subnet([*others, *refused], seed=self.settings.project)
        self._subnet_checked = True
        return world_network.stack_network(subnet)

    def check_subnet(self) -> bool:
        """Before compose creates the network: a remembered subnet another network took meanwhile is given up
        for a free one (the world's files are rendered for the new addresses by the caller). True: it moved."""
        if self.network is None or self.settings.world_subnet or self._subnet_checked:
            return False  # a subnet picked just now is free (or compose's create says so: _create tries another)
        mine, others = self._networks()
        subnet = str(self.network.subnet)
        if subnet not in mine and any(self.network.subnet.overlaps(ipaddress.ip_network(o, strict=False))
                                      for o in others if ":" not in o):
            self.repick_subnet(refused=[subnet])
            return True
        return False

    def repick_subnet(self, refused: Iterable[str]) -> None:
        self.network = self._pick_subnet(refused)
        self.docker = self._client()
        self.remember_subnet()

    def remember_subnet(self) -> None:
        if self.network is not None:
            path = self.settings.config_dir / WORLD_SUBNET_FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{self.network.subnet}\n")

    def prepare(self, plan: Plan | None = None, domains: Iterable[str] = ()) -> dict[str, str]:
        """State directory: secrets, TLS material and the rendered SQL configs. Idempotent. With a production
        plan its files replace the flavour's; a stack once made from one keeps them at a plain start."""
        s = self.settings
        domains = list(domains)
        s.state_dir.mkdir(parents=True, exist_ok=True)
        creds = secrets.ensure_secrets(s.state_dir / "secrets")
        self._remember_backend()
        certs.ensure_tls(s.config_dir / "tls", s.hostname)
        if self.network is not None:
            # the domains of last time and the seed's: the DNS and rspamd start with their records and keys
            self.remember_subnet()
            remembered = world_state.remembered_domains(world_state.WorldPaths.of(s))
            # Its DKIM keys (RSA 2048: 0.02-0.15 s each) are made while compose creates the containers; the
            # directories compose mounts exist before it runs, and a domain that is none is refused here, as before.
            world_state.make_directories(s)
            for name in domains:
                dkim.normalize_domain(name)
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailstack-world-files")
            self._world_files = pool.submit(world_state.render, s, self.network, [*remembered, *domains])
            pool.shutdown(wait=False)  # the rendering goes on; its thread ends with it
        else:  # started without its world (again): the other commands see it so (adopt_started)
            (s.config_dir / WORLD_SUBNET_FILE).unlink(missing_ok=True)
        if s.webmail:  # its secret, and the autoconfiguration for the published ports
            webmail.render(s, [*webmail.remembered_domains(s), *domains])
        else:
            webmail.forget(s)
        if plan is None and production_render.from_production(s.config_dir):
            return creds
        schema.render_configs(s.config_dir, schema.flavour(s.schema_flavour), creds["db_mail_password"],
                              s.password_scheme, default_pass_scheme=s.default_pass_scheme)
        if plan is not None:
            production_render.render_plan(s.config_dir, plan, creds["db_mail_password"])
        return creds

    def forget_plan(self) -> None:
        production_render.forget(self.settings.config_dir)

    def data_volumes(self) -> list[str]:
        """The project's volumes (its database, mail and queue) that exist now."""
        try:
            return project_resources(self.settings.project, self.docker.client_config.docker_cmd)["volumes"]
        except DockerException as exc:
            raise _docker_error(exc) from exc

    def has_data(self) -> bool:
        return bool(self.data_volumes())

    def require_no_data(self) -> None:
        """Refuse to load production files into a project that already holds data (its volumes)."""
        volumes = self.data_volumes()
        if volumes:
            project = self.settings.project
            raise MailstackError(
                f"project {project!r} already has data ({len(volumes)} volume(s)): a production copy starts afresh",
                f"use another project (`mailstack -p NAME up --from DIR`), or delete this one's data with "
                f"`mailstack -p {project} down --volumes`; nothing was changed")

    # --- images -------------------------------------------------------------------------------

    def image_names(self) -> list[str]:
        return [f"mailstack-{service}:{self.tag}" for service in self.services]

    def images_present(self) -> bool:
        """All three images for this content hash exist (one CLI call; False when Docker does not answer)."""
        try:
            self._docker("image", "inspect", "--format", "{{.Id}}", *self.image_names())
        except (DockerException, OSError):
            return False
        return True

    def build(self, report: Report, force: bool = False) -> bool:
        """Build the images unless the ones for this content hash exist. Returns True when it built."""
        if not force and self.images_present():
            return False
        report(f"building images (tag {self.tag}; the first build takes a minute)")
        try:
            self.docker.compose.build(quiet=True)
        except DockerException as exc:
            raise _docker_error(exc, "see the build output above; `mailstack build` retries") from exc
        return True

    # --- lifecycle ----------------------------------------------------------------------------

    def check_ports(self) -> None:
        found = {name: port_problem(self.settings.bind_address, port) for name, port in self.settings.ports().items()}
        problems = {name: problem for name, problem in found.items() if problem}
        if not problems:
            return  # the usual case (and always with port 0): no need to ask Docker what runs
        running = {service for service, info in self.snapshot().items() if info.running}
        for name, problem in problems.items():
            if ENDPOINTS[name][0] in running:
                continue  # our own container holds it
            port = self.settings.ports()[name]
            var = self.settings.env_var(f"{name}_port")
            raise MailstackError(
                f"cannot publish {name} on {self.settings.bind_address}:{port}: {problem}",
                f"set {var} to a free port (in .env or the environment), e.g. {var}={_suggest(port)}",
            )

    def start(self, report: Report) -> None:
        """Create with compose, then start all three containers at once. compose.yaml's health
        conditions hold for plain `docker compose up`; here wait_ready probes readiness directly, which is
        quicker than Docker's health timer (Docker 20.10 has no start_interval)."""
        self.check_ports()
        self.forget_containers()
        try:
            self._create()
            self.world_files_ready()
            ids = self._service_ids()
            self._by_service.update({service: self._handle(cid) for service, cid in ids.items()})
            # One `docker start` per container, concurrently: the CLI starts a list one after the other.
            with ThreadPoolExecutor(max_workers=len(ids) or 1) as pool:
                started = [pool.submit(self._docker, "container", "start", cid) for cid in ids.values()]
            for future in started:
                future.result()
        except DockerException as exc:
            stderr = exc.stderr or exc.stdout or ""
            if "port is already allocated" in stderr or "address already in use" in stderr:
                raise PortTaken(exc.docker_command, exc.return_code, stderr,
                                "another program took one of the stack's ports: choose other ports") from exc
            raise _docker_error(exc, "`mailstack logs` shows what the containers said") from exc

    def _create(self, attempts: int = 3) -> None:
        """compose up without starting. With a world: its network's subnet may have been taken by another
        network since it was chosen (a stack starting beside this one): then another, and again."""
        if self.network is not None:
            if self.check_subnet():  # prepare() rendered the world's files for the old addresses
                self.world_files_ready()
                world_state.render(self.settings, self.network)
        else:
            self._remove_world_containers()
        for attempt in range(1, attempts + 1):
            try:
                # remove_orphans: the world's containers of a stack now started without it
                self.docker.compose.up(detach=True, quiet=True, no_build=True, start=False, remove_orphans=True)
                return
            except DockerException as exc:
                said = exc.stderr or exc.stdout or ""
                # Docker 20.10 says "Pool overlaps with other one" (IPAM) or "networks have overlapping IPv4"
                if "overlap" not in said or attempt == attempts:
                    raise
                if self.backend is not None and f"{self.settings.project}_{BACKEND_NETWORK}" in said:
                    self.backend = self._backend_subnet(refused=[str(self.backend)])
                    self._remember_backend()
                    self.docker = self._client()
                    continue
                if self.network is None:
                    raise
                self.repick_subnet(refused=[str(self.network.subnet)])
                self.world_files_ready()
                world_state.render(self.settings, self.network)

    def world_files_ready(self) -> None:
        """Wait for prepare()'s rendering of the world's files (its failure is raised here)."""
        pending, self._world_files = self._world_files, None
        if pending is not None:
            pending.result()

    def _remove_world_containers(self) -> None:
        """A stack started without its world after one with it: compose recreates the network (its subnet is no
        longer fixed), which it cannot while the world's containers (orphans now) are still attached."""
        ids = self._ids_or_none()
        world = [container_id for service, container_id in ids.items() if service in WORLD_SERVICES]
        if world:
            self._docker("container", "rm", "--force", *world)
            self.forget_containers()

    def sync_world(self, domains: Iterable[str]) -> None:
        """The world's files for these local domains (DNS records, a DKIM key for each), applied in the running
        containers: rspamd signs with the keys, the DNS serves the records once dns-reload returns."""
        if self.network is None:
            return
        if world_state.render(self.settings, self.network, domains):  # new records (and keys, if any)
            self.exec("rspamd", ["/usr/local/bin/dkim-sync.sh"])
            self.exec("dns", ["/usr/local/bin/dns-reload"])

    def down(self, volumes: bool = False) -> None:
        self.forget_containers()
        try:
            self.docker.compose.down(volumes=volumes, remove_orphans=True, quiet=True, timeout=10)
            # compose removes only the networks its files name: a stack started with compose.lmtp-tcp.yaml and
            # taken down without it keeps its `backend` network. Every container of the project is gone now.
            leftover = self._docker("network", "ls", "--quiet", "--filter", f"label={LABEL_COMPOSE_PROJECT}="
                                    f"{self.settings.project}").split()
            if leftover:
                _remove(self.docker.client_config.docker_cmd, ["network", "rm", *leftover], strict=False)
        except DockerException as exc:
            raise _docker_error(exc) from exc

    def destroy(self) -> None:
        """Remove the project's containers (killed, not stopped), volumes and network: for disposable stacks,
        whose data nobody keeps. About a third of `down --volumes`, which stops each container gracefully."""
        self.forget_containers()
        # Only what is labelled disposable: volumes that were there before (a `make up` stack's) stay.
        remove_project(self.settings.project, self.docker.client_config.docker_cmd, strict=True,
                       disposable_only=True)

    def stop_service(self, service: str) -> None:
        self.docker.compose.stop([service])

    def start_service(self, service: str) -> None:
        """Start a stopped service's container; wait_ready tells when it serves. Not `compose start`: that
        first waits until Docker's own health timer has seen the service's dependencies healthy: on a stack
        younger than one health interval (health_interval) that took up to an interval (9–10 s measured at 10 s)."""
        self._docker("container", "start", self.container(service).id)

    def restart_service(self, service: str) -> None:
        self.docker.compose.restart([service])

    def kill_service(self, service: str) -> None:
        self.docker.compose.kill([service])

    # --- inspection ---------------------------------------------------------------------------

    def _docker(self, *args: str) -> str:
        return docker_run([*self.docker.client_config.docker_cmd, *args])

    def _handle(self, container_id: str) -> Container:
        """A python-on-whales handle; it inspects lazily, on attribute access."""
        return Container(self.docker.client_config, container_id, is_immutable_id=True)

    def _service_ids(self) -> dict[str, str]:
        """service -> container id, in one `docker container ls` (a `compose ps` costs several times more)."""
        listing = self._docker(
            "container", "ls", "--all", "--no-trunc",
            "--filter", f"label={LABEL_COMPOSE_PROJECT}={self.settings.project}",
            "--filter", "label=com.docker.compose.oneoff=False",
            "--format", f'{{{{.ID}}}}\t{{{{.Label "{LABEL_COMPOSE_SERVICE}"}}}}',
        )
        ids: dict[str, str] = {}
        for line in sorted(listing.splitlines()):
            container_id, _, service = line.partition("\t")
            if service:
                ids.setdefault(service, container_id)
        return {service: ids[service] for service in sorted(ids, key=_service_order)}

    def snapshot(self) -> dict[str, ContainerInfo]:
        """service -> what Docker says about its container now: one inspect of the containers looked up
        before (one listing first when they are not known, or one of them is gone)."""
        known = {service: self._by_service[service].id for service in self.services if service in self._by_service}
        if len(known) == len(self.services):
            try:
                return self._inspect(known.values())
            except DockerException:  # recreated since we looked: look again
                self.forget_containers()
        try:
            ids = self._service_ids()
            if not ids:
                return {}
            try:
                found = self._inspect(ids.values())
            except DockerException as exc:  # one was removed between the two calls: keep the others
                found = self._parse(exc.stdout or "[]")
        except (DockerException, OSError):
            return {}
        for service, info in found.items():
            cached = self._by_service.get(service)
            if cached is None or cached.id != info.id:
                self._by_service[service] = self._handle(info.id)
        return found

    def _inspect(self, ids: Iterable[str]) -> dict[str, ContainerInfo]:
        return self._parse(self._docker("container", "inspect", *ids))

    @staticmethod
    def _parse(output: str) -> dict[str, ContainerInfo]:
        found = [ContainerInfo.from_inspect(item) for item in json.loads(output or "[]")]
        return {info.service: info for info in found if info.service}

    def containers(self) -> list[Container]:
        return [self._handle(cid) for cid in self._ids_or_none().values()]

    def _ids_or_none(self) -> dict[str, str]:
        try:
            return self._service_ids()
        except (DockerException, OSError):
            return {}

    def container(self, service: str) -> Container:
        """The service's container; looked up once and remembered (exec retries with a fresh lookup)."""
        cached = self._by_service.get(service)
        if cached is not None:
            return cached
        for name, container_id in self._ids_or_none().items():
            self._by_service[name] = self._handle(container_id)
        if service not in self._by_service:
            raise StackNotRunning(self.settings.project)
        return self._by_service[service]

    def forget_containers(self) -> None:
        self._by_service.clear()

    def is_running(self, snapshot: Mapping[str, ContainerInfo] | None = None) -> bool:
        found = self.snapshot() if snapshot is None else snapshot
        return all(service in found and found[service].running for service in self.services)

    def require_running(self, services: Sequence[str] = SERVICES) -> None:
        """The stack runs (or at least the given services: the queue tools need only Postfix)."""
        found = self.snapshot()
        if not all(service in found and found[service].running for service in services):
            raise StackNotRunning(self.settings.project)

    def is_disposable(self) -> bool | None:
        """Whether what exists of this project (containers, volumes) is all labelled disposable; None when
        nothing does. A `make up` stack taken down keeps its volumes: they count."""
        labels: list[str] = []
        selector = f"label={LABEL_COMPOSE_PROJECT}={self.settings.project}"
        for kind, extra, name in (("container", ["--all"], "ID"), ("volume", [], "Name")):
            listing = self._docker(kind, "ls", *extra, "--filter", selector,
                                   "--format", f'{{{{.{name}}}}}={{{{.Label "{LABEL_EPHEMERAL}"}}}}')
            labels += [line.rpartition("=")[2] for line in listing.splitlines() if line]
        return all(label == "true" for label in labels) if labels else None

    def mounted_state_dir(self, snapshot: Mapping[str, ContainerInfo] | None = None) -> Path | None:
        """The state directory the running containers were started with (from their TLS bind mount)."""
        found = self.snapshot() if snapshot is None else snapshot
        for info in found.values():
            source = info.mounts.get(TLS_MOUNT)
            if source:
                return Path(source).parent.parent
        return None

    def endpoints(self, snapshot: Mapping[str, ContainerInfo] | None = None) -> Endpoints:
        found = self.snapshot() if snapshot is None else snapshot
        endpoints: dict[str, Endpoint] = {}
        for name, (service, port) in ENDPOINTS.items():
            if service not in self.services:
                continue  # an optional part this stack does not have
            host_port = found[service].host_port(port) if service in found else None
            if not host_port:
                raise StackNotRunning(self.settings.project)
            endpoints[name] = Endpoint(self.settings.bind_address, host_port)
        return Endpoints(**endpoints)

    def status(self) -> dict[str, object]:
        """The `status --json` contract: services, endpoints, ca_cert."""
        services: dict[str, dict[str, str | None]] = {name: {"state": "missing", "health": None}
                                                      for name in self.services}
        found = self.snapshot()
        for name, info in found.items():
            if name in services:
                health = info.health
                if health == "starting" and info.running and self.probe(name, info.id)[0]:
                    # Docker has not run its first check yet (every health_interval seconds): ask now
                    health = "healthy"
                services[name] = {"state": info.status, "health": health}
        try:
            endpoints = self.endpoints(found).as_dict()
        except StackNotRunning:
            endpoints = {name: None for name in ENDPOINTS}
        ca = self.settings.ca_cert
        return {"services": services, "endpoints": endpoints, "ca_cert": str(ca) if ca.exists() else None}

    def exec(self, service: str, argv: Sequence[str], input: bytes | None = None, check: bool = True,
             user: str | None = None, container_id: str | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run argv in a service's container. Bytes in, bytes out, exit code kept."""
        target = container_id or self.container(service).id
        command = ["docker", "exec", "-i"] + (["-u", user] if user else []) + [target, *argv]
        result = subprocess.run(command, input=input, capture_output=True, check=False, timeout=120)  # noqa: S603
        if result.returncode in (1, 126) and not container_id and b"No such container" in result.stderr:
            self.forget_containers()  # recreated since we looked: look again, once
            command[-len(argv) - 1] = self.container(service).id
            result = subprocess.run(command, input=input, capture_output=True, check=False, timeout=120)  # noqa: S603
        if check and result.returncode != 0:
            raise CommandError([f"{service}$", *argv], result.returncode,
                               result.stderr.decode(errors="replace") or result.stdout.decode(errors="replace"))
        return result

    def exec_stream(self, service: str, argv: Sequence[str], *, stdin: Path | None = None,
                    stdout: Path | None = None, ok_codes: Sequence[int] = (0,),
                    timeout: float = 600.0, describe: str | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run argv in a service's container with a host file as its stdin or its stdout (a tar or dump
        stream of any size, never held in memory). An exit code outside ok_codes raises CommandError
        (naming the command as `describe` says, e.g. for a `bash -c SCRIPT`)."""
        command = ["docker", "exec", "-i", self.container(service).id, *argv]
        with open(stdin, "rb") if stdin is not None else open(os.devnull, "rb") as source, \
                open(stdout, "wb") if stdout is not None else open(os.devnull, "wb") as sink:
            result = subprocess.run(command, stdin=source, stdout=sink, stderr=subprocess.PIPE,  # noqa: S603
                                    check=False, timeout=timeout)
        if result.returncode not in ok_codes:
            raise CommandError([f"{service}$", *([describe] if describe else argv)], result.returncode,
                               result.stderr.decode(errors="replace"))
        return result

    def logs(self, service: str | None = None, tail_lines: int | None = None) -> str:
        try:
            return self.docker.compose.logs(services=[service] if service else [], tail=str(tail_lines)
                                            if tail_lines else None, no_log_prefix=service is not None)
        except DockerException as exc:
            raise _docker_error(exc) from exc

    def follow_logs(self, service: str | None = None) -> Iterator[tuple[str, bytes]]:
        return self.docker.compose.logs(services=[service] if service else [], follow=True, stream=True)

    def db_address(self) -> tuple[str, int]:
        """Where the orchestrator reaches MariaDB: the published port if any, else the container's address."""
        info = self.snapshot().get("mysql")
        if info is None:
            raise StackNotRunning(self.settings.project)
        if self.settings.db_port is not None:
            host_port = info.host_port(3306)
            if host_port:
                return self.settings.bind_address, host_port
        if info.addresses:
            return info.addresses[0], 3306
        raise MailstackError("MariaDB has no address on the stack's network", "run `mailstack status`")

    # --- readiness ----------------------------------------------------------------------------

    def probe(self, service: str, container_id: str | None = None) -> tuple[bool, str]:
        """One run of the service's own healthcheck script, now (not on Docker's timer)."""
        try:
            result = self.exec(service, HEALTHCHECK, check=False, container_id=container_id)
        except (CommandError, MailstackError, subprocess.TimeoutExpired) as exc:
            return False, str(exc)
        output = (result.stdout + result.stderr).decode(errors="replace").strip()
        return result.returncode == 0, output

    def wait_ready(self, services: Sequence[str] | None = None, timeout: float | None = None,
                   interval: float = 0.05, report: Report | None = None,
                   then: Mapping[str, Callable[[], None]] | None = None) -> None:
        """Poll each service's healthcheck until it passes. Stops early when a container has exited,
        and fails with its last health output and a log tail. then[service], if given, runs as soon as
        that service is ready, while the others are still being waited for; its failure fails the wait."""
        services = self.services if services is None else services
        limit = timeout or self.settings.wait_timeout
        deadline = time.monotonic() + limit
        stop = threading.Event()
        containers = {service: self.container(service) for service in services}
        ready = {service: threading.Event() for service in services}
        pids = {service: info.pid for service, info in self.snapshot().items()}

        def wait_for(service: str) -> None:
            container = containers[service]
            last, next_state_check = "", time.monotonic() + 0.5
            gate = PROBE_AFTER.get(service)
            protocol, ports = LISTEN_FIRST.get(service, ("tcp", ()))
            while not stop.is_set():
                if gate in ready and not ready[gate].is_set():
                    ok, last = False, f"waiting for {gate}"  # its probe would only fail (and log errors)
                elif ports and (seen := listening(pids.get(service, 0), container.id, protocol, ports)) is False:
                    ok, last = False, f"{protocol} {', '.join(map(str, ports))} not listening yet"
                else:  # the health check from the host where it can (stack/netns.py), else by docker exec
                    asked = host_probe(service, pids.get(service, 0), container.id) if ports and seen else None
                    ok, last = asked if asked is not None else self.probe(service, container.id)
                if ok:
                    if report:
                        report(f"{service} ready")
                    ready[service].set()
                    if then and service in then:
                        then[service]()
                    return
                now = time.monotonic()
                # A dead container will never pass: say so at once. While its main process lives (seen in this
                # machine's /proc, where the engine runs here) it is running: no `docker inspect` needed.
                if now >= next_state_check and not runs_in(pids.get(service, 0), container.id):
                    next_state_check = now + 0.5
                    state = self._state(container)
                    with suppress(DockerException, AttributeError):
                        pids[service] = int(container.state.pid or 0)  # restarted: another process
                    if state != "running":
                        raise NotReady(f"{service} stopped while starting (state: {state})\n{self._log_tail(service)}",
                                       f"`mailstack logs {service}` shows the whole log")
                if now > deadline:
                    raise NotReady(
                        f"{service} not ready after {limit:.0f}s; last health output: {tail(last, 3) or 'none'}\n"
                        f"{self._log_tail(service)}",
                        f"`mailstack logs {service}`; a slow machine may need a larger MAILSTACK_WAIT_TIMEOUT",
                    )
                stop.wait(interval)

        failures: list[BaseException] = []
        with ThreadPoolExecutor(max_workers=len(services)) as pool:
            for future in [pool.submit(wait_for, service) for service in services]:
                try:
                    future.result()
                except BaseException as exc:  # noqa: BLE001 - the first failure is raised, the others stop
                    stop.set()
                    failures.append(exc)
        if failures:
            raise failures[0]

    def _state(self, container: Container) -> str:
        try:
            container.reload()
        except DockerException:
            return "missing"
        return "restarting" if container.state.restarting else str(container.state.status)

    def _log_tail(self, service: str, lines: int = 15) -> str:
        try:
            text = self.logs(service, tail_lines=lines)
        except CommandError:
            return ""
        return "last log lines:\n" + tail(text, lines) if text.strip() else ""


def _suggest(port: int) -> int:
    return port + 10000 if port < 55535 else 0


def _service_order(service: str) -> int:
    return SERVICES.index(service) if service in SERVICES else len(SERVICES)


def _owner_pid() -> int:
    return os.getpid()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


_NAMESPACE: list[str] = []


def _namespace() -> str:
    """Where our pids mean something: host name, pid namespace and boot ("host::" without /proc)."""
    if not _NAMESPACE:
        try:
            pidns = re.sub(r"\D", "", os.readlink("/proc/self/ns/pid"))
        except OSError:
            pidns = ""
        _NAMESPACE.append(f"{socket.gethostname()}:{pidns}:{_read('/proc/sys/kernel/random/boot_id')}")
    return _NAMESPACE[0]


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot ("" when unknown): tells a reused pid apart."""
    stat = _read(f"/proc/{pid}/stat")
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


def owner_label(pid: int | None = None) -> str:
    pid = _owner_pid() if pid is None else pid
    return f"{_namespace()}/{pid}/{_start_time(pid)}"


def owner_alive(pid: int, started: str) -> bool:
    if pid <= 0 or not _pid_alive(pid):
        return False
    now = _start_time(pid)
    return not (started and now and now != started)  # the pid was reused by a newer process


def owner_is_gone(labels: Mapping[str, str], here: str | None = None,
                  alive: Callable[[int, str], bool] = owner_alive) -> bool:
    """Whether a disposable stack's owner is certainly gone. When the owner lives in another pid namespace
    (a container sharing the Docker socket, another machine), its pid says nothing here: not gone."""
    here = _namespace() if here is None else here
    owner = labels.get(LABEL_OWNER, "")
    if owner:
        namespace, _, rest = owner.partition("/")
        pid_text, _, started = rest.partition("/")
        if not pid_text.isdigit():
            return False  # not ours to judge
        if namespace != here:
            host, pidns, boot = (namespace.split(":") + ["", ""])[:3]
            here_host, here_pidns, here_boot = (here.split(":") + ["", ""])[:3]
            # this machine and pid namespace before a reboot: every process of then is gone
            return bool(host and pidns and boot) and (host, pidns) == (here_host, here_pidns) and boot != here_boot
        return not alive(int(pid_text), started)
    return True  # a disposable stack without an owner: nobody will remove it but pruning


_GONE_ALREADY = ("no such", "not found", "already in progress")


def _remove(docker_cmd: Sequence[str], args: Sequence[str], strict: bool) -> None:
    try:
        docker_run([*docker_cmd, *args])
    except DockerException as exc:
        said = f"{exc.stderr or ''}{exc.stdout or ''}".lower()
        if strict and not any(marker in said for marker in _GONE_ALREADY):
            raise


def _selectors(project: str, disposable_only: bool) -> tuple[list[str], list[str]]:
    project_only = ["--filter", f"label={LABEL_COMPOSE_PROJECT}={project}"]
    return project_only, project_only + (["--filter", f"label={LABEL_EPHEMERAL}=true"] if disposable_only else [])


def project_resources(project: str, docker_cmd: Sequence[str] | None = None,
                      disposable_only: bool = False) -> dict[str, list[str]]:
    """A compose project's containers (ids), volumes and networks (names), found by label."""
    cmd = list(docker_cmd or DockerClient().client_config.docker_cmd)
    project_only, selector = _selectors(project, disposable_only)
    return {
        "containers": docker_run([*cmd, "container", "ls", "--all", "--quiet", "--no-trunc", *selector]).split(),
        "volumes": docker_run([*cmd, "volume", "ls", "--quiet", *selector]).split(),
        "networks": docker_run([*cmd, "network", "ls", "--format", "{{.Name}}", *project_only]).split(),
    }


def remove_project(project: str, docker_cmd: Sequence[str] | None = None, strict: bool = False,
                   disposable_only: bool = False) -> None:
    """Remove a compose project's containers (forced, with their anonymous volumes), named volumes and
    network, by label. disposable_only: only what is labelled disposable (the network only when no
    container of the project is left). strict: raise what fails, except for things already gone."""
    cmd = list(docker_cmd or DockerClient().client_config.docker_cmd)
    project_only, selector = _selectors(project, disposable_only)
    try:
        for _ in range(3):  # again if a container showed up meanwhile (a `compose up` killed mid-way)
            ids = docker_run([*cmd, "container", "ls", "--all", "--quiet", "--no-trunc", *selector]).split()
            if ids:
                _remove(cmd, ["container", "rm", "--force", "--volumes", *ids], strict)
            volumes = docker_run([*cmd, "volume", "ls", "--quiet", *selector]).split()
            if volumes:
                _remove(cmd, ["volume", "rm", "--force", *volumes], strict)
            if not disposable_only or not docker_run([*cmd, "container", "ls", "--all", "--quiet",
                                                      *project_only]).split():
                networks = docker_run([*cmd, "network", "ls", "--quiet", *project_only]).split()
                if networks:
                    _remove(cmd, ["network", "rm", *networks], strict)
            # else: containers that are not disposable still use the network
            if not docker_run([*cmd, "container", "ls", "--all", "--quiet", *selector]).split():
                return
    except DockerException as exc:
        if strict:
            raise _docker_error(exc, "`mailstack prune` retries; `docker ps -a` shows what is left") from exc


def prune_stale(everything: bool = False) -> list[str]:
    """Remove disposable stacks whose owning process is gone (or all disposable stacks), by label:
    containers, volumes and networks, and their state directories. What testcontainers' reaper does,
    without its image. Never touches stacks not labelled disposable (`make up`, reused, kept), live ones,
    or ones owned in another pid namespace (unless everything=True). Safe to run concurrently."""
    docker_cmd = DockerClient().client_config.docker_cmd
    here = _namespace()
    fmt = "\t".join(f'{{{{.Label "{label}"}}}}' for label in (LABEL_PROJECT, LABEL_OWNER))
    rows: list[str] = []
    try:
        for kind, extra in (("container", ["--all"]), ("volume", [])):
            rows += docker_run([*docker_cmd, kind, "ls", *extra, "--filter", f"label={LABEL_EPHEMERAL}=true",
                                "--format", fmt]).splitlines()
    except (DockerException, OSError):
        return []
    gone: dict[str, bool] = {}  # project -> every owner of its containers and volumes is gone
    for row in rows:
        project, _, owner = row.partition("\t")
        if project:
            verdict = everything or owner_is_gone({LABEL_OWNER: owner}, here)
            gone[project] = gone.get(project, True) and verdict
    stale = {project for project, verdict in gone.items() if verdict}
    for project in sorted(stale):
        remove_project(project, docker_cmd, disposable_only=True)
        shutil.rmtree(stacks_dir() / project, ignore_errors=True)
    # State directories of disposable stacks killed before Docker had anything of theirs.
    with suppress(OSError):
        for directory in stacks_dir().iterdir():
            owner = _read(str(directory / OWNER_FILE))
            if directory.name not in gone and owner and (everything or owner_is_gone({LABEL_OWNER: owner}, here)):
                shutil.rmtree(directory, ignore_errors=True)
                stale.add(directory.name)
    return sorted(stale)


@contextmanager
def torn_down_on_failure(stack: Stack, volumes: bool) -> Iterator[None]:
    """Tear the stack down if the block fails (a failed start leaves nothing behind)."""
    try:
        yield
    except BaseException:
        with suppress(MailstackError):
            stack.down(volumes=volumes)
        raise


