"""Issue 16: the Kubernetes deployment, rendered offline: the base (deploy/kubernetes) with an overlay rendered into
a temporary directory, built by `kubectl kustomize` and validated by `kubernetes-validate --strict` (schemas
bundled: no network), and the rules the issue sets checked on the built YAML: separate workloads, one replica of
each stateful one with ReadWriteOnce volumes, Postfix scalable with a queue volume per replica, NetworkPolicies
(only Postfix reaches Dovecot's LMTP/auth/quota-status, only Postfix and Dovecot reach MariaDB), Secrets generated
and never committed, the images' health checks as probes, client addresses kept, LMTP and auth over TCP."""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from mailstack import kubernetes, schema
from mailstack.errors import MailstackError
from mailstack.settings import load_settings

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl (with kustomize) is not on PATH")
VALIDATE = Path(sys.executable).with_name("kubernetes-validate")
KUBERNETES_VERSIONS = ("1.32.0", "1.37.0")  # the machine's kubectl, and the newest schemas bundled
HEALTHCHECK = ["/usr/local/bin/healthcheck.sh"]
CLIENT_PORTS = {25, 587, 465, 993, 995, 4190}
INTERNAL_PORTS = {24, 12345, 12340}
HOSTNAME = "mail.k8s.example.test"
Doc = dict[str, Any]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[kubernetes.Rendered, Path]]:
    root = tmp_path_factory.mktemp("k8s")
    settings = load_settings(project="k8s-test", state_dir=root / "state", hostname=HOSTNAME, schema="postfixadmin",
                             world=False)
    result = kubernetes.render(settings, root / "overlay", registry="registry.example.test/mail",
                               namespace="mail")
    built = root / "mailstack.yaml"
    built.write_text(kubernetes.build(result, KUBECTL or "kubectl"))
    yield result, built


@pytest.fixture(scope="module")
def docs(rendered: tuple[kubernetes.Rendered, Path]) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(rendered[1].read_text()) if doc]


def of(docs: list[Doc], kind: str, name: str | None = None) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    (found,) = of(docs, kind, name)
    return found


def container(workload: Doc) -> Doc:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return only


def env(workload: Doc) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container(workload).get("env", [])}


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    args = [str(VALIDATE), "--strict", "--quiet"]
    for version in KUBERNETES_VERSIONS:
        args += ["-k", version]
    return subprocess.run([*args, str(path)], capture_output=True, text=True, check=False, timeout=300)


