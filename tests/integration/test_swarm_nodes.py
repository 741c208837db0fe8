"""The two-node swarm harness (swarm_nodes.py), proven on what crosses machines: a service on node 0 resolves a
dnsrr service pinned to node 1 by its name and talks to it over an attachable overlay network (VXLAN between the
nodes' addresses; a few MB through it in full-size frames), a plain container attached to that network does too,
and a host-mode published port on node 1 answers the host at node 1's address. Real engines and sockets; the only
image is debian:bookworm-slim, loaded into the nodes (nothing can be pulled). The harness's timings are printed."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import nullcontext

import pytest
from swarm_nodes import Node, swarm_of, wait_until

pytestmark = pytest.mark.integration

IMAGE = "debian:bookworm-slim"
PORT = 8080  # the server's, in its container
PUBLISHED = 18080  # on node 1's own address (its network namespace: no clash with the host's ports)
NETWORK = "probe"
PAYLOAD = 3_000_000  # bytes the server sends after its greeting: many full-size VXLAN frames
# A TCP server in debian:bookworm-slim (perl-base has IO::Socket): reads how many bytes to send, answers with the
# node's name ({{.Node.Hostname}} is its container's host name) and that many bytes.
SERVER = r"""
use IO::Socket::INET;
my $s = IO::Socket::INET->new(LocalPort => 8080, Listen => 16, ReuseAddr => 1) or die "listen: $!";
$| = 1; print "listening\n";
chomp(my $host = `cat /etc/hostname`);
while (my $c = $s->accept) {
  my $n = <$c>; $n = int($n // 0);
  print $c "hello from $host\n", "x" x $n;
  close $c;
}
"""


def _tell(config: pytest.Config, message: str) -> None:
    """A line on the terminal past output capturing (the harness's timings, also under -q)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    capture = config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else nullcontext():
        reporter.ensure_newline()
        reporter.write_line(message)


@pytest.fixture(scope="module")
def timings(request: pytest.FixtureRequest) -> Iterator[dict[str, float]]:
    measured: dict[str, float] = {}
    yield measured
    megabytes = measured.get("load_bytes", 0) / 1e6
    _tell(request.config, "swarm harness: {} node(s) started in {:.1f} s, {:.0f} MB loaded into each in {:.1f} s "
          "({:.2f} s/MB), swarm formed in {:.1f} s, torn down in {:.1f} s".format(
              measured.get("nodes", 0), measured.get("start", 0), megabytes, measured.get("load", 0),
              measured.get("load", 0) / megabytes if megabytes else 0, measured.get("swarm", 0),
              measured.get("teardown", 0)))


@pytest.fixture(scope="module")
def nodes(timings: dict[str, float]) -> Iterator[list[Node]]:
    with swarm_of(2, "mailstack-test-swarm", [IMAGE], timings=timings) as started:
        timings["nodes"] = len(started)
        yield started


def _task_container(node: Node, service: str) -> str:
    """The id of the service's running task container on that node ("" while there is none)."""
    return node.docker("ps", "--quiet", "--filter", f"label=com.docker.swarm.service.name={service}")


@pytest.fixture(scope="module")
def services(nodes: list[Node]) -> dict[str, str]:
    """`server` pinned to node 1 (by a node label), `client` pinned to node 0, both dnsrr on the attachable
    overlay; returns their task containers' ids once the server listens."""
    manager, worker = nodes
    for index, node in enumerate(nodes):
        manager.docker("node", "update", "--label-add", f"mailstack.node={index}", node.hostname)
    manager.docker("network", "create", "--driver", "overlay", "--attachable", NETWORK)
    common = ["service", "create", "--detach", "--network", NETWORK, "--endpoint-mode", "dnsrr"]
    manager.docker(*common, "--name", "server", "--constraint", "node.labels.mailstack.node==1",
                   "--hostname", "{{.Node.Hostname}}",
                   "--publish", f"mode=host,target={PORT},published={PUBLISHED}", IMAGE, "perl", "-e", SERVER)
    manager.docker(*common, "--name", "client", "--constraint", "node.labels.mailstack.node==0",
                   IMAGE, "sleep", "infinity")
    containers = {"server": "", "client": ""}

    def running() -> bool:
        for service, node in (("server", worker), ("client", manager)):
            containers[service] = containers[service] or _task_container(node, service)
        return all(containers.values()) and "listening" in worker.docker("logs", containers["server"])

    def failed() -> str | None:  # a task that was rejected or failed says why (no image, no such node...)
        said = manager.docker("service", "ps", "--no-trunc", "--format", "{{.Name}} {{.Node}} {{.Error}}",
                              "server", "client")
        errors = [line for line in said.splitlines() if len(line.split(" ", 2)) == 3 and line.split(" ", 2)[2]]
        return "\n".join(errors) or None

    wait_until("the server on node 1 and the client on node 0", running, timeout=60, failed=failed, interval=0.2,
               details=lambda: manager.docker("service", "ps", "--no-trunc", "server", "client"))
    return containers


def test_two_inner_engines_form_a_swarm_the_first_one_managing(nodes: list[Node]) -> None:
    listed = nodes[0].docker("node", "ls", "--format", "{{.Hostname}}:{{.Status}}:{{.ManagerStatus}}")
    assert sorted(listed.splitlines()) == ["node0:Ready:Leader", "node1:Ready:"]
    assert nodes[1].docker("info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}") == \
        "active false"  # a worker
    assert len({node.address for node in nodes}) == 2


def test_a_service_on_node0_reaches_a_service_on_node1_by_name_over_the_overlay(
        nodes: list[Node], services: dict[str, str]) -> None:
    manager, worker = nodes
    placed = manager.docker("service", "ps", "--filter", "desired-state=running", "--format", "{{.Name}} {{.Node}}",
                            "server", "client")
    assert sorted(placed.splitlines()) == ["client.1 node0", "server.1 node1"]
    subnet = manager.docker("network", "inspect", "--format", "{{(index .IPAM.Config 0).Subnet}}", NETWORK)
    server_ip = worker.docker("inspect", "--format", f'{{{{(index .NetworkSettings.Networks "{NETWORK}").IPAddress}}}}',
                              services["server"])
    # dnsrr: the name resolves to the task's own address on the overlay (no VIP), from the other node
    resolved = manager.docker("exec", services["client"], "getent", "hosts", "server").split()
    assert resolved[:2] == [server_ip, "server"], (resolved, subnet)
    said = manager.docker("exec", services["client"], "bash", "-c", f"exec 3<>/dev/tcp/server/{PORT}; "
                          f'echo {PAYLOAD} >&3; read -r line <&3; echo "$line"; wc -c <&3')
    greeting, count = said.splitlines()
    assert greeting == "hello from node1"
    assert int(count) == PAYLOAD  # full-size frames through VXLAN: the overlay's MTU fits the outer network's


def test_a_plain_container_attached_to_the_overlay_on_node0_reaches_node1(
        nodes: list[Node], services: dict[str, str]) -> None:
    said = nodes[0].docker("run", "--rm", "--network", NETWORK, IMAGE, "bash", "-c",
                           f"exec 3<>/dev/tcp/server/{PORT}; echo 0 >&3; cat <&3")
    assert said == "hello from node1"


def test_a_host_mode_port_on_node1_answers_the_host_at_node1s_address(
        nodes: list[Node], services: dict[str, str]) -> None:
    worker = nodes[1]
    deadline = time.monotonic() + 10
    with socket.create_connection((worker.address, PUBLISHED), timeout=10) as sock:
        sock.sendall(b"5\n")
        received = b""
        while (chunk := sock.recv(4096)) and time.monotonic() < deadline:
            received += chunk
    assert received == b"hello from node1\nxxxxx"
    with pytest.raises(OSError):  # host mode: published on the node running the task only (no routing mesh)
        socket.create_connection((nodes[0].address, PUBLISHED), timeout=2).close()
