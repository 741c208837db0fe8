"""MailStackContainer: a disposable mail stack in testcontainers' conventions.

    from mailstack.testcontainers import MailStackContainer

    with MailStackContainer().with_user("alice@example.test", "alice-password") as mail:
        host, port = mail.get_container_host_ip(), mail.get_exposed_port(587)
        with smtplib.SMTP(host, port) as smtp:
            smtp.starttls(context=mail.ssl_context())
            smtp.login("alice@example.test", "alice-password")

Built on MailStack, not on testcontainers' DockerContainer: the stack is a compose project of three
containers (Postfix, Dovecot, MariaDB), which cannot honour DockerContainer's one-container contract
(`get_container_id`, `exec`, `with_bind_ports`, `with_volume_mapping`, a Ryuk reaper at each start).
Instead it implements testcontainers' `WaitStrategyTarget` protocol (as its ComposeContainer does,
without inheritance), so `container.waiting_for(LogMessageWaitStrategy(...))` and `wait_for_logs(...)`
work on it, and mirrors its names: `start()`/`stop()`, `with ...:`, `get_container_host_ip()`,
`get_exposed_port(587)`, `get_logs()`, `with_*` builder methods, `get_*_url()` helpers.

Nothing here imports testcontainers, so this module works with or without it installed (the
`mailstack[testcontainers]` extra pins the version mailstack's own suite runs it next to). Nothing is
started through testcontainers either, so its Ryuk reaper (whose image needs a registry) is never
started or needed, whatever TESTCONTAINERS_RYUK_DISABLED says. Cleanup is MailStack's own: `stop()`
(also on errors and Ctrl-C in `with`) removes the containers, volumes and network; stacks of killed
processes are found by their labels and removed at the next start, or by `mailstack prune`.
"""

from __future__ import annotations

import email.message
import ssl
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from mailstack.api import MailStack, User
from mailstack.errors import MailstackError
from mailstack.stack import ENDPOINTS, SERVICES, Endpoints

if sys.version_info >= (3, 11):
    from typing import Self
else:  # pragma: no cover - Python 3.10
    from typing_extensions import Self

# container port -> the stack's endpoint name ("587" -> submission), from the stack's own table
ENDPOINT_BY_CONTAINER_PORT: dict[int, str] = {port: name for name, (_service, port) in ENDPOINTS.items()}
SERVICE_BY_CONTAINER_PORT: dict[int, str] = {port: service for _name, (service, port) in ENDPOINTS.items()}
WEBMAIL_PORT = ENDPOINTS["webmail"][1]


class WaitStrategy(Protocol):
    """What `waiting_for` needs of a strategy: testcontainers' WaitStrategy classes have it."""

    def wait_until_ready(self, container: Any) -> Any: ...


def container_port_number(port: int | str) -> int:
    """587, "587" or "587/tcp" -> 587 (testcontainers takes ports in all these forms)."""
    text = str(port).strip()
    number, _, protocol = text.partition("/")
    if protocol not in ("", "tcp") or not number.isdigit():
        raise MailstackError(f"{port!r} is not a TCP container port",
                             f"give one of {published_ports()}, e.g. get_exposed_port(587)")
    return int(number)


def published_ports() -> str:
    """The mail ports every stack publishes (80, the webmail's, only with webmail=True)."""
    return ", ".join(str(port) for port in sorted(ENDPOINT_BY_CONTAINER_PORT) if port != WEBMAIL_PORT)


def host_port(endpoints: Endpoints, port: int | str) -> int:
    """The host port a container port of the stack is published on: 587 -> the submission endpoint's port."""
    number = container_port_number(port)
    name = ENDPOINT_BY_CONTAINER_PORT.get(number)
    if name is None:
        raise MailstackError(f"container port {number} is not published by the mail stack",
                             f"use one of {published_ports()} (25 smtp, 465 smtps, 587 submission, "
                             "993 imaps, 995 pop3s, 4190 managesieve)")
    endpoint = getattr(endpoints, name)
    if endpoint is None:
        raise MailstackError(f"container port {number} ({name}) is not published by this stack",
                             "start it with webmail=True (MailStackContainer(webmail=True))")
    return int(endpoint.port)


