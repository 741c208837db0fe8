"""Issue 16: no Kubernetes cluster can run here (no registry, 2 cores), so the rendered deployment is run the way a
kubelet would run it, with Docker: each StatefulSet's pod is a container of the local image with the manifest's
environment, its Secret and ConfigMap volumes as read-only files written from the built Secrets' data, its
PersistentVolumeClaims as empty directories (subPath included), its pod name as host name, and one network on which
each Service's name resolves to the pods it selects. What this proves: the images start from empty volumes, the
generated configs are what they need, Dovecot's internal listeners on `*` (TCP option) answer Postfix, the
readiness probes (the images' health checks) pass, and mail flows 25/587 -> LMTP over TCP -> IMAPS with the
deployment's host name and certificate. What it cannot: a scheduler, PVC provisioning, kube-proxy and the
LoadBalancer, NetworkPolicy enforcement (that needs a network plugin)."""

from __future__ import annotations

import base64
import shutil
import smtplib
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import ImapsByAddress, smtp_by_address
from mailstack import kubernetes
from mailstack.db import Database
from mailstack.seed import SeedFile, seed_database
from mailstack.settings import load_settings
from mailstack.stack import (
    LABEL_COMPOSE_PROJECT,
    LABEL_EPHEMERAL,
    LABEL_OWNER,
    LABEL_PROJECT,
    Stack,
    owner_label,
    remove_project,
)

HOSTNAME = "mail.k8s.example.test"
ORDER = ("mysql", "dovecot", "postfix")
pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) is not on PATH")


@dataclass
class Pod:
    name: str
    container: str
    address: str


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True, timeout=120).stdout.strip()


def _volume_files(doc: dict[str, Any]) -> dict[str, bytes]:
    if doc["kind"] == "Secret":
        return {key: base64.b64decode(value) for key, value in doc["data"].items()}
    return {key: value.encode() for key, value in doc["data"].items()}


def _run_pod(project: str, network: str, workload: dict[str, Any], objects: dict[tuple[str, str], dict[str, Any]],
             aliases: list[str], root: Path, tag: str) -> str:
    spec = workload["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    pod = f"{workload['metadata']['name']}-0"
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    claims = {c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])}
    args = ["run", "-d", "--name", f"{project}-{pod}", "--hostname", pod, "--network", network,
            "--label", f"{LABEL_COMPOSE_PROJECT}={project}", "--label", f"{LABEL_PROJECT}={project}",
            "--label", f"{LABEL_EPHEMERAL}=true",
            "--label", f"{LABEL_OWNER}={owner_label()}"]
    for alias in aliases:
        args += ["--network-alias", alias]
    for item in container.get("env", []):
        args += ["--env", f"{item['name']}={item['value']}"]
    for mount in container.get("volumeMounts", []):
        name = mount["name"]
        if name in claims:  # an empty PersistentVolume, with the subPath the kubelet creates
            source = root / "pvc" / f"{name}-{pod}" / mount.get("subPath", "")
            source.mkdir(parents=True, exist_ok=True)
            args += ["--mount", f"type=bind,source={source},target={mount['mountPath']}"]
            continue
        volume = volumes[name]
        kind, ref = ("Secret", volume["secret"]["secretName"]) if "secret" in volume else \
            ("ConfigMap", volume["configMap"]["name"])
        source = root / "volumes" / pod / name
        source.mkdir(parents=True, exist_ok=True)
        for key, data in _volume_files(objects[(kind, ref)]).items():
            (source / key).write_bytes(data)
            (source / key).chmod(volume.get("secret", {}).get("defaultMode", 0o644))
        args += ["--mount", f"type=bind,source={source},target={mount['mountPath']},readonly"]
    image = container["image"].rsplit(":", 1)[0].rsplit("/", 1)[-1]
    return docker(*args, f"{image}:{tag}")


