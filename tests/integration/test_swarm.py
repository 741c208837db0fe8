"""Issue 16: the stack on a Docker Swarm of two nodes, deployed by `mailstack deploy swarm` as a user would run it.

The swarm is made of inner Docker engines (swarm_nodes.py): the outer engine, which the rest of the suite uses, never
joins or leaves a swarm. Node 1 is labelled the storage node (MariaDB and Dovecot with their volumes); Postfix runs
on both, so what crosses machines is really crossed: the overlay networks, LMTP/auth/quota-status over TCP from
node 0's Postfix to node 1's Dovecot, placement. Clients talk to the nodes' host-mode ports from this machine, TLS
verified against the deployment's own CA for its host name.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from helpers import ImapsByAddress, smtp_by_address
from mailstack.settings import load_settings
from mailstack.stack import SERVICES, Stack
from swarm_nodes import Node, swarm_of

pytestmark = pytest.mark.integration

PROJECT = f"swarm{uuid.uuid4().hex[:6]}"
HOSTNAME = "mail.swarm.example.test"
DOMAIN = "swarm.example.test"
USER, PASSWORD = f"user@{DOMAIN}", "swarm-password-1"
DB_PORT = 13306


@dataclass
class Deployed:
    nodes: list[Node]
    state_dir: Path
    env: dict[str, str]
    status: dict
    context: ssl.SSLContext = field(init=False)

    def __post_init__(self) -> None:
        self.context = ssl.create_default_context(cafile=self.status["ca_cert"])

    @property
    def manager(self) -> Node:
        return self.nodes[0]

    @property
    def storage(self) -> Node:
        return self.nodes[1]

    def mailstack(self, *args: str, check: bool = True, timeout: float = 400) -> subprocess.CompletedProcess[str]:
        """The real CLI, as a user runs it against the swarm (DOCKER_HOST: the manager's engine)."""
        result = subprocess.run([sys.executable, "-m", "mailstack", *args], capture_output=True, text=True,
                                env=self.env, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"mailstack {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}")
        return result

    def service(self, name: str) -> str:
        return f"{PROJECT}_{name}"

    def container(self, node: Node, service: str) -> str:
        """The id of the service's running container on that node."""
        ids = node.docker("ps", "--quiet", "--filter", f"label=com.docker.swarm.service.name={self.service(service)}")
        assert ids, f"no {service} container on {node.hostname}"
        return ids.split()[0]


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    root = tmp_path_factory.mktemp("swarm")
    settings = load_settings(project=PROJECT, world=False, webmail=False)
    images = Stack(settings).image_names()
    seed = root / "seed.yaml"
    seed.write_text(yaml.safe_dump({"domains": [DOMAIN], "users": [{"address": USER, "password": PASSWORD}]}))
    with swarm_of(2, PROJECT, images) as nodes:
        env = {**os.environ, "DOCKER_HOST": nodes[0].docker_host, "MAILSTACK_PROJECT": PROJECT,
               "MAILSTACK_STATE_DIR": str(root / "state"), "MAILSTACK_HOSTNAME": HOSTNAME,
               "MAILSTACK_WORLD": "0", "MAILSTACK_WEBMAIL": "0", "MAILSTACK_DB_PORT": str(DB_PORT),
               "MAILSTACK_HASH_COST": "fast", "MAILSTACK_FAST_RETRY": "1", "MAILSTACK_MAIL_FSYNC": "never"}
        result = subprocess.run(
            [sys.executable, "-m", "mailstack", "deploy", "swarm", "--no-build", "--storage-node", nodes[1].hostname,
             "--seed", str(seed), "--json"], capture_output=True, text=True, env=env, timeout=400, check=False)
        print(result.stderr, file=sys.stderr)
        assert result.returncode == 0, result.stderr[-4000:]
        deployed = Deployed(nodes, root / "state", env, json.loads(result.stdout))
        try:
            yield deployed
        finally:
            deployed.mailstack("deploy", "swarm", "--remove", check=False, timeout=120)


class _Smtps(smtplib.SMTP_SSL):
    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = socket.create_connection((host, port), timeout)
        return self.context.wrap_socket(sock, server_hostname=HOSTNAME)


def _smtp(address: str, port: int) -> smtplib.SMTP:
    return smtp_by_address(address, port, HOSTNAME)


def _endpoint(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def _message(subject: str, message_id: str | None = None) -> str:
    message_id = message_id or f"<{uuid.uuid4().hex}@client.test>"
    return (f"From: sender@outside.test\r\nTo: {USER}\r\nSubject: {subject}\r\nMessage-ID: {message_id}\r\n\r\n"
            "hello from outside the swarm\r\n")


def _message_ids(deployed: Deployed, token: str) -> Counter[str]:
    """Message-ID -> how many times it is in the user's INBOX, of the messages whose subject has `token`."""
    host, port = _endpoint(deployed.status["endpoints"]["imaps"])
    imap = ImapsByAddress(host, port, HOSTNAME, deployed.context)
    try:
        imap.login(USER, PASSWORD)
        imap.select("INBOX", readonly=True)
        numbers = imap.search(None, "SUBJECT", token)[1][0].split()
        found: Counter[str] = Counter()
        for start in range(0, len(numbers), 200):
            batch = b",".join(numbers[start:start + 200])
            for item in imap.fetch(batch, "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")[1]:
                if isinstance(item, tuple):
                    parsed = email.message_from_bytes(item[1], policy=email.policy.default)
                    found[str(parsed["Message-ID"]).strip()] += 1
        return found
    finally:
        imap.logout()


def _wait_for_messages(deployed: Deployed, token: str, expected: set[str], timeout: float = 60) -> Counter[str]:
    deadline = time.monotonic() + timeout
    while True:
        found = _message_ids(deployed, token)
        if expected <= set(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_deploy_places_services_and_reports_endpoints(deployed: Deployed) -> None:
    status = deployed.status
    assert {name: info["state"] for name, info in status["services"].items()} == dict.fromkeys(SERVICES, "running")
    assert all(info["health"] == "healthy" for info in status["services"].values())
    every = status["swarm"]["endpoints"]
    manager, storage = deployed.manager.address, deployed.storage.address
    for name in ("smtp", "submission", "smtps"):  # Postfix on every node
        assert sorted(a.rpartition(":")[0] for a in every[name]) == sorted([manager, storage]), every[name]
    for name in ("imaps", "pop3s", "managesieve"):  # Dovecot on the storage node only
        assert [a.rpartition(":")[0] for a in every[name]] == [storage]
    nodes = {node["hostname"]: node for node in status["swarm"]["nodes"]}
    assert nodes[deployed.storage.hostname]["storage"] and not nodes[deployed.manager.hostname]["storage"]
    # where the tasks really run (the inner engines' own view)
    assert deployed.container(deployed.storage, "mysql") and deployed.container(deployed.storage, "dovecot")
    for node in deployed.nodes:
        assert deployed.container(node, "postfix")
    assert not deployed.manager.docker("ps", "--quiet", "--filter",
                                       f"label=com.docker.swarm.service.name={deployed.service('dovecot')}")
    # `mailstack status --json` understands the swarm stack: the same contract
    again = json.loads(deployed.mailstack("status", "--json").stdout)
    assert set(again) >= {"services", "endpoints", "ca_cert"} and again["services"] == status["services"]
    assert again["endpoints"]["smtp"] == f"{manager}:{every['smtp'][0].rpartition(':')[2]}"  # this node's own


def test_mail_flows_through_every_node_and_port(deployed: Deployed) -> None:
    """25 (STARTTLS), 587 (STARTTLS + AUTH: SASL over TCP to Dovecot across the overlay) and 465 on both nodes'
    Postfix -> LMTP over TCP on the backend overlay -> IMAPS on the storage node."""
    token = uuid.uuid4().hex[:10]
    expected: set[str] = set()
    for node in deployed.nodes:
        for port_name in ("smtp", "submission", "smtps"):
            port = int(deployed.status["endpoints"][port_name].rpartition(":")[2])
            message_id = f"<{port_name}-{node.hostname}-{token}@client.test>"
            body = _message(f"flow {token} {port_name} {node.hostname}", message_id)
            if port_name == "smtps":
                with _Smtps(node.address, port, context=deployed.context, timeout=30) as smtp:
                    smtp.login(USER, PASSWORD)
                    smtp.sendmail(USER, [USER], body)
            else:
                with _smtp(node.address, port) as smtp:
                    assert smtp.ehlo()[1].decode().startswith(HOSTNAME)
                    smtp.starttls(context=deployed.context)
                    if port_name == "submission":
                        smtp.login(USER, PASSWORD)
                    smtp.sendmail(USER if port_name == "submission" else "sender@outside.test", [USER], body)
            expected.add(message_id)
    found = _wait_for_messages(deployed, token, expected)
    assert set(found) == expected and set(found.values()) == {1}, found


def test_tls_is_the_deployments_own(deployed: Deployed) -> None:
    """Positive above; negative: a client trusting only the system's CAs, or expecting another name, refuses it."""
    address = deployed.manager.address
    port = int(deployed.status["endpoints"]["smtp"].rpartition(":")[2])
    with _smtp(address, port) as smtp, pytest.raises(ssl.SSLCertVerificationError):
        smtp.starttls(context=ssl.create_default_context())
    imap_host, imap_port = _endpoint(deployed.status["endpoints"]["imaps"])
    with socket.create_connection((imap_host, imap_port), 10) as sock, pytest.raises(ssl.SSLCertVerificationError):
        deployed.context.wrap_socket(sock, server_hostname="other.example.test")


def test_internal_listeners_answer_only_on_the_backend_network(deployed: Deployed) -> None:
    """LMTP (24), auth (12345) and quota-status (12340) are bound to Dovecot's address in the backend overlay:
    MariaDB's container, on the default overlay only, is refused there, while IMAPS answers it (a control)."""
    storage = deployed.storage
    mysql = deployed.container(storage, "mysql")
    probe = "for p in 993 24 12345 12340; do if (exec 3<>/dev/tcp/dovecot/$p) 2>/dev/null; then echo $p open; " \
            "else echo $p closed; fi; done"
    said = storage.docker("exec", mysql, "bash", "-c", probe).split("\n")
    assert said == ["993 open", "24 closed", "12345 closed", "12340 closed"], said
    postfix = deployed.container(deployed.manager, "postfix")  # another node's Postfix reaches them
    said = deployed.manager.docker("exec", postfix, "bash", "-c", probe.replace("dovecot/", "dovecot-internal/"))
    assert said.split("\n")[1:] == ["24 open", "12345 open", "12340 open"], said


@dataclass
class Burst:
    """Senders through both nodes' port 25, one message per connection, until stopped: what got a 250 and what
    did not (refused or cut while Postfix's task was replaced)."""

    deployed: Deployed
    token: str
    acknowledged: set[str] = field(default_factory=set)
    failed: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, node: Node) -> None:
        port = int(self.deployed.status["endpoints"]["smtp"].rpartition(":")[2])
        while not self.stop.is_set():
            message_id = f"<{uuid.uuid4().hex}@burst.test>"
            try:
                with smtplib.SMTP(node.address, port, local_hostname="burst.test", timeout=15) as smtp:
                    smtp.sendmail("sender@outside.test", [USER], _message(f"burst {self.token}", message_id))
                with self.lock:
                    self.acknowledged.add(message_id)
            except (OSError, smtplib.SMTPException) as exc:
                with self.lock:
                    self.failed.append(f"{node.hostname}: {type(exc).__name__}: {exc}"[:200])
                self.stop.wait(0.2)  # a refused port: try again shortly, as a client would
            self.stop.wait(0.05)  # a steady trickle: the update lasts ~30 s


def test_postfix_update_in_the_middle_of_a_burst_loses_and_duplicates_nothing(deployed: Deployed) -> None:
    """`docker service update --force` of Postfix (stop-first, one node at a time) while both nodes take mail:
    every message acknowledged with 250 is delivered exactly once; none is delivered twice."""
    before = {node.hostname: deployed.container(node, "postfix") for node in deployed.nodes}
    burst = Burst(deployed, uuid.uuid4().hex[:10])
    senders = [threading.Thread(target=burst.run, args=(node,), daemon=True) for node in deployed.nodes
               for _ in range(2)]
    for sender in senders:
        sender.start()
    try:
        deadline = time.monotonic() + 30
        while len(burst.acknowledged) < 40 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(burst.acknowledged) >= 40, burst.failed[-5:]
        started = time.monotonic()
        deployed.manager.docker("service", "update", "--force", "--detach=true", deployed.service("postfix"))
        # converged: both nodes run a new, healthy Postfix task
        while time.monotonic() - started < 180:
            update = deployed.manager.docker("service", "inspect", "--format", "{{json .UpdateStatus}}",
                                             deployed.service("postfix"))
            if '"completed"' in update:
                break
            time.sleep(0.5)
        took = time.monotonic() - started
        after_ack = len(burst.acknowledged)
        while len(burst.acknowledged) < after_ack + 20 and time.monotonic() - started < took + 30:
            time.sleep(0.1)  # and mail is taken again on both after it
    finally:
        burst.stop.set()
        for sender in senders:
            sender.join(timeout=30)
    assert '"completed"' in update, update
    after = {node.hostname: deployed.container(node, "postfix") for node in deployed.nodes}
    assert all(after[name] != before[name] for name in before), (before, after)  # really replaced, both
    assert burst.failed, "no sender saw Postfix go away: the update did not happen under the burst"
    found = _wait_for_messages(deployed, burst.token, burst.acknowledged, timeout=90)
    lost = burst.acknowledged - set(found)
    duplicated = {mid: n for mid, n in found.items() if n > 1}
    print(f"[swarm burst] update took {took:.1f} s; {len(burst.acknowledged)} acknowledged, "
          f"{len(burst.failed)} refused or cut, {len(found)} delivered, {len(lost)} lost, "
          f"{len(duplicated)} duplicated; e.g. {burst.failed[:2]}", file=sys.stderr)
    assert not lost, sorted(lost)[:5]
    assert not duplicated, duplicated


def test_mail_waits_in_the_queue_while_dovecot_is_gone(deployed: Deployed) -> None:
    """With Dovecot's task gone, its dnsrr name does not resolve: Postfix keeps the mail queued (4.4.4, not a
    5.4.4 bounce) and delivers it when Dovecot is back, on the storage node with its mailbox volume (the earlier
    mail still there)."""
    token = uuid.uuid4().hex[:10]
    kept = _message_ids(deployed, "flow")
    assert kept
    manager = deployed.manager
    manager.docker("service", "scale", "--detach=false", f"{deployed.service('dovecot')}=0", timeout=120)
    try:
        port = int(deployed.status["endpoints"]["smtp"].rpartition(":")[2])
        message_id = f"<waits-{token}@client.test>"
        with smtplib.SMTP(manager.address, port, local_hostname="client.test", timeout=30) as smtp:
            smtp.sendmail("sender@outside.test", [USER], _message(f"waits {token}", message_id))
        postfix = deployed.container(manager, "postfix")
        deadline = time.monotonic() + 60
        reason = ""
        while time.monotonic() < deadline:
            queue = [json.loads(line) for line in manager.docker("exec", postfix, "postqueue", "-j").splitlines()]
            reasons = [r.get("delay_reason", "") for item in queue for r in item["recipients"]]
            if reasons and all(reasons):
                reason = reasons[0]
                break
            time.sleep(0.5)
        assert reason, "the message was not deferred"
        assert "dovecot-internal" in reason, reason  # deferred for the name (lmtp-dsn-filter.regexp), not bounced
    finally:
        manager.docker("service", "scale", "--detach=false", f"{deployed.service('dovecot')}=1", timeout=180)
    found = _wait_for_messages(deployed, token, {message_id}, timeout=120)
    assert found == Counter({message_id: 1})
    assert set(kept) <= set(_message_ids(deployed, "flow"))  # the mailbox volume stayed on the storage node
    # (`docker service logs` can hang on a swarm whose earlier tasks are gone: the container's own log)
    said = subprocess.run(["docker", "logs", postfix], capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "DOCKER_HOST": manager.docker_host})
    assert message_id in said.stdout + said.stderr
    assert "status=bounced" not in said.stdout + said.stderr


@pytest.mark.skipif(shutil.which("docker") is None, reason="no Docker CLI")
def test_remove_keeps_the_volumes(deployed: Deployed) -> None:
    """Last in the module: `deploy swarm --remove` takes the services down and keeps each node's volumes."""
    deployed.mailstack("deploy", "swarm", "--remove", timeout=120)
    assert not deployed.manager.docker("service", "ls", "--quiet", "--filter",
                                       f"label=com.docker.stack.namespace={PROJECT}")
    volumes = deployed.storage.docker("volume", "ls", "--format", "{{.Name}}").split()
    assert {f"{PROJECT}_db", f"{PROJECT}_mail", f"{PROJECT}_queue"} <= set(volumes)
    assert f"{PROJECT}_queue" in deployed.manager.docker("volume", "ls", "--format", "{{.Name}}").split()
    status = json.loads(deployed.mailstack("status", "--json").stdout)
    assert all(info["state"] == "missing" for info in status["services"].values())
