"""Issue 16: the Docker Swarm stack file (deploy/swarm/stack.yaml) kept in step with compose.yaml +
compose.lmtp-tcp.yaml, the rules the issue sets for it (host-mode ports, dnsrr, MariaDB and Dovecot pinned to the
storage node, Postfix global, health checks), and the rendered secrets overlay: every file a compose stack mounts
from its state directory reaches the same path in the swarm's containers, as a secret named after its content."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from mailstack import swarm
from mailstack.settings import load_settings, stack_files_dir

ROOT = stack_files_dir()
SERVICES = ("mysql", "dovecot", "postfix")


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / name).read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """compose.yaml with compose.lmtp-tcp.yaml's environment over it (the swarm always uses TCP)."""
    base, tcp = load("compose.yaml"), load("compose.lmtp-tcp.yaml")
    for name, extra in tcp["services"].items():
        base["services"][name].setdefault("environment", {}).update(extra.get("environment", {}))
    return base


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    return yaml.safe_load(swarm.stack_file().read_text())


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> swarm.Rendered:
    root = tmp_path_factory.mktemp("swarm")
    settings = load_settings(project="swarm-unit", state_dir=root / "state", hostname="mail.swarm.example.test",
                             world=False, webmail=False, db_port=13306)
    return swarm.render(settings, root / "swarm", taken_subnets=["10.214.0.0/17"])


def _image(image: str) -> str:
    return image.partition(":")[0]


def _container_ports(ports: list[Any]) -> set[int]:
    return {int(p["target"]) if isinstance(p, dict) else int(str(p).rpartition(":")[2]) for p in ports}


def test_same_services_images_and_commands(compose: dict[str, Any], stack: dict[str, Any]) -> None:
    assert set(stack["services"]) == set(compose["services"]) == set(SERVICES)
    for name in SERVICES:
        ours, theirs = stack["services"][name], compose["services"][name]
        assert _image(ours["image"]) == _image(theirs["image"]) == f"mailstack-{name}"
        assert "MAILSTACK_IMAGE_TAG" in ours["image"]
        assert ours["healthcheck"]["test"] == theirs["healthcheck"]["test"]
        assert ours.get("hostname") == theirs.get("hostname")
        assert "build" not in ours and "depends_on" not in ours  # the v3 format docker stack deploy reads


def test_same_environment(compose: dict[str, Any], stack: dict[str, Any]) -> None:
    for name in SERVICES:
        ours, theirs = stack["services"][name]["environment"], compose["services"][name]["environment"]
        assert set(ours) == set(theirs), name
        for key, value in theirs.items():
            if key == "MAILSTACK_INTERNAL_LISTEN":  # compose: Dovecot's fixed address; swarm: the subnet's own
                assert "MAILSTACK_SWARM_BACKEND_SUBNET" in ours[key]
            else:
                assert ours[key] == value, (name, key)


def test_same_container_ports_all_in_host_mode(compose: dict[str, Any], stack: dict[str, Any]) -> None:
    for name in SERVICES:
        ours, theirs = stack["services"][name].get("ports", []), compose["services"][name].get("ports", [])
        assert _container_ports(ours) == _container_ports(theirs), name
        for port in ours:  # no routing mesh: it needs IPVS and hides the clients' addresses
            assert port["mode"] == "host" and "MAILSTACK_" in str(port["published"]), port


def test_same_volumes_and_every_bind_mount_becomes_secrets(compose: dict[str, Any], stack: dict[str, Any],
                                                          rendered: swarm.Rendered) -> None:
    overlay = yaml.safe_load(rendered.overlay.read_text())
    for name in SERVICES:
        theirs = compose["services"][name].get("volumes", [])
        named = {v.partition(":")[2].partition(":")[0] for v in theirs if not v.startswith("$")}
        named.discard("/var/spool/postfix/private")  # the unix sockets: TCP in a swarm
        assert {v.partition(":")[2] for v in stack["services"][name]["volumes"]} == named, name
        targets = [s["target"] for s in overlay["services"][name]["secrets"]]
        for bind in (v for v in theirs if v.startswith("$")):
            directory = bind.removesuffix(":ro").rpartition(":")[2]
            assert any(t.startswith(directory + "/") for t in targets), (name, directory)
        for secret in compose["services"][name].get("secrets", []):
            assert f"/run/secrets/{secret}" in targets, (name, secret)