def _ready(container_id: str, timeout: float = 180.0) -> None:
    """The readiness probe: the image's health check, until it passes."""
    deadline = time.monotonic() + timeout
    while True:
        probe = subprocess.run(["docker", "exec", container_id, "/usr/local/bin/healthcheck.sh"], capture_output=True,
                               text=True, check=False, timeout=30)
        if probe.returncode == 0:
            return
        if time.monotonic() > deadline:
            logs = subprocess.run(["docker", "logs", "--tail", "30", container_id], capture_output=True, text=True,
                                  check=False).stdout
            raise AssertionError(f"{container_id[:12]} not ready: {probe.stdout}{probe.stderr}\n{logs}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Pod], kubernetes.Rendered]]:
    root = tmp_path_factory.mktemp("k8s-layout")
    project = f"mailstack-test-{uuid.uuid4().hex[:8]}"
    settings = load_settings(project=project, state_dir=root / "state", hostname=HOSTNAME, world=False, webmail=False)
    stack = Stack(settings)
    stack.build(lambda message: None)  # the images of this checkout (no-op when they exist)
    rendered = kubernetes.render(settings, root / "overlay", tag=stack.tag)
    docs = [d for d in yaml.safe_load_all(kubernetes.build(rendered)) if d]
    objects = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    services = [d for d in docs if d["kind"] == "Service"]
    network = f"{project}_k8s"
    started: dict[str, Pod] = {}
    try:
        docker("network", "create", "--label", f"{LABEL_COMPOSE_PROJECT}={project}",
               "--label", f"{LABEL_PROJECT}={project}", network)
        for name in ORDER:
            workload = objects[("StatefulSet", name)]
            labels = workload["spec"]["template"]["metadata"]["labels"]
            aliases = [s["metadata"]["name"] for s in services if s["spec"]["selector"].items() <= labels.items()]
            cid = _run_pod(project, network, workload, objects, aliases, root, stack.tag)
            if name == "mysql":
                _ready(cid)  # as the pods' probes would hold Postfix's and Dovecot's traffic back
            address = docker("inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}', cid)
            started[name] = Pod(f"{name}-0", cid, address)
        for pod in started.values():
            _ready(pod.container)
        yield started, rendered
    finally:
        remove_project(project)
        shutil.rmtree(root / "pvc", ignore_errors=True)  # written by the containers' root


def test_the_pods_start_from_empty_volumes_and_their_readiness_probes_pass(
        pods: tuple[dict[str, Pod], kubernetes.Rendered]) -> None:
    started, _ = pods
    assert sorted(started) == sorted(ORDER)  # every one passed its health check (the fixture waited for it)
    said = subprocess.run(["docker", "logs", started["mysql"].container], capture_output=True, text=True, check=False)
    assert "empty data directory: initialising" in said.stderr  # a new PVC is empty, unlike a new Docker volume
    queue = docker("exec", started["postfix"].container, "ls", "/var/spool/postfix").split()
    assert {"active", "deferred", "incoming", "maildrop", "private", "public"} <= set(queue)  # made by Postfix


def _smtp(address: str, port: int) -> smtplib.SMTP:
    return smtp_by_address(address, port, HOSTNAME)


def test_mail_flows_through_lmtp_over_tcp_with_the_deployments_name_and_certificate(
        pods: tuple[dict[str, Pod], kubernetes.Rendered]) -> None:
    started, rendered = pods
    admin = (rendered.directory / "secrets" / "db_admin_password").read_text().strip()
    database = Database(started["mysql"].address, 3306, admin)
    address, password = f"k8s-{uuid.uuid4().hex[:6]}@example.test", "k8s-password-1"
    seed = SeedFile.model_validate({"domains": ["example.test"], "users": [{"address": address,
                                                                          "password": password}]})
    seed_database(database, seed, "ARGON2ID", "fast")
    context = ssl.create_default_context(cafile=str(rendered.directory / "tls" / "ca.crt"))
    postfix = started["postfix"].address
    with _smtp(postfix, 25) as smtp:
        greeting = smtp.ehlo()[1].decode()
        assert greeting.startswith(HOSTNAME)  # myhostname from the rendered overrides, not the pod's name
        smtp.starttls(context=context)  # the deployment's own certificate, for its host name
        smtp.sendmail("someone@outside.test", [address], "Subject: k8s-25\r\n\r\nhello\r\n")
    with _smtp(postfix, 587) as smtp:
        smtp.starttls(context=context)
        smtp.login(address, password)  # SASL over TCP to dovecot-internal:12345
        smtp.sendmail(address, [address], f"From: {address}\r\nSubject: k8s-587\r\n\r\nhello\r\n")
    imap = ImapsByAddress(started["dovecot"].address, 993, HOSTNAME, context)
    try:
        imap.login(address, password)
        deadline = time.monotonic() + 30
        while True:
            imap.select("INBOX", readonly=True)
            found = {subject: imap.search(None, "SUBJECT", subject)[1][0].split() for subject in ("k8s-25", "k8s-587")}
            if all(found.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        imap.logout()
    assert all(found.values()), found
    logs = subprocess.run(["docker", "logs", started["dovecot"].container], capture_output=True, text=True,
                          check=False)
    assert f"Connect from {postfix}" in logs.stdout + logs.stderr  # LMTP over TCP, from Postfix's pod
