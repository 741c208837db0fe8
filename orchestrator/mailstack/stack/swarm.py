"""The stack on a Docker Swarm: `docker stack deploy` of deploy/swarm/stack.yaml with the rendered secrets
(mailstack/swarm.py), waits on the services' tasks, their nodes and endpoints, and `docker stack rm`.

It talks to whichever engine the Docker CLI does (DOCKER_HOST, the current context): a manager of the swarm.
Nothing here ever creates, joins or leaves a swarm: on Docker 20.10 leaving one breaks the embedded DNS of the
engine's bridge networks (docs/scaling.md), so that stays the operator's decision.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from python_on_whales import DockerClient, DockerException
from python_on_whales.utils import run as docker_run

from mailstack import swarm
from mailstack.db import Database
from mailstack.errors import MailstackError, NotReady, tail
from mailstack.seed import SeedFile, seed_database
from mailstack.settings import Settings
from mailstack.stack import ENDPOINTS, SERVICES, Stack
from mailstack.world import network as world_network

Report = Callable[[str], None]
# the compose stack's endpoints (same names, same published-port settings) that a swarm stack has
SWARM_ENDPOINTS = {name: service for name, (service, _) in ENDPOINTS.items() if service in SERVICES}
# A task error that waiting cannot mend: say so at once.
FATAL_TASK_ERRORS = {
    "No such image": "the image is missing on that node: build it there (`mailstack build` with DOCKER_HOST set "
                     "to that node), load it (`docker save mailstack-postfix:TAG | docker -H NODE load`) or "
                     "push all three to a registry every node pulls from",
}


@dataclass(frozen=True)
class Node:
    id: str
    hostname: str
    address: str
    role: str
    state: str
    availability: str
    labels: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_inspect(cls, data: Mapping[str, object]) -> Node:
        status = data.get("Status") or {}
        spec = data.get("Spec") or {}
        manager = data.get("ManagerStatus") or {}
        address = str(status.get("Addr") or "")  # type: ignore[union-attr]
        if address in ("", "0.0.0.0"):  # noqa: S104 - a manager may report it only in its ManagerStatus (addr:2377)
            address = str(manager.get("Addr") or "").rpartition(":")[0]  # type: ignore[union-attr]
        return cls(
            id=str(data.get("ID")),
            hostname=str((data.get("Description") or {}).get("Hostname", "")),  # type: ignore[union-attr]
            address=address,
            role=str(spec.get("Role", "")),  # type: ignore[union-attr]
            state=str(status.get("State", "")),  # type: ignore[union-attr]
            availability=str(spec.get("Availability", "")),  # type: ignore[union-attr]
            labels=dict(spec.get("Labels") or {}),  # type: ignore[union-attr]
        )

    @property
    def is_storage(self) -> bool:
        return self.labels.get(swarm.STORAGE_LABEL) == "true"


@dataclass(frozen=True)
class Task:
    service: str
    node_id: str
    desired: str
    state: str
    error: str

    @property
    def running(self) -> bool:
        return self.state == "running" and self.desired == "running"


class SwarmStack:
    """One `docker stack` on the swarm the Docker CLI talks to, named like the compose project."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.project = settings.project
        self.cmd = DockerClient().client_config.docker_cmd

    def _docker(self, *args: str, env: Mapping[str, str] | None = None) -> str:
        prefix = ["env", *(f"{key}={value}" for key, value in env.items())] if env else []
        return docker_run([*prefix, *self.cmd, *args])

    def service_name(self, service: str) -> str:
        return f"{self.project}_{service}"

    # --- the swarm ----------------------------------------------------------------------------

    def engine_state(self) -> tuple[str, bool, str]:
        """(LocalNodeState, ControlAvailable, NodeID) of the engine the CLI talks to."""
        info = json.loads(self._docker("info", "--format", "{{json .Swarm}}") or "{}")
        return str(info.get("LocalNodeState", "")), bool(info.get("ControlAvailable")), str(info.get("NodeID", ""))

    def require_manager(self) -> str:
        """This engine's node id; refuses an engine that is not a manager of an active swarm."""
        try:
            state, manager, node_id = self.engine_state()
        except (DockerException, OSError, ValueError) as exc:
            raise MailstackError("the Docker engine does not answer", "start it (`mailstack provision`), or set "
                                 "DOCKER_HOST to a swarm manager's engine") from exc
        if state != "active":
            raise MailstackError(
                f"this Docker engine is not in a swarm (state: {state or 'unknown'})",
                "set DOCKER_HOST (or `docker context use`) to a manager of the swarm to deploy on; to make one, "
                "`docker swarm init --advertise-addr ADDR` on the machine that will keep MariaDB and Dovecot "
                "(mailstack never makes or leaves a swarm itself)")
        if not manager:
            raise MailstackError("this Docker engine is a swarm worker: stacks are deployed from a manager",
                                 "set DOCKER_HOST to a manager's engine (`docker node ls` there lists the nodes)")
        return node_id

    def nodes(self) -> list[Node]:
        ids = self._docker("node", "ls", "--quiet").split()
        found = json.loads(self._docker("node", "inspect", *ids) or "[]") if ids else []
        return [Node.from_inspect(item) for item in found]

    def storage_node(self, wanted: str | None, here: str) -> Node:
        """The node labelled for MariaDB's and Dovecot's volumes; labels `wanted` (a hostname or id), or else this
        manager, when none is. Their data lives on that node: a second one is refused, never moved silently."""
        nodes = self.nodes()
        labelled = [node for node in nodes if node.is_storage]
        if wanted is not None:
            chosen = [node for node in nodes if wanted in (node.hostname, node.id)]
            if not chosen:
                raise MailstackError(f"no swarm node is called {wanted!r}",
                                     "nodes: " + ", ".join(f"{n.hostname} ({n.id[:12]})" for n in nodes))
            target = chosen[0]
        elif labelled:
            return labelled[0]
        else:
            target = next(node for node in nodes if node.id == here)
        others = [node for node in labelled if node.id != target.id]
        if others:
            raise MailstackError(
                f"MariaDB's and Dovecot's volumes are on node {others[0].hostname} (label "
                f"{swarm.STORAGE_LABEL}=true), not {target.hostname}: a deployment keeps its data on one node",
                f"leave out --storage-node, or move the data yourself and then "
                f"`docker node update --label-rm {swarm.STORAGE_LABEL} {others[0].hostname}`")
        if not target.is_storage:
            self._docker("node", "update", "--label-add", f"{swarm.STORAGE_LABEL}=true", target.id)
        return target

    def overlay_subnets(self) -> list[str]:
        """Every subnet of the engine's networks (overlay ones are the swarm's, seen from any manager)."""
        ids = self._docker("network", "ls", "--quiet", "--no-trunc").split()
        found = json.loads(self._docker("network", "inspect", *ids) or "[]") if ids else []
        backend = f"{self.project}_backend"
        return [subnet for net in found if net.get("Name") != backend for subnet in world_network.subnets_of(net)]

    # --- deploy, wait, remove -----------------------------------------------------------------

    def deploy(self, rendered: swarm.Rendered, env: Mapping[str, str]) -> None:
        files = [arg for path in rendered.compose_files for arg in ("--compose-file", str(path))]
        try:
            self._docker("stack", "deploy", "--resolve-image", "never", "--prune", *files, self.project, env=env)
        except DockerException as exc:
            raise MailstackError(f"docker stack deploy failed: {tail(exc.stderr or exc.stdout or '')}",
                                 "nothing of the stack was changed when the file was refused; a service "
                                 "that was updated rolls on (`docker stack ps " + self.project + "`)") from exc

    def remove_unused_secrets(self, keep: Sequence[str]) -> list[str]:
        """The stack's secrets of earlier deploys (other contents) that no service uses any more."""
        listing = self._docker("secret", "ls", "--filter", f"label=com.docker.stack.namespace={self.project}",
                               "--format", "{{.Name}}")
        removed = []
        for name in listing.split():
            if name in keep:
                continue
            try:
                self._docker("secret", "rm", name)
                removed.append(name)
            except DockerException:
                pass  # still used by a task being replaced: the next deploy removes it
        return removed

    def tasks(self, service: str) -> list[Task]:
        """The service's tasks meant to run (`docker service ps` + one `docker inspect` of them)."""
        try:
            ids = self._docker("service", "ps", "--quiet", "--filter", "desired-state=running",
                               self.service_name(service)).split()
            found = json.loads(self._docker("inspect", "--type", "task", *ids) or "[]") if ids else []
        except DockerException:
            return []
        return [Task(service, str(item.get("NodeID", "")), str(item.get("DesiredState", "")),
                     str((item.get("Status") or {}).get("State", "")), str((item.get("Status") or {}).get("Err", "")))
                for item in found]

    def services(self) -> dict[str, dict[str, object]]:
        """service -> {mode, running, desired, update} for the stack's services that exist."""
        listing = self._docker("service", "ls", "--filter", f"label=com.docker.stack.namespace={self.project}",
                               "--format", "{{.Name}}\t{{.Mode}}\t{{.Replicas}}")
        found: dict[str, dict[str, object]] = {}
        for line in listing.splitlines():
            name, mode, replicas = (line.split("\t") + ["", "", ""])[:3]
            service = name.removeprefix(f"{self.project}_")
            running, _, desired = replicas.partition(" ")[0].partition("/")
            found[service] = {"mode": mode, "running": int(running or 0), "desired": int(desired or 0)}
        inspected = json.loads(self._docker("service", "inspect", *(self.service_name(name) for name in found))
                               or "[]") if found else []
        for item in inspected:
            service = str((item.get("Spec") or {}).get("Name", "")).removeprefix(f"{self.project}_")
            status = item.get("UpdateStatus") or {}
            if service in found:
                found[service]["update"] = status.get("State", "")
                found[service]["update_message"] = status.get("Message", "")
        return found

    def wait_ready(self, report: Report, timeout: float, interval: float = 1.0) -> None:
        """Until every service runs all its tasks (a task runs once its health check passed) and no update rolls.
        Stops early on a task error waiting cannot mend; on time out says which tasks did what."""
        deadline = time.monotonic() + timeout
        said = ""
        while True:
            services = self.services()
            pending = [name for name in SERVICES if not _settled(services.get(name))]
            if not pending:
                return
            for name in pending:  # failure_action: pause — it will not go on by itself
                if services.get(name, {}).get("update") in ("paused", "rollback_paused"):
                    raise NotReady(f"the update of {self.service_name(name)} is paused: "
                                   f"{services[name].get('update_message') or 'a task failed'}",
                                   f"`docker service ps {self.service_name(name)}` shows why; fix it and deploy "
                                   "again (or `docker service update --rollback`)")
            tasks = [task for name in pending for task in self.tasks(name)]
            for task in tasks:
                for needle, hint in FATAL_TASK_ERRORS.items():
                    if needle in task.error:
                        raise NotReady(f"{self.service_name(task.service)} cannot start on {task.node_id}: "
                                       f"{task.error}\n  hint: {hint}")
            line = "waiting for " + ", ".join(
                f"{name} {services[name]['running']}/{services[name]['desired']}" if name in services else
                f"{name} (not created)" for name in pending)
            if line != said:
                report(line)
                said = line
            if time.monotonic() >= deadline:
                raise NotReady(self._not_ready(pending, tasks, timeout))
            time.sleep(interval)

    def _not_ready(self, pending: Sequence[str], tasks: Sequence[Task], timeout: float) -> str:
        lines = [f"the swarm stack {self.project!r} is not ready after {timeout:.0f} s: {', '.join(pending)}"]
        for task in tasks:
            lines.append(f"  {self.service_name(task.service)} on {task.node_id}: {task.state}"
                         + (f" ({task.error})" if task.error else ""))
        for service in pending:
            try:
                logs = self._docker("service", "logs", "--tail", "10", "--no-task-ids", self.service_name(service))
            except DockerException as exc:
                logs = exc.stderr or ""
            if logs.strip():
                lines.append(f"  last lines of {service}:\n    " + tail(logs, 10).replace("\n", "\n    "))
        return "\n".join(lines)

    def remove(self, report: Report, timeout: float = 60.0, interval: float = 0.5) -> None:
        """`docker stack rm`, then until its services and networks are gone (a redeploy right after would find
        the old networks still attached). Volumes stay: they are each node's, kept for the next deploy."""
        self._docker("stack", "rm", self.project)
        report(f"removing the swarm stack {self.project!r} (volumes kept)")
        deadline = time.monotonic() + timeout
        label = f"label=com.docker.stack.namespace={self.project}"
        while True:
            left = (self._docker("service", "ls", "--quiet", "--filter", label).split()
                    + self._docker("network", "ls", "--quiet", "--filter", label).split())
            if not left:
                return
            if time.monotonic() >= deadline:
                raise NotReady(f"the swarm stack {self.project!r} still has {len(left)} service(s)/network(s) "
                               f"after {timeout:.0f} s", f"`docker stack ps {self.project}` shows what is left")
            time.sleep(interval)

    # --- what runs where ----------------------------------------------------------------------

    def deployed(self) -> bool:
        """Whether this engine manages a swarm with a stack of this name."""
        try:
            state, manager, _ = self.engine_state()
            if state != "active" or not manager:
                return False
            return bool(self._docker("service", "ls", "--quiet", "--filter",
                                     f"label=com.docker.stack.namespace={self.project}").split())
        except (DockerException, OSError, ValueError):
            return False

    def endpoints(self, nodes: Sequence[Node]) -> dict[str, list[str]]:
        """endpoint name -> "address:port" on every node whose task of that service runs (Postfix: each node's)."""
        by_id = {node.id: node for node in nodes}
        ports = self.settings.ports()
        where = {service: [task.node_id for task in self.tasks(service) if task.running]
                 for service in set(SWARM_ENDPOINTS.values())}
        return {name: [f"{by_id[node_id].address}:{ports[name]}" for node_id in where[service] if node_id in by_id]
                for name, service in SWARM_ENDPOINTS.items()}

    def status(self) -> dict[str, object]:
        """The `status --json` contract (services, endpoints, ca_cert), plus `swarm`: each endpoint on every
        node that serves it, and the nodes."""
        services: dict[str, dict[str, str | None]] = {}
        found = self.services()
        for name in SERVICES:
            info = found.get(name)
            if info is None:
                services[name] = {"state": "missing", "health": None}
            elif info["running"] and _settled(info):
                services[name] = {"state": "running", "health": "healthy"}
            else:
                services[name] = {"state": "running" if info["running"] else "created", "health": "starting"}
        nodes = self.nodes()
        every = self.endpoints(nodes)
        here = self.engine_state()[2]
        mine = next((f"{node.address}:" for node in nodes if node.id == here), "")
        # one address per endpoint, as for compose: this node's when it serves it, else the first that does
        endpoints = {name: next((a for a in addresses if a.startswith(mine)), addresses[0]) if addresses else None
                     for name, addresses in every.items()}
        ca = swarm.default_dir(self.settings) / "tls" / "ca.crt"
        return {
            "services": services,
            "endpoints": endpoints,
            "ca_cert": str(ca.resolve()) if ca.exists() else None,
            "swarm": {
                "endpoints": every,
                "nodes": [{"hostname": node.hostname, "address": node.address, "role": node.role,
                           "state": node.state, "storage": node.is_storage} for node in nodes],
            },
        }