def test_swarm_rules(stack: dict[str, Any]) -> None:
    services = stack["services"]
    storage = f"node.labels.{swarm.STORAGE_LABEL} == true"
    for name in ("mysql", "dovecot"):  # their volumes are local to a node
        deploy = services[name]["deploy"]
        assert deploy["replicas"] == 1 and storage in deploy["placement"]["constraints"]
    assert services["postfix"]["deploy"]["mode"] == "global"
    assert "placement" not in services["postfix"]["deploy"]
    for name in SERVICES:
        assert services[name]["deploy"]["endpoint_mode"] == "dnsrr"  # no VIPs: no IPVS here
        assert services[name]["deploy"]["update_config"]["order"] == "stop-first"  # host ports, one volume
        assert services[name]["environment"].get("MAILSTACK_LMTP_AUTH_TCP", "1") == "1"
    backend = stack["networks"]["backend"]
    assert backend["driver"] == "overlay" and backend["internal"] is True
    assert set(services["postfix"]["networks"]) == set(services["dovecot"]["networks"]) == {"default", "backend"}
    assert services["mysql"]["networks"] == ["default"]  # MariaDB never reaches LMTP/auth
    assert services["dovecot"]["networks"]["backend"]["aliases"] == ["dovecot-internal"]
    assert services["postfix"]["environment"]["MAILSTACK_DOVECOT_INTERNAL"] == "dovecot-internal"


def test_overlay_secrets_are_named_after_their_content(rendered: swarm.Rendered, tmp_path: Path) -> None:
    overlay = yaml.safe_load(rendered.overlay.read_text())
    names = [entry["name"] for entry in overlay["secrets"].values()]
    assert len(names) == len(set(names)) == len(rendered.secret_names)
    for key, entry in overlay["secrets"].items():
        assert re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", entry["name"]), entry["name"]
        assert entry["name"] == f"swarm-unit-{key}"
        source = Path(entry["file"])
        assert source.is_file() and (source.suffix == ".crt" or source.stat().st_mode & 0o077 == 0), source
    assert rendered.directory.stat().st_mode & 0o077 == 0
    # one changed file, one new name; the others stay
    before = dict(zip(overlay["secrets"], names, strict=True))
    changed = next(f for f in swarm.secret_files(rendered.directory) if f.source.name == "schema.sql")
    old = changed.name("swarm-unit")
    changed.source.write_text(changed.source.read_text() + "-- changed\n")
    assert changed.name("swarm-unit") != old
    others = [f.name("swarm-unit") for f in swarm.secret_files(rendered.directory) if f.source != changed.source]
    assert set(others) <= set(before.values())
    assert overlay["services"]["mysql"]["ports"] == [
        {"target": 3306, "published": 13306, "protocol": "tcp", "mode": "host"}]


def test_backend_subnet_is_free_and_kept(rendered: swarm.Rendered) -> None:
    subnet = rendered.backend_subnet
    assert subnet.subnet_of(swarm.BACKEND_POOL) and not subnet.subnet_of(swarm.ipaddress.IPv4Network("10.214.0.0/17"))
    assert swarm.backend_subnet(rendered.directory, [str(subnet)], "swarm-unit") == subnet  # remembered


def test_environment_fills_every_variable_of_the_stack_file(rendered: swarm.Rendered) -> None:
    settings = load_settings(project="swarm-unit", world=False, webmail=False, smtp_port=2525)
    env = swarm.environment(settings, rendered, "abc123")
    used = set(re.findall(r"\$\{(MAILSTACK_[A-Z0-9_]+)", swarm.stack_file().read_text()))
    assert used <= set(env), used - set(env)
    assert env["MAILSTACK_SMTP_PORT"] == "2525" and env["MAILSTACK_IMAGE_TAG"] == "abc123"


@pytest.mark.skipif(shutil.which("docker") is None, reason="no Docker CLI")
def test_docker_stack_config_accepts_both_files(rendered: swarm.Rendered) -> None:
    """`docker stack config` (offline: no engine, no swarm) merges the stack file and the overlay as deploy will."""
    settings = load_settings(project="swarm-unit", world=False, webmail=False)
    env = swarm.environment(settings, rendered, "abc123")
    args = [arg for path in rendered.compose_files for arg in ("-c", str(path))]
    result = subprocess.run(["docker", "stack", "config", *args], capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "DOCKER_HOST": "unix:///nonexistent",
                                 **env}, check=False)
    if result.returncode != 0 and "is not a docker command" in result.stderr:
        pytest.skip("this Docker CLI has no `docker stack config`")
    assert result.returncode == 0, result.stderr
    merged = yaml.safe_load(result.stdout)
    for name in SERVICES:
        service = merged["services"][name]
        assert service["image"] == f"mailstack-{name}:abc123"
        assert service["secrets"], name
        assert service["healthcheck"]["test"][-1] == "/usr/local/bin/healthcheck.sh"
    assert {p["published"] for p in merged["services"]["postfix"]["ports"]} == {25, 587, 465}
    assert merged["networks"]["backend"]["ipam"]["config"][0]["subnet"] == str(rendered.backend_subnet)