class MailStackContainer:
    """A disposable Postfix + Dovecot + MariaDB stack with testcontainers' interface.

    Arguments are MailStack's (seed, domain, schema="postfixadmin", hostname=..., ...); the `with_*`
    methods set the same before `start()`. Every start is a new stack on random loopback ports.
    """

    def __init__(self, seed: Mapping[str, Any] | None = None, *, domain: str = "example.test",
                 **mailstack_options: Any) -> None:
        self._seed: dict[str, Any] = {key: list(value) for key, value in dict(seed or {}).items()}
        self._domain = domain
        self._options: dict[str, Any] = dict(mailstack_options)
        self._wait_strategies: list[WaitStrategy] = []
        self._mailstack: MailStack | None = None

    # --- builders, before start() (like DockerContainer.with_env) --------------------------------

    def with_domain(self, domain: str) -> Self:
        """Another local domain (the default domain, example.test, is always there)."""
        self._require_not_started("with_domain")
        self._seed.setdefault("domains", []).append(domain)
        return self

    def with_user(self, address: str, password: str) -> Self:
        """A mailbox user created at start (its domain becomes a local domain)."""
        self._require_not_started("with_user")
        domain = address.rpartition("@")[2]
        if domain and domain not in self._seed.get("domains", []):
            self._seed.setdefault("domains", []).append(domain)
        self._seed.setdefault("users", []).append({"address": address, "password": password})
        return self

    def with_alias(self, source: str, *destinations: str) -> Self:
        self._require_not_started("with_alias")
        self._seed.setdefault("aliases", []).append({"source": source, "destinations": list(destinations)})
        return self

    def with_setting(self, name: str, value: Any) -> Self:
        """A MailStack setting, e.g. with_setting("schema", "postfixadmin") or ("hostname", "mx.test")."""
        self._require_not_started("with_setting")
        self._options[name] = value
        return self

    def waiting_for(self, strategy: WaitStrategy) -> Self:
        """A testcontainers wait strategy run after the stack is ready, e.g. LogMessageWaitStrategy("...")."""
        self._require_not_started("waiting_for")
        self._wait_strategies.append(strategy)
        return self

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        """Start a new stack and wait until it serves mail; on any failure nothing of it is left."""
        if self._mailstack is not None:
            return self
        mailstack = MailStack(self._seed, domain=self._domain, **self._options)
        mailstack.start()
        self._mailstack = mailstack
        try:
            for strategy in self._wait_strategies:
                strategy.wait_until_ready(self)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Remove the stack: containers, volumes, network, state directory. Safe to call more than once."""
        mailstack, self._mailstack = self._mailstack, None
        if mailstack is not None:
            mailstack.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- testcontainers' container interface (WaitStrategyTarget) -------------------------------

    def get_container_host_ip(self) -> str:
        """Where the stack's ports are published (loopback unless bind_address says otherwise)."""
        return self.mailstack.endpoints.submission.host

    def get_exposed_port(self, port: int | str) -> int:
        """The host port for a container port: 25, 465, 587, 993 or 995."""
        return host_port(self.mailstack.endpoints, port)

    def get_wrapped_container(self) -> Self:
        """The stack itself, as testcontainers' ComposeContainer does (its wait strategies call this)."""
        return self

    def get_logs(self, *services: str) -> tuple[bytes, bytes]:
        """(stdout, stderr) of the given services, default all (Docker merges a container's streams)."""
        stack = self.mailstack.stack
        logs = "".join(stack.logs(service) for service in services) if services else stack.logs()
        return logs.encode(), b""

    def reload(self) -> None:
        """Nothing to refresh: `status` asks Docker each time."""

    @property
    def status(self) -> str:
        """"running" when all three containers run, else the state of the first that does not."""
        if self._mailstack is None:
            return "created"
        found = self._mailstack.stack.snapshot()
        for service in SERVICES:
            if service not in found:
                return "exited"  # removed: gone for good, as testcontainers' raise_on_exit should see it
            if not found[service].running:
                return found[service].status
        return "running"

    # --- connection helpers ------------------------------------------------------------------

    def get_smtp_url(self) -> str:
        """Submission with STARTTLS (587), as smtp://host:port."""
        return f"smtp://{self.get_container_host_ip()}:{self.get_exposed_port(587)}"

    def get_smtps_url(self) -> str:
        return f"smtps://{self.get_container_host_ip()}:{self.get_exposed_port(465)}"

    def get_imap_url(self) -> str:
        return f"imaps://{self.get_container_host_ip()}:{self.get_exposed_port(993)}"

    def get_pop3_url(self) -> str:
        return f"pop3s://{self.get_container_host_ip()}:{self.get_exposed_port(995)}"

    def get_connection_params(self, user: User | None = None) -> dict[str, Any]:
        """What an application's mail settings need: host, ports, the CA to trust (and a login)."""
        params: dict[str, Any] = {
            "host": self.get_container_host_ip(),
            "smtp_port": self.get_exposed_port(587),  # STARTTLS, then AUTH
            "smtps_port": self.get_exposed_port(465),
            "inbound_smtp_port": self.get_exposed_port(25),  # no AUTH: mail from outside
            "imap_port": self.get_exposed_port(993),  # implicit TLS
            "pop3_port": self.get_exposed_port(995),
            "ca_cert": str(self.ca_cert),
            "tls_server_name": self.mailstack.hostname,
        }
        if user is not None:
            params |= {"username": user.address, "password": user.password}
        return params

    # --- MailStack, delegated ----------------------------------------------------------------

    @property
    def mailstack(self) -> MailStack:
        """The MailStack underneath, for everything else it offers."""
        if self._mailstack is None:
            raise MailstackError("this MailStackContainer is not started",
                                 "use it as `with MailStackContainer() as mail:` or call start() first")
        return self._mailstack

    @property
    def project(self) -> str:
        """The compose project: its containers, volumes and network carry it as a label."""
        return self.mailstack.settings.project

    @property
    def ca_cert(self) -> Path:
        return self.mailstack.ca_cert

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting only this stack's CA (verification on)."""
        return self.mailstack.ssl_context()

    def add_user(self, address: str | None = None, password: str | None = None, **options: Any) -> User:
        return self.mailstack.add_user(address, password, **options)

    def add_alias(self, source: str, *destinations: str) -> None:
        self.mailstack.add_alias(source, *destinations)

    def send(self, user: User | None, to: str | list[str], subject: str = "test", body: str = "test",
             sender: str | None = None, message: email.message.EmailMessage | None = None) -> str:
        return self.mailstack.send(user, to, subject=subject, body=body, sender=sender, message=message)

    def wait_for_message(self, user: User, subject: str | None = None, message_id: str | None = None,
                         timeout: float = 10.0, folder: str = "INBOX") -> email.message.EmailMessage:
        return self.mailstack.wait_for_message(user, subject=subject, message_id=message_id, timeout=timeout,
                                               folder=folder)

    def _require_not_started(self, method: str) -> None:
        if self._mailstack is not None:
            raise MailstackError(f"{method}() after start() has no effect on the running stack",
                                 "call the with_* methods before start() / the `with` statement")


__all__ = ["MailStackContainer", "User", "host_port"]