def test_the_base_alone_builds_and_is_valid(tmp_path: Path) -> None:
    built = subprocess.run([KUBECTL or "kubectl", "kustomize", str(kubernetes.base_dir())], capture_output=True,
                           text=True, check=True, timeout=120).stdout
    (tmp_path / "base.yaml").write_text(built)
    result = validate(tmp_path / "base.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not [d for d in yaml.safe_load_all(built) if d and d["kind"] in ("Secret", "ConfigMap")]


def test_the_rendered_deployment_is_valid_in_strict_mode(rendered: tuple[kubernetes.Rendered, Path]) -> None:
    result = validate(rendered[1])
    assert result.returncode == 0, result.stdout + result.stderr


def test_three_separate_workloads_the_stateful_ones_single_with_readwriteonce_volumes(docs: list[Doc]) -> None:
    workloads = {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet")}
    assert sorted(workloads) == ["dovecot", "mysql", "postfix"]
    for name, mount in (("mysql", "/var/lib/mysql"), ("dovecot", "/var/mail/vmail")):
        workload = workloads[name]
        assert workload["kind"] == "StatefulSet" and workload["spec"]["replicas"] == 1
        (claim,) = workload["spec"]["volumeClaimTemplates"]
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
        assert {m["mountPath"]: m["name"] for m in container(workload)["volumeMounts"]}[mount] == \
            claim["metadata"]["name"]
    for workload in workloads.values():
        assert workload["metadata"]["namespace"] == "mail"
        assert workload["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_postfix_scales_with_a_queue_volume_of_its_own_per_replica(docs: list[Doc]) -> None:
    postfix = one(docs, "StatefulSet", "postfix")
    assert postfix["spec"]["replicas"] >= 2 and postfix["spec"]["podManagementPolicy"] == "Parallel"
    (claim,) = postfix["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    mounts = {m["mountPath"]: m["name"] for m in container(postfix)["volumeMounts"]}
    assert mounts["/var/spool/postfix"] == claim["metadata"]["name"]  # the whole queue, per pod


def test_lmtp_auth_and_quota_status_go_over_tcp_to_a_service_that_always_resolves(docs: list[Doc]) -> None:
    assert env(one(docs, "StatefulSet", "postfix"))["MAILSTACK_LMTP_AUTH_TCP"] == "1"
    assert env(one(docs, "StatefulSet", "postfix"))["MAILSTACK_DOVECOT_INTERNAL"] == "dovecot-internal"
    assert env(one(docs, "StatefulSet", "dovecot"))["MAILSTACK_LMTP_AUTH_TCP"] == "1"
    assert env(one(docs, "StatefulSet", "dovecot"))["MAILSTACK_INTERNAL_LISTEN"] == "*"
    internal = one(docs, "Service", "dovecot-internal")["spec"]
    # ClusterIP, never headless: a headless name stops resolving with no ready pod, and Postfix bounces (5.4.4)
    assert internal["type"] == "ClusterIP" and internal.get("clusterIP") != "None"
    assert {p["port"] for p in internal["ports"]} == INTERNAL_PORTS
    assert internal["selector"] == {"app.kubernetes.io/name": "dovecot"}


def test_mail_clients_reach_the_six_ports_with_their_own_addresses(docs: list[Doc]) -> None:
    exposed = [d for d in of(docs, "Service") if d["spec"].get("type") in ("LoadBalancer", "NodePort")]
    assert {d["metadata"]["name"] for d in exposed} == {"postfix", "dovecot"}
    assert all(d["spec"]["externalTrafficPolicy"] == "Local" for d in exposed)
    assert {p["port"] for d in exposed for p in d["spec"]["ports"]} == CLIENT_PORTS
    for service in of(docs, "Service"):  # nothing internal is exposed
        if service not in exposed:
            assert service["spec"].get("type", "ClusterIP") == "ClusterIP"


def test_probes_are_the_images_health_checks(docs: list[Doc]) -> None:
    for name in ("mysql", "dovecot", "postfix"):
        probes = container(one(docs, "StatefulSet", name))
        assert probes["readinessProbe"]["exec"]["command"] == HEALTHCHECK, name
        assert probes["startupProbe"]["exec"]["command"] == HEALTHCHECK, name
        liveness = probes["livenessProbe"]
        if name == "dovecot":  # its check is an auth lookup through SQL: a MariaDB outage must not restart it
            assert liveness["tcpSocket"] == {"port": "imaps"} and "exec" not in liveness
        else:
            assert liveness["exec"]["command"] == HEALTHCHECK, name


def _peers(docs: list[Doc], app: str, port: int) -> set[str] | None:
    """Who may open `port` on `app`'s pods under the NetworkPolicies: a set of app names, or None for anyone.
    Policies add up; a pod selected by none would be open to all (the default-deny policy selects them all)."""
    pod_labels = {"app.kubernetes.io/name": app, "app.kubernetes.io/part-of": "mailstack"}
    selecting = [p for p in of(docs, "NetworkPolicy")
                 if p["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
                 and "Ingress" in p["spec"]["policyTypes"]]
    assert selecting, f"no NetworkPolicy selects {app}"
    allowed: set[str] = set()
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports is not None and port not in {p["port"] for p in ports}:
                continue
            if not rule.get("from"):
                return None
            for peer in rule["from"]:
                assert set(peer) == {"podSelector"}, peer  # no namespace or ipBlock peers here
                allowed.add(peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"])
    return allowed


def test_network_policies_let_only_postfix_reach_dovecot_internals_and_only_both_reach_mariadb(
        docs: list[Doc]) -> None:
    for port in INTERNAL_PORTS:
        assert _peers(docs, "dovecot", port) == {"postfix"}, port
    assert _peers(docs, "mysql", 3306) == {"postfix", "dovecot"}
    for port in (25, 587, 465):
        assert _peers(docs, "postfix", port) is None  # clients, and Dovecot's Sieve mail to 25
    for port in (993, 995, 4190):
        assert _peers(docs, "dovecot", port) is None
    assert _peers(docs, "mysql", 25) == set() and _peers(docs, "postfix", 3306) == set()  # the rest: nobody
    # every pod of the deployment is selected by the default deny
    deny = one(docs, "NetworkPolicy", "mailstack-default-deny-ingress")["spec"]
    assert deny["podSelector"]["matchLabels"] == {"app.kubernetes.io/part-of": "mailstack"} and "ingress" not in deny
    for name in ("mysql", "dovecot", "postfix"):
        labels = one(docs, "StatefulSet", name)["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "mailstack"


def test_secrets_are_generated_from_the_rendered_files_and_mounted(
        docs: list[Doc], rendered: tuple[kubernetes.Rendered, Path]) -> None:
    directory = rendered[0].directory
    found = {d["metadata"]["name"].rsplit("-", 1)[0]: d for d in of(docs, "Secret")}
    assert sorted(found) == sorted([kubernetes.DB_SECRET, kubernetes.TLS_SECRET, kubernetes.POSTFIX_SECRET,
                                    kubernetes.DOVECOT_SECRET])

    def data(name: str) -> dict[str, str]:
        return {key: base64.b64decode(value).decode() for key, value in found[name]["data"].items()}

    db = data(kubernetes.DB_SECRET)
    assert db["db_mail_password"] == (directory / "secrets" / "db_mail_password").read_text().strip()
    assert sorted(data(kubernetes.TLS_SECRET)) == ["ca.crt", "server.crt", "server.key"]  # never the CA's key
    postfix, dovecot = data(kubernetes.POSTFIX_SECRET), data(kubernetes.DOVECOT_SECRET)
    flavour = schema.flavour("postfixadmin")
    assert {f"{name}.cf" for name in flavour.postfix_maps} <= set(postfix)
    assert f"password = {db['db_mail_password']}" in postfix["mysql_virtual_mailbox_maps.cf"]
    assert f"-e\tmyhostname={HOSTNAME}" in postfix["postconf.overrides"].splitlines()
    assert f"user={schema.MAIL_READER} password={db['db_mail_password']}" in dovecot["dovecot-sql.conf.ext"]
    assert f"hostname = {HOSTNAME}" in dovecot["overrides.conf"]
    (schema_map,) = of(docs, "ConfigMap")
    assert "CREATE TABLE IF NOT EXISTS" in schema_map["data"]["schema.sql"]
    mounted = {(w["metadata"]["name"], v.get("secret", {}).get("secretName") or v.get("configMap", {}).get("name"))
               for w in of(docs, "StatefulSet") for v in w["spec"]["template"]["spec"]["volumes"]}
    generated = {d["metadata"]["name"] for d in [*of(docs, "Secret"), *of(docs, "ConfigMap")]}
    assert {name for _, name in mounted} == generated  # kustomize rewrote every reference to the hashed names


def test_images_come_from_the_registry_with_the_content_hash_tag(
        docs: list[Doc], rendered: tuple[kubernetes.Rendered, Path]) -> None:
    for name in ("mysql", "dovecot", "postfix"):
        assert container(one(docs, "StatefulSet", name))["image"] == \
            f"registry.example.test/mail/mailstack-{name}:{rendered[0].tag}"


def test_nothing_secret_is_committed_and_the_default_directory_is_ignored() -> None:
    base = kubernetes.base_dir()
    for path in base.rglob("*"):
        if path.is_file():
            assert "kind: Secret" not in path.read_text(), path
    root = base.parent.parent
    if shutil.which("git") and (root / ".git").exists():
        for ignored in (".mailstack/kubernetes/kustomization.yaml", "deploy/kubernetes/generated/x"):
            assert subprocess.run(["git", "-C", str(root), "check-ignore", "-q", ignored], check=False).returncode == 0


def test_rendering_into_a_tracked_directory_is_refused(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not on PATH")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    settings = load_settings(project="k8s-test", state_dir=tmp_path / "state", world=False)
    with pytest.raises(MailstackError, match="not ignored"):
        kubernetes.render(settings, tmp_path / "deploy")
    assert not (tmp_path / "deploy").exists()
    (tmp_path / ".gitignore").write_text("deploy/\n")
    assert kubernetes.render(settings, tmp_path / "deploy").kustomization.is_file()


def test_a_second_render_keeps_the_passwords_and_the_ca(tmp_path: Path) -> None:
    settings = load_settings(project="k8s-test", state_dir=tmp_path / "state", world=False)
    first = kubernetes.render(settings, tmp_path / "overlay")
    password = (first.directory / "secrets" / "db_admin_password").read_text()
    ca = (first.directory / "tls" / "ca.crt").read_bytes()
    again = kubernetes.render(settings.model_copy(update={"hostname": "other.example.test"}), tmp_path / "overlay")
    assert (again.directory / "secrets" / "db_admin_password").read_text() == password
    assert (again.directory / "tls" / "ca.crt").read_bytes() == ca
    overrides = (again.directory / "config" / "postfix" / "postconf.overrides").read_text()
    assert "myhostname=other.example.test" in overrides


def test_the_strict_validation_is_not_vacuous(tmp_path: Path, rendered: tuple[kubernetes.Rendered, Path]) -> None:
    """An unknown field (a typo in a probe) fails it: strict mode rejects what the API server would drop."""
    broken = rendered[1].read_text().replace("periodSeconds: 10", "periodSecond: 10", 1)
    (tmp_path / "broken.yaml").write_text(broken)
    result = validate(tmp_path / "broken.yaml")
    assert result.returncode != 0 and "periodSecond" in result.stdout + result.stderr


def test_the_cli_renders_and_builds(tmp_path: Path) -> None:
    from mailstack import cli
    from typer.testing import CliRunner

    result = CliRunner().invoke(cli.app, ["--state-dir", str(tmp_path / "state"), "deploy", "kubernetes",
                                          "--render", str(tmp_path / "overlay"), "--namespace", "mail", "-o", "-"])
    assert result.exit_code == 0, result.output
    built = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert {d["kind"] for d in built} >= {"StatefulSet", "Service", "NetworkPolicy", "Secret", "ConfigMap"}
    assert {d["metadata"].get("namespace") for d in built} == {"mail"}
    assert "kubectl apply -k" in result.stderr
