"""The stack comes up healthy and every published port speaks its protocol."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys

from mailstack.api import MailStack
from mailstack.stack import SERVICES


def _read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1024)
        if not chunk:
            break
        data += chunk
    return data


def test_every_service_passes_its_own_healthcheck(mailstack: MailStack) -> None:
    for service in SERVICES:
        ok, output = mailstack.stack.probe(service)
        assert ok, f"{service}: {output}"


def test_docker_checks_health_every_health_interval(mailstack: MailStack) -> None:
    """Docker's own checks are container execs (~50 ms of CPU each): an orchestrated stack runs them every
    30 s, not every 2 s (MariaDB) or 10 s as plain `docker compose up` does."""
    for service in SERVICES:
        healthcheck = mailstack.stack.container(service).config.healthcheck
        assert healthcheck.interval == 30 * 10**9, (service, healthcheck.interval)


def test_status_says_healthy_before_dockers_first_check() -> None:
    """Until Docker's first check (an interval after the start) Docker says "starting"; status asks the
    service's own healthcheck instead of passing that on."""
    with MailStack(health_interval=3600) as stack:
        docker_says = {service: stack.stack.container(service).state.health.status for service in SERVICES}
        status = stack.stack.status()
    assert docker_says == dict.fromkeys(SERVICES, "starting")
    assert {service: info["health"] for service, info in status["services"].items()} == dict.fromkeys(
        SERVICES, "healthy")


def test_status_json_contract(mailstack: MailStack) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mailstack", "--project", mailstack.settings.project,
         "--state-dir", str(mailstack.settings.state_dir), "status", "--json"],
        capture_output=True, text=True, check=True,
    )
    data = json.loads(result.stdout)
    assert set(data) == {"services", "endpoints", "ca_cert"}
    assert set(data["services"]) == set(SERVICES)
    assert all(info["state"] == "running" for info in data["services"].values())
    assert data["endpoints"] == mailstack.endpoints.as_dict()
    assert data["ca_cert"] == str(mailstack.ca_cert)


def test_smtp_greets_on_25_and_587(mailstack: MailStack) -> None:
    for endpoint in (mailstack.endpoints.smtp, mailstack.endpoints.submission):
        with socket.create_connection((endpoint.host, endpoint.port), timeout=10) as sock:
            assert _read_line(sock).startswith(b"220 "), endpoint


def test_smtps_greets_after_tls_handshake(mailstack: MailStack, tls: ssl.SSLContext) -> None:
    endpoint = mailstack.endpoints.smtps
    with socket.create_connection((endpoint.host, endpoint.port), timeout=10) as raw, \
            tls.wrap_socket(raw, server_hostname=mailstack.hostname) as sock:
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
        assert _read_line(sock).startswith(b"220 ")


def test_imaps_and_pop3s_greet_after_tls(mailstack: MailStack, tls: ssl.SSLContext) -> None:
    for endpoint, greeting in ((mailstack.endpoints.imaps, b"* OK"), (mailstack.endpoints.pop3s, b"+OK")):
        with socket.create_connection((endpoint.host, endpoint.port), timeout=10) as raw, \
                tls.wrap_socket(raw, server_hostname="localhost") as sock:
            assert _read_line(sock).startswith(greeting), endpoint


def test_tls_is_refused_without_the_stacks_ca(mailstack: MailStack) -> None:
    endpoint = mailstack.endpoints.imaps
    strict = ssl.create_default_context()  # system CAs only: our local CA is unknown there
    with socket.create_connection((endpoint.host, endpoint.port), timeout=10) as raw:
        try:
            strict.wrap_socket(raw, server_hostname="localhost")
        except ssl.SSLCertVerificationError:
            return
    raise AssertionError("a client without the stack's CA accepted its certificate")


def test_database_port_is_not_published(mailstack: MailStack) -> None:
    ports = mailstack.stack.container("mysql").network_settings.ports or {}
    assert not any(ports.values()), ports
