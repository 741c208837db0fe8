"""The only module that talks to Docker and Compose (through python-on-whales).

A Stack is one compose project: its containers, network and volumes, all labelled with the project.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from python_on_whales import Container, DockerClient, DockerException

from mailstack import certs, schema, secrets
from mailstack.errors import CommandError, MailstackError, NotReady, StackNotRunning, tail
from mailstack.settings import Settings, image_tag, stack_files_dir

Report = Callable[[str], None]

SERVICES = ("mysql", "dovecot", "postfix")
# endpoint name -> (service, container port)
ENDPOINTS = {
    "smtp": ("postfix", 25),
    "submission": ("postfix", 587),
    "smtps": ("postfix", 465),
    "imaps": ("dovecot", 993),
    "pop3s": ("dovecot", 995),
}
HEALTHCHECK = ["/usr/local/bin/healthcheck.sh"]
LABEL_PROJECT = "io.mailstack.project"
LABEL_EPHEMERAL = "io.mailstack.ephemeral"
LABEL_OWNER_PID = "io.mailstack.owner-pid"


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Endpoints:
    smtp: Endpoint
    submission: Endpoint
    smtps: Endpoint
    imaps: Endpoint
    pop3s: Endpoint

    def as_dict(self) -> dict[str, str]:
        return {name: str(getattr(self, name)) for name in ENDPOINTS}


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


class Stack:
    """One compose project. Construct with resolved Settings; nothing here reads the environment."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.files = stack_files_dir()
        self.tag = image_tag(self.files)
        self._by_service: dict[str, Container] = {}
        compose_files = [self.files / "compose.yaml"]
        if settings.db_port is not None:
            compose_files.append(self.files / "compose.db-port.yaml")
        # Compose interpolates from the shell first: pass our resolved values explicitly, so a stray
        # MAILSTACK_* in the caller's environment never overrides what these settings decided.
        self.docker = DockerClient(
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
            "MAILSTACK_MAIL_FSYNC": s.mail_fsync,
            "MAILSTACK_EPHEMERAL": "true" if s.ephemeral else "false",
            "MAILSTACK_OWNER_PID": str(_owner_pid()) if s.ephemeral else "0",
        }
        for name, port in s.ports().items():
            env[f"MAILSTACK_{name.upper()}_PORT"] = str(port) if port else ""
        if s.db_port is not None:
            env["MAILSTACK_DB_PORT"] = str(s.db_port) if s.db_port else ""
        return env

    def prepare(self) -> dict[str, str]:
        """State directory: secrets, TLS material and the rendered SQL configs. Idempotent."""
        s = self.settings
        s.state_dir.mkdir(parents=True, exist_ok=True)
        creds = secrets.ensure_secrets(s.state_dir / "secrets")
        certs.ensure_tls(s.config_dir / "tls", s.hostname)
        schema.render_configs(s.config_dir, schema.flavour(s.schema_flavour), creds["db_mail_password"],
                              s.password_scheme)
        return creds

    # --- images -------------------------------------------------------------------------------

    def image_names(self) -> list[str]:
        return [f"mailstack-{service}:{self.tag}" for service in SERVICES]

    def images_present(self) -> bool:
        return all(self.docker.image.exists(name) for name in self.image_names())

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
        running = {c.config.labels.get("com.docker.compose.service") for c in self.containers() if c.state.running}
        for name, port in self.settings.ports().items():
            service = ENDPOINTS[name][0]
            if service in running:
                continue
            problem = port_problem(self.settings.bind_address, port)
            if problem:
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
            self.docker.compose.up(detach=True, quiet=True, no_build=True, start=False)
            self.docker.container.start([c.id for c in self.containers()])
        except DockerException as exc:
            raise _docker_error(exc, "`mailstack logs` shows what the containers said") from exc

    def down(self, volumes: bool = False) -> None:
        self.forget_containers()
        try:
            self.docker.compose.down(volumes=volumes, remove_orphans=True, quiet=True, timeout=10)
        except DockerException as exc:
            raise _docker_error(exc) from exc

    def stop_service(self, service: str) -> None:
        self.docker.compose.stop([service])

    def start_service(self, service: str) -> None:
        self.docker.compose.start([service])

    def restart_service(self, service: str) -> None:
        self.docker.compose.restart([service])

    def kill_service(self, service: str) -> None:
        self.docker.compose.kill([service])

    # --- inspection ---------------------------------------------------------------------------

    def containers(self) -> list[Container]:
        try:
            return self.docker.compose.ps(all=True)
        except DockerException:
            return []

    def container(self, service: str) -> Container:
        """The service's container; looked up once and remembered (exec retries with a fresh lookup)."""
        cached = self._by_service.get(service)
        if cached is not None:
            return cached
        for container in self.containers():
            name = container.config.labels.get("com.docker.compose.service")
            if name:
                self._by_service[name] = container
        if service not in self._by_service:
            raise StackNotRunning(self.settings.project)
        return self._by_service[service]

    def forget_containers(self) -> None:
        self._by_service.clear()

    def is_running(self) -> bool:
        states = {c.config.labels.get("com.docker.compose.service"): c.state.running for c in self.containers()}
        return all(states.get(service) for service in SERVICES)

    def require_running(self) -> None:
        if not self.is_running():
            raise StackNotRunning(self.settings.project)

    def endpoints(self) -> Endpoints:
        by_service = {c.config.labels.get("com.docker.compose.service"): c for c in self.containers()}
        found: dict[str, Endpoint] = {}
        for name, (service, port) in ENDPOINTS.items():
            container = by_service.get(service)
            bindings = (container.network_settings.ports or {}).get(f"{port}/tcp") if container else None
            if not bindings:
                raise StackNotRunning(self.settings.project)
            found[name] = Endpoint(self.settings.bind_address, int(bindings[0]["HostPort"]))
        return Endpoints(**found)

    def status(self) -> dict[str, object]:
        """The `status --json` contract: services, endpoints, ca_cert."""
        services: dict[str, dict[str, str | None]] = {name: {"state": "missing", "health": None} for name in SERVICES}
        for c in self.containers():
            name = c.config.labels.get("com.docker.compose.service")
            if name in services:
                health = c.state.health.status if c.state.health else None
                services[name] = {"state": c.state.status, "health": health}
        try:
            endpoints: dict[str, str | None] = self.endpoints().as_dict()
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
        container = self.container("mysql")
        if self.settings.db_port is not None:
            bindings = (container.network_settings.ports or {}).get("3306/tcp")
            if bindings:
                return self.settings.bind_address, int(bindings[0]["HostPort"])
        for network in (container.network_settings.networks or {}).values():
            if network.ip_address:
                return network.ip_address, 3306
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

    def wait_ready(self, services: Sequence[str] = SERVICES, timeout: float | None = None,
                   interval: float = 0.05, report: Report | None = None) -> None:
        """Poll each service's healthcheck until it passes. Stops early when a container has exited,
        and fails with its last health output and a log tail."""
        limit = timeout or self.settings.wait_timeout
        deadline = time.monotonic() + limit
        stop = threading.Event()
        containers = {service: self.container(service) for service in services}

        def wait_for(service: str) -> None:
            container = containers[service]
            last, next_state_check = "", time.monotonic() + 0.5
            while not stop.is_set():
                ok, last = self.probe(service, container.id)
                if ok:
                    if report:
                        report(f"{service} ready")
                    return
                now = time.monotonic()
                if now >= next_state_check:  # a dead container will never pass: say so at once
                    next_state_check = now + 0.5
                    state = self._state(container)
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


def prune_stale(everything: bool = False) -> list[str]:
    """Remove disposable stacks whose owning process is gone (or all disposable stacks), by label:
    containers, volumes and networks. What testcontainers' reaper does, without its image."""
    docker = DockerClient()
    try:
        containers = docker.container.list(all=True, filters=[("label", f"{LABEL_EPHEMERAL}=true")])
    except DockerException:
        return []
    stale: set[str] = set()
    for container in containers:
        labels = container.config.labels or {}
        owner = int(labels.get(LABEL_OWNER_PID, "0") or 0)
        if everything or owner == 0 or not _pid_alive(owner):
            stale.add(labels.get(LABEL_PROJECT, ""))
    stale.discard("")
    for project in sorted(stale):
        selector = [("label", f"com.docker.compose.project={project}")]
        members = docker.container.list(all=True, filters=selector)
        if members:
            docker.container.remove(members, force=True, volumes=True)
        volumes = docker.volume.list(filters=selector)
        if volumes:
            docker.volume.remove(volumes)
        networks = docker.network.list(filters=selector)
        if networks:
            docker.network.remove(networks)
        shutil.rmtree(Path(tempfile.gettempdir()) / "mailstack-stacks" / project, ignore_errors=True)
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


