"""The generated half of the Docker Swarm deployment: deploy/swarm/stack.yaml (kept in git) names no secret; the
overlay rendered here (`secrets.yaml` in a directory git ignores, by default the state directory's swarm/) gives
each service its files as swarm secrets, and `environment()` the values the stack file interpolates.

A swarm secret cannot be changed, so each one is named after its content (`<project>-<service>-<file>-<hash>`):
a redeploy with a changed file creates a new secret and moves the service to it; stack/swarm.py removes the ones no
service uses afterwards. Nothing here talks to Docker.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from mailstack import deployment
from mailstack.deployment import TLS_FILES
from mailstack.secrets import SECRET_NAMES
from mailstack.settings import MAIL_PORT_NAMES, Settings, stack_files_dir
from mailstack.world import network as world_network

STORAGE_LABEL = "io.mailstack.storage"  # the node MariaDB and Dovecot (and their volumes) live on
BACKEND_POOL = ipaddress.IPv4Network("10.214.0.0/16")  # beside the world networks' 10.213/16; not Docker's pools
BACKEND_SUBNET_FILE = "backend-subnet"
OVERLAY_FILE = "secrets.yaml"
_HEADER = ("# Rendered by `mailstack deploy swarm`: this deployment's passwords, TLS files and SQL configs as swarm\n"
           "# secrets, over deploy/swarm/stack.yaml. Never commit this directory.\n")


def stack_file() -> Path:
    return stack_files_dir() / "deploy" / "swarm" / "stack.yaml"


def default_dir(settings: Settings) -> Path:
    return settings.state_dir / "swarm"


@dataclass(frozen=True)
class SecretFile:
    service: str
    source: Path  # the rendered file
    target: str  # where the service's containers see it

    def name(self, project: str) -> str:
        """The swarm secret's name: Docker allows 64 characters of [a-zA-Z0-9-_.]."""
        digest = hashlib.sha256(self.source.read_bytes()).hexdigest()[:12]
        stem = re.sub(r"[^A-Za-z0-9_.-]", "-", f"{project}-{self.service}-{self.source.name}")
        return f"{stem[:64 - 13]}-{digest}"


@dataclass(frozen=True)
class Rendered:
    directory: Path
    overlay: Path
    backend_subnet: ipaddress.IPv4Network
    secret_names: tuple[str, ...]

    @property
    def compose_files(self) -> tuple[Path, Path]:
        return stack_file(), self.overlay


def secret_files(directory: Path) -> list[SecretFile]:
    """What each service reads, where the compose stack mounts it (compose.yaml: /run/secrets, the config dirs)."""
    config, tls = directory / "config", directory / "tls"
    files = [SecretFile("mysql", directory / "secrets" / name, f"/run/secrets/{name}") for name in SECRET_NAMES]
    files.append(SecretFile("mysql", config / "mysql" / "schema.sql", "/run/mailstack/mysql/schema.sql"))
    for service in ("dovecot", "postfix"):
        files += [SecretFile(service, path, f"/run/mailstack/{service}/{path.name}")
                  for path in sorted((config / service).iterdir()) if path.is_file()]
        files += [SecretFile(service, tls / name, f"/run/mailstack/tls/{name}") for name in TLS_FILES]
    return files


def overlay(project: str, files: Iterable[SecretFile], db_port: int | None = None) -> dict[str, object]:
    """Each service's secrets; with db_port, MariaDB published in host mode on its node (to seed it from
    outside the swarm, as `MAILSTACK_DB_PORT` does for a compose stack)."""
    services: dict[str, dict[str, list[dict[str, object]]]] = {}
    top: dict[str, dict[str, str]] = {}
    for item in files:
        name = item.name(project)
        key = name.removeprefix(f"{project}-")  # a stack-local key; `name` is the secret's real name
        services.setdefault(item.service, {"secrets": []})["secrets"].append(
            {"source": key, "target": item.target, "mode": 0o400})
        top[key] = {"name": name, "file": str(item.source)}
    if db_port:
        services["mysql"]["ports"] = [{"target": 3306, "published": db_port, "protocol": "tcp", "mode": "host"}]
    return {"version": "3.8", "services": services, "secrets": top}


def backend_subnet(directory: Path, taken: Iterable[str], project: str) -> ipaddress.IPv4Network:
    """The backend overlay network's subnet: the one chosen before (an overlay network's subnet cannot change
    while it exists), else a free /24 of BACKEND_POOL overlapping none of `taken`."""
    path = directory / BACKEND_SUBNET_FILE
    if path.exists():
        return ipaddress.IPv4Network(path.read_text().strip())
    subnet = world_network.pick_subnet(taken, pool=BACKEND_POOL, prefix=24, seed=f"{project}/swarm-backend")
    path.write_text(f"{subnet}\n")
    return subnet


def render(settings: Settings, directory: Path, taken_subnets: Iterable[str] = ()) -> Rendered:
    """Write (or bring up to date) the deployment's files and the secrets overlay in `directory`."""
    directory = directory.resolve()
    deployment.render_files(settings, directory, "mailstack deploy swarm")
    files = secret_files(directory)
    data = overlay(settings.project, files, settings.db_port)
    path = directory / OVERLAY_FILE
    path.write_text(_HEADER + yaml.safe_dump(data, sort_keys=False))
    path.chmod(0o600)
    subnet = backend_subnet(directory, taken_subnets, settings.project)
    return Rendered(directory, path, subnet, tuple(item.name(settings.project) for item in files))


def environment(settings: Settings, rendered: Rendered, tag: str) -> dict[str, str]:
    """What deploy/swarm/stack.yaml interpolates (`docker stack deploy` reads it from its environment)."""
    s = settings
    env = {
        "MAILSTACK_PROJECT": s.project,
        "MAILSTACK_HOSTNAME": s.hostname,
        "MAILSTACK_IMAGE_TAG": tag,
        "MAILSTACK_SWARM_BACKEND_SUBNET": str(rendered.backend_subnet),
        "MAILSTACK_MAIL_FSYNC": s.mail_fsync,
        "MAILSTACK_FAST_RETRY": "1" if s.fast_retry else "0",
        "MAILSTACK_FAST_REFUSALS": "1" if s.fast_refusals else "0",
        "MAILSTACK_MAILBOX_FEATURES": "1" if s.mailbox_features else "0",
    }
    ports = s.ports()
    for name in MAIL_PORT_NAMES:
        env[f"MAILSTACK_{name.upper()}_PORT"] = str(ports[name])
    return env