def _settled(info: Mapping[str, object] | None) -> bool:
    return (info is not None and int(info["desired"]) > 0  # type: ignore[call-overload]
            and info["running"] == info["desired"] and info.get("update") in ("", "completed", "rollback_completed"))


def deploy(settings: Settings, report: Report, *, directory: Path | None = None, storage_node: str | None = None,
           build: bool = True, seed: SeedFile | None = None, timeout: float = 300.0) -> dict[str, object]:
    """`mailstack deploy swarm`: render the secrets, build the images (on this engine), deploy or update the
    stack, wait until every task runs healthy, remove secrets no service uses any more, seed. Returns status()."""
    bad = [name for name, port in settings.ports().items() if name in SWARM_ENDPOINTS and not port]
    if bad:
        raise MailstackError(f"a swarm publishes fixed ports: {', '.join(bad)} has port 0",
                             "set " + ", ".join(settings.env_var(f"{name}_port") for name in bad) + " to a port")
    if seed is not None and not settings.db_port:
        raise MailstackError("seeding a swarm stack needs MariaDB published on its node",
                             "set MAILSTACK_DB_PORT (e.g. 3306): it is published in host mode on the storage node")
    stack = SwarmStack(settings)
    here = stack.require_manager()
    storage = stack.storage_node(storage_node, here)
    report(f"MariaDB and Dovecot on node {storage.hostname} ({storage.address}); Postfix on every node")
    rendered = swarm.render(settings, directory or swarm.default_dir(settings), stack.overlay_subnets())
    # the three images the stack file names (a compose stack's settings may add the world's and the webmail's)
    compose_stack = Stack(settings.model_copy(update={"world": False, "webmail": False}))
    if build:
        compose_stack.build(report)
    elif not compose_stack.images_present():
        raise MailstackError(f"the images for tag {compose_stack.tag} are not on this engine",
                             "leave out --no-build, or `mailstack build` first")
    report(f"deploying stack {settings.project!r} (images mailstack-*:{compose_stack.tag}, backend "
           f"{rendered.backend_subnet})")
    stack.deploy(rendered, swarm.environment(settings, rendered, compose_stack.tag))
    stack.wait_ready(report, timeout)
    removed = stack.remove_unused_secrets(rendered.secret_names)
    if removed:
        report(f"removed {len(removed)} secret(s) of an earlier deploy")
    if seed is not None:
        password = (rendered.directory / "secrets" / "db_admin_password").read_text().strip()
        database = Database(storage.address, settings.db_port or 0, password, settings.schema_flavour)
        changes = seed_database(database, seed, settings.password_scheme, settings.hash_cost)
        report(f"seeded: {len(changes)} change(s)")
    return stack.status()
