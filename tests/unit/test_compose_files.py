"""The compose files the orchestrator layers for a stack's settings, and that the overrides agree with
compose.yaml where they have to repeat it."""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from mailstack.api import MailStack
from mailstack.settings import load_settings, stack_files_dir
from mailstack.stack import Stack, listening


class _ComposeLoader(yaml.SafeLoader):
    """compose's YAML tags (`!override`, `!reset`) read as plain values."""


_ComposeLoader.add_constructor("!override", lambda loader, node: loader.construct_sequence(node))
_ComposeLoader.add_constructor("!reset", lambda loader, node: None)


def _load(name: str) -> dict[str, Any]:
    return yaml.load((stack_files_dir() / name).read_text(), Loader=_ComposeLoader)  # noqa: S506 (safe loader)


def _files(**settings: Any) -> list[str]:
    stack = Stack(load_settings(project="compose-files", **settings))
    return [Path(path).name for path in stack.docker.client_config.compose_files]


def test_the_memory_queue_override_is_layered_only_when_asked_for() -> None:
    assert _files(world=False, webmail=False) == ["compose.yaml"]
    assert _files(world=False, webmail=False, queue_in_memory=True) == ["compose.yaml", "compose.queue-in-memory.yaml"]
    assert _files(world=False, webmail=False, queue_in_memory=True, ephemeral=True) == [
        "compose.yaml", "compose.ephemeral.yaml", "compose.queue-in-memory.yaml"]


def test_the_world_is_layered_with_its_owner_labels_for_disposable_stacks() -> None:
    assert _files(world_subnet="10.213.9.0/24", webmail=False) == ["compose.yaml", "compose.world.yaml"]
    assert _files(world_subnet="10.213.9.0/24", webmail=False, ephemeral=True) == [
        "compose.yaml", "compose.ephemeral.yaml", "compose.world.yaml", "compose.world-ephemeral.yaml"]


def test_every_world_service_carries_the_owner_label_of_disposable_stacks() -> None:
    world = _load("compose.world.yaml")["services"]
    added = [name for name, service in world.items() if "build" in service]
    assert sorted(added) == sorted(_load("compose.world-ephemeral.yaml")["services"]) == ["dns", "outside", "rspamd"]


def test_the_world_gives_each_fixed_address_of_the_stack_network() -> None:
    stack = Stack(load_settings(project="compose-files", world_subnet="10.213.9.0/24", webmail=False))
    env = stack.compose_environment()
    assert (env["MAILSTACK_WORLD_SUBNET"], env["MAILSTACK_WORLD_IP_RANGE"]) == ("10.213.9.0/24", "10.213.9.128/25")
    assert (env["MAILSTACK_DNS_IP"], env["MAILSTACK_OUTSIDE_IP"], env["MAILSTACK_POSTFIX_IP"]) == (
        "10.213.9.2", "10.213.9.3", "10.213.9.4")
    assert stack.services == ("mysql", "dovecot", "postfix", "dns", "rspamd", "outside")


def test_the_webmail_is_layered_last_with_its_port_and_owner_labels() -> None:
    assert _files(world=False) == ["compose.yaml", "compose.webmail.yaml"]
    assert _files(world=False, ephemeral=True) == [
        "compose.yaml", "compose.ephemeral.yaml", "compose.webmail.yaml", "compose.webmail-ephemeral.yaml"]
    stack = Stack(load_settings(project="compose-files", world=False, webmail_port=18080))
    assert stack.services == ("mysql", "dovecot", "postfix", "webmail")
    assert stack.compose_environment()["MAILSTACK_WEBMAIL_PORT"] == "18080"
    without = Stack(load_settings(project="compose-files", world=False, webmail=False))
    assert "MAILSTACK_WEBMAIL_PORT" not in without.compose_environment()


def test_the_webmail_service_carries_the_owner_label_of_disposable_stacks() -> None:
    webmail = _load("compose.webmail.yaml")
    owner = _load("compose.webmail-ephemeral.yaml")
    assert sorted(name for name, service in webmail["services"].items() if "build" in service) == ["webmail"]
    assert sorted(owner["services"]) == ["webmail"]
    assert sorted(owner["volumes"]) == sorted(webmail["volumes"])


def test_the_memory_queue_override_keeps_every_postfix_mount_but_the_queue_volume() -> None:
    """It has to list Postfix's volumes again (compose can only replace a list): a mount added to
    compose.yaml later must be added there too, or a memory-queue stack would lose it."""
    base = _load("compose.yaml")["services"]["postfix"]["volumes"]
    memory = _load("compose.queue-in-memory.yaml")["services"]["postfix"]
    assert [mount for mount in base if not mount.startswith("queue:")] == memory["volumes"]
    assert len(base) == len(memory["volumes"]) + 1
    assert [entry.split(":")[0] for entry in memory["tmpfs"]] == ["/var/spool/postfix"]


