"""mailstack.testcontainers without Docker: container ports to host ports, the builders, the optional extra
(the module imports and works without testcontainers), testcontainers' protocol, and no Ryuk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mailstack.api import MailStack
from mailstack.errors import MailstackError
from mailstack.stack import Endpoint, Endpoints
from mailstack.testcontainers import MailStackContainer, host_port

ROOT = Path(__file__).resolve().parents[2]
ENDPOINTS = Endpoints(smtp=Endpoint("127.0.0.1", 40025), submission=Endpoint("127.0.0.1", 40587),
                      smtps=Endpoint("127.0.0.1", 40465), imaps=Endpoint("127.0.0.1", 40993),
                      pop3s=Endpoint("127.0.0.1", 40995), managesieve=Endpoint("127.0.0.1", 44190))


@pytest.mark.parametrize(("container_port", "expected"), [
    (25, 40025), (465, 40465), (587, 40587), (993, 40993), (995, 40995),
    ("587", 40587), ("993/tcp", 40993),  # testcontainers' other spellings of a port
])
def test_container_port_maps_to_its_endpoints_host_port(container_port: int | str, expected: int) -> None:
    assert host_port(ENDPOINTS, container_port) == expected


@pytest.mark.parametrize("container_port", [143, 110, 3306, "587/udp", "smtp"])
def test_a_port_the_stack_does_not_publish_is_refused_naming_the_ones_it_does(container_port: int | str) -> None:
    with pytest.raises(MailstackError) as error:
        host_port(ENDPOINTS, container_port)
    assert "25, 465, 587, 993, 995" in str(error.value)


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[MailStack]:
    """MailStack.start without Docker: records the stack and gives it the endpoints above."""
    made: list[MailStack] = []

    def start(self: MailStack) -> MailStack:
        self._endpoints = ENDPOINTS
        made.append(self)
        return self

    monkeypatch.setattr(MailStack, "start", start)
    monkeypatch.setattr(MailStack, "stop", lambda self: None)
    return made


def test_builders_become_the_stacks_seed_and_settings(started: list[MailStack]) -> None:
    container = (MailStackContainer().with_user("alice@other.test", "alice-password")
                 .with_alias("team@other.test", "alice@other.test").with_setting("schema", "postfixadmin"))
    with container as mail:
        assert mail is container
        stack = started[0]
        assert stack.seed.domains == ["other.test"]  # the user's domain; example.test is added at start
        assert [user.address for user in stack.seed.users] == ["alice@other.test"]
        assert stack.seed.aliases[0].destinations == ["alice@other.test"]
        assert stack.settings.schema_flavour == "postfixadmin"
        assert mail.get_container_host_ip() == "127.0.0.1"
        assert mail.get_exposed_port(587) == 40587
        assert mail.get_smtp_url() == "smtp://127.0.0.1:40587"
        assert mail.get_imap_url() == "imaps://127.0.0.1:40993"
        params = mail.get_connection_params()
        assert (params["smtp_port"], params["imap_port"], params["inbound_smtp_port"]) == (40587, 40993, 40025)
        assert params["ca_cert"] == str(stack.ca_cert)
        with pytest.raises(MailstackError, match="before start"):
            mail.with_user("late@other.test", "late-password")
    with pytest.raises(MailstackError, match="not started"):
        container.get_exposed_port(587)


def test_every_start_is_a_new_stack(started: list[MailStack]) -> None:
    container = MailStackContainer()
    with container:
        pass
    with container:
        pass
    assert len(started) == 2 and started[0].settings.project != started[1].settings.project


def test_a_failed_wait_strategy_removes_the_stack(started: list[MailStack], monkeypatch: pytest.MonkeyPatch) -> None:
    stopped: list[MailStack] = []
    monkeypatch.setattr(MailStack, "stop", lambda self: stopped.append(self))

    class NeverReady:
        def wait_until_ready(self, container: object) -> None:
            raise TimeoutError("never")

    with pytest.raises(TimeoutError), MailStackContainer().waiting_for(NeverReady()):
        pass
    assert stopped == started


def test_the_module_imports_and_works_without_testcontainers_installed() -> None:
    script = (
        "import sys\n"
        "sys.modules['testcontainers'] = None  # what `import testcontainers` sees when it is not installed\n"
        "from mailstack.testcontainers import MailStackContainer\n"
        "MailStackContainer().with_user('a@example.test', 'a-password')\n"
        "assert 'testcontainers' not in [m.split('.')[0] for m in sys.modules if sys.modules[m] is not None]\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


def test_the_extra_pins_testcontainers_and_the_suite_has_it() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["testcontainers"] == ["testcontainers==4.15.0"]
    assert "testcontainers==4.15.0" in extras["dev"]


def test_it_has_testcontainers_wait_strategy_interface() -> None:
    waiting_utils = pytest.importorskip("testcontainers.core.waiting_utils")
    protocol = waiting_utils.WaitStrategyTarget
    wanted = {name for name in vars(protocol) if not name.startswith("_")}
    assert wanted <= set(dir(MailStackContainer)), wanted - set(dir(MailStackContainer))


def test_starting_never_asks_for_ryuk(started: list[MailStack], monkeypatch: pytest.MonkeyPatch) -> None:
    container_module = pytest.importorskip("testcontainers.core.container")
    monkeypatch.delenv("TESTCONTAINERS_RYUK_DISABLED", raising=False)

    def no_registry(*args: object, **kwargs: object) -> None:
        raise AssertionError("Ryuk was asked for: its image cannot be pulled without a registry")

    monkeypatch.setattr(container_module.Reaper, "get_instance", no_registry)
    with MailStackContainer() as mail:
        assert mail.get_exposed_port(993) == 40993