def test_test_stacks_take_the_memory_queue_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pytest plugin's stacks have no option of their own for it: MAILSTACK_QUEUE_IN_MEMORY reaches them."""
    monkeypatch.delenv("MAILSTACK_QUEUE_IN_MEMORY", raising=False)
    assert MailStack().settings.queue_in_memory is False
    monkeypatch.setenv("MAILSTACK_QUEUE_IN_MEMORY", "1")
    assert MailStack().settings.queue_in_memory is True
    assert MailStack(queue_in_memory=False).settings.queue_in_memory is False


def test_every_compose_file_is_packaged_in_the_wheel() -> None:
    """The wheel carries the files Stack layers (stack_files); one left out breaks an installed mailstack."""
    root = stack_files_dir()
    pyproject = (root / "pyproject.toml").read_text()
    for path in sorted(root.glob("compose*.yaml")):
        assert f'"{path.name}" = "mailstack/stack_files/{path.name}"' in pyproject, path.name
    for deployment in sorted(p for p in (root / "deploy").iterdir() if p.is_dir()):  # swarm, kubernetes
        name = f"deploy/{deployment.name}"
        assert f'"{name}" = "mailstack/stack_files/{name}"' in pyproject, name


def test_lmtp_and_auth_over_tcp_is_layered_only_when_asked_for(tmp_path: Path) -> None:
    assert "compose.lmtp-tcp.yaml" not in _files(world=False, webmail=False)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "backend-subnet").write_text("10.213.250.32/27\n")
    assert _files(world=False, webmail=False, lmtp_auth_tcp=True, state_dir=tmp_path) == [
        "compose.yaml", "compose.lmtp-tcp.yaml"]


def test_the_internal_network_gives_dovecot_a_fixed_address_postfix_knows_by_name(tmp_path: Path) -> None:
    """Postfix bounces mail for an LMTP next hop that does not resolve: the name must not vanish from DNS
    while Dovecot is stopped, so it is an /etc/hosts entry for a fixed address, not a network alias."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "backend-subnet").write_text("10.213.250.32/27\n")
    stack = Stack(load_settings(project="compose-files", world=False, webmail=False, lmtp_auth_tcp=True,
                                state_dir=tmp_path))
    env = stack.compose_environment()
    assert (env["MAILSTACK_BACKEND_SUBNET"], env["MAILSTACK_BACKEND_IP_RANGE"], env["MAILSTACK_DOVECOT_INTERNAL_IP"]) \
        == ("10.213.250.32/27", "10.213.250.48/28", "10.213.250.34")
    overlay = _load("compose.lmtp-tcp.yaml")
    assert overlay["networks"]["backend"]["internal"] is True
    dovecot, postfix = overlay["services"]["dovecot"], overlay["services"]["postfix"]
    assert dovecot["networks"]["backend"] == {"ipv4_address": "${MAILSTACK_DOVECOT_INTERNAL_IP}"}
    assert "default" in dovecot["networks"] and "default" in postfix["networks"]  # or they would leave it
    assert postfix["extra_hosts"] == ["dovecot-internal:${MAILSTACK_DOVECOT_INTERNAL_IP}"]
    assert postfix["environment"]["MAILSTACK_DOVECOT_INTERNAL"] == "dovecot-internal"
    assert "ports" not in dovecot and "ports" not in postfix  # nothing of it is published
    assert set(overlay["services"]) == {"dovecot", "postfix"}  # the only ones on the internal network


def test_a_stack_without_a_chosen_internal_subnet_picks_a_free_27(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    taken = ["10.213.0.0/17", "10.213.128.0/18", "172.17.0.0/16"]
    monkeypatch.setattr(Stack, "_networks", lambda self, network="default": ([], taken))
    stack = Stack(load_settings(project="compose-files", world=False, webmail=False, lmtp_auth_tcp=True,
                                state_dir=tmp_path))
    assert stack.backend is not None and stack.backend.prefixlen == 27
    assert stack.backend.subnet_of(ipaddress.IPv4Network("10.213.192.0/18"))
    assert not (tmp_path / "config" / "backend-subnet").exists()  # remembered by prepare(), not by a lookup


def test_an_internal_subnet_another_network_took_is_given_up_for_a_free_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stack down for a while may find its remembered /27 taken: Docker refuses the network (20.10 says
    "networks have overlapping IPv4"), and the start goes on with another one, remembered instead."""
    from python_on_whales import DockerException
    from python_on_whales.components.compose.cli_wrapper import ComposeCLI

    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "backend-subnet").write_text("10.213.250.32/27\n")
    calls: list[str] = []

    def up(self: ComposeCLI, *args: Any, **kwargs: Any) -> None:
        env = dict(item.split("=", 1) for item in self.client_config.client_call if "=" in item)
        calls.append(env["MAILSTACK_BACKEND_SUBNET"])
        if len(calls) == 1:
            raise DockerException(["docker", "compose", "up"], 1, stderr=(
                b"failed to create network compose-files_backend: Error response from daemon: cannot create network "
                b"x (br-x): conflicts with network y (br-y): networks have overlapping IPv4"))

    monkeypatch.setattr(ComposeCLI, "up", up)
    monkeypatch.setattr(Stack, "_networks", lambda self, network="default": ([], ["10.213.250.32/27"]))
    monkeypatch.setattr(Stack, "_ids_or_none", lambda self: {})
    stack = Stack(load_settings(project="compose-files", world=False, webmail=False, lmtp_auth_tcp=True,
                                state_dir=tmp_path))
    stack._create()
    assert calls[0] == "10.213.250.32/27" and calls[1] != calls[0]
    assert (tmp_path / "config" / "backend-subnet").read_text().strip() == calls[1] == str(stack.backend)


def test_the_internal_subnet_never_overlaps_the_worlds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both come from the same pool and may be chosen before either network exists: for this project the seeds
    alone would put the internal /27 inside the world's /24 (10.213.118.32/27 in 10.213.118.0/24)."""
    monkeypatch.setattr(Stack, "_networks", lambda self, network="default": ([], []))
    stack = Stack(load_settings(project="overlap-201", world=True, webmail=False, lmtp_auth_tcp=True,
                                state_dir=tmp_path))
    assert stack.network is not None and str(stack.network.subnet) == "10.213.118.0/24"
    assert stack.backend is not None and not stack.backend.overlaps(stack.network.subnet)


def test_listening_asks_the_kernel_for_a_processes_listening_sockets() -> None:
    """wait_ready's cheap pre-check (stack.listening): a listening TCP port is seen (IPv4 and IPv6), a bound but
    not listening one is not, a bound UDP socket is; a process that is not the named container's (or none)
    gives None: the container is then asked itself."""
    own_cgroup = Path("/proc/self/cgroup").read_text().strip().splitlines()[0]
    with socket.socket() as server, socket.socket(socket.AF_INET6) as server6:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server6.bind(("::1", 0))
        server6.listen()
        port, port6 = server.getsockname()[1], server6.getsockname()[1]
        assert listening(os.getpid(), own_cgroup, "tcp", (port, port6)) is True
        with socket.socket() as other:
            other.bind(("127.0.0.1", 0))  # bound, not listening
            assert listening(os.getpid(), own_cgroup, "tcp", (port, other.getsockname()[1])) is False
        assert listening(os.getpid(), own_cgroup, "udp", (port,)) is False
    assert listening(os.getpid(), "0123456789abcdef" * 4, "tcp", (port,)) is None  # not that container's process
    assert listening(0, own_cgroup, "tcp", (port,)) is None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        assert listening(os.getpid(), own_cgroup, "udp", (udp.getsockname()[1],)) is True


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="entering a network namespace needs root")
def test_listening_reads_the_sockets_of_the_processes_own_network_namespace() -> None:
    """A container's ports are in its own network namespace: what listens there is seen, what listens in ours
    (the same port number) is not, as for a container's process."""
    own_cgroup = Path("/proc/self/cgroup").read_text().strip().splitlines()[0]
    listener = "import socket, sys\ns = socket.socket(); s.bind(('', 0)); s.listen()\n" \
               "print(s.getsockname()[1], flush=True); sys.stdin.read()"
    with subprocess.Popen(["unshare", "--net", sys.executable, "-c", listener], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as child:
        try:
            port = int(child.stdout.readline())
            assert listening(child.pid, own_cgroup, "tcp", (port,)) is True
            with socket.socket() as ours:
                ours.bind(("127.0.0.1", 0))
                ours.listen()
                assert listening(child.pid, own_cgroup, "tcp", (ours.getsockname()[1],)) is False
                assert listening(os.getpid(), own_cgroup, "tcp", (ours.getsockname()[1],)) is True
        finally:
            child.stdin.close()
            child.wait(timeout=10)
