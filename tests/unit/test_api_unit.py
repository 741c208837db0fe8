"""Disposable stacks without Docker: who owns a stack and when it is stale, what pruning removes, the kept
database connection, MailStack's defaults and refusals, the plugin's per-worker project names."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
from mailstack import api, stack
from mailstack.api import MailStack
from mailstack.db import Database
from mailstack.errors import MailstackError, PortTaken
from mailstack.pytest_plugin import stack_options
from mailstack.settings import load_settings
from mailstack.stack import (
    LABEL_OWNER,
    OWNER_FILE,
    ContainerInfo,
    owner_is_gone,
    owner_label,
    pin_free_ports,
    prune_stale,
    stacks_dir,
)

HERE = "host-a:4026531836:boot-1"


def _alive_only(*pids: int):
    return lambda pid, started: pid in pids and started in ("", "100")


@pytest.mark.parametrize(("labels", "gone"), [
    ({LABEL_OWNER: f"{HERE}/42/100"}, False),                              # live owner
    ({LABEL_OWNER: f"{HERE}/43/100"}, True),                               # dead owner
    ({LABEL_OWNER: f"{HERE}/42/999"}, True),                               # pid 42 now belongs to a newer process
    ({LABEL_OWNER: "host-b:4026531836:boot-1/43/100"}, False),             # another machine: not ours to judge
    ({LABEL_OWNER: "host-a:4026532999:boot-1/43/100"}, False),             # another pid namespace (a container)
    ({LABEL_OWNER: "host-a:4026531836:boot-0/42/100"}, True),              # this machine before a reboot
    ({LABEL_OWNER: "garbage"}, False),                                     # unreadable: leave it
    ({}, True),                                                            # disposable without an owner
])
def test_owner_is_gone(labels: dict[str, str], gone: bool) -> None:
    assert owner_is_gone(labels, HERE, _alive_only(42)) is gone


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_owner_label_of_this_process_and_of_a_finished_one() -> None:
    mine = owner_label()
    assert mine.split("/")[1] == str(os.getpid())
    assert owner_is_gone({LABEL_OWNER: mine}) is False
    assert owner_is_gone({LABEL_OWNER: owner_label(_dead_pid())}) is True
    namespace, pid, started = mine.split("/")
    if started:  # Linux: a live pid with another start time is a reused pid, so the owner is gone
        assert owner_is_gone({LABEL_OWNER: f"{namespace}/{pid}/{int(started) + 1}"}) is True


def test_container_info_from_inspect() -> None:
    info = ContainerInfo.from_inspect({
        "Id": "abc", "Name": "/p-postfix-1",
        "State": {"Status": "running", "Running": True, "Health": {"Status": "healthy"}},
        "Config": {"Labels": {"com.docker.compose.service": "postfix", "io.mailstack.ephemeral": "true"}},
        "NetworkSettings": {"Ports": {"25/tcp": [{"HostIp": "127.0.0.1", "HostPort": "32768"}], "465/tcp": None},
                            "Networks": {"p_default": {"IPAddress": "172.20.0.4"}}},
        "Mounts": [{"Destination": "/run/mailstack/tls", "Source": "/tmp/s/config/tls"}],
    })
    assert (info.service, info.name, info.running, info.health) == ("postfix", "p-postfix-1", True, "healthy")
    assert info.host_port(25) == 32768 and info.host_port(465) is None
    assert info.addresses == ("172.20.0.4",)
    assert info.mounts == {"/run/mailstack/tls": "/tmp/s/config/tls"}


# --- pruning, with Docker's answers replaced --------------------------------------------------------


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return stacks_dir()


def _docker_answers(monkeypatch: pytest.MonkeyPatch, containers: list[str], volumes: list[str]) -> list[str]:
    removed: list[str] = []

    def run(argv: list[str]) -> str:
        kind = argv[argv.index("ls") - 1]
        return "\n".join(containers if kind == "container" else volumes)

    monkeypatch.setattr(stack, "docker_run", run)
    monkeypatch.setattr(stack, "remove_project", lambda project, *a, **k: removed.append(project))
    return removed


def test_prune_removes_a_project_only_when_every_owner_is_gone(monkeypatch: pytest.MonkeyPatch,
                                                               temp_root: Path) -> None:
    live, dead = owner_label(), owner_label(_dead_pid())
    foreign = "elsewhere:1:boot/" + dead.split("/", 1)[1]
    removed = _docker_answers(
        monkeypatch,
        containers=[f"dead\t{dead}", f"mixed\t{dead}", f"alive\t{live}", f"foreign\t{foreign}",
                    f"\t{dead}", "ownerless\t"],
        volumes=[f"dead\t{dead}", f"mixed\t{live}", f"volumes-only\t{dead}"],
    )
    assert prune_stale() == ["dead", "ownerless", "volumes-only"]
    assert removed == ["dead", "ownerless", "volumes-only"]
    removed.clear()
    assert prune_stale(everything=True) == ["alive", "dead", "foreign", "mixed", "ownerless", "volumes-only"]


def test_prune_removes_state_directories_of_dead_owners(monkeypatch: pytest.MonkeyPatch, temp_root: Path) -> None:
    _docker_answers(monkeypatch, containers=[], volumes=[])
    owners = {"dead": owner_label(_dead_pid()), "alive": owner_label(),
              "foreign": "elsewhere:1:boot/1/1", "kept-stack": None}
    for name, owner in owners.items():
        (temp_root / name / "config").mkdir(parents=True)
        if owner:
            (temp_root / name / OWNER_FILE).write_text(owner)
    assert prune_stale() == ["dead"]
    assert sorted(p.name for p in temp_root.iterdir()) == ["alive", "foreign", "kept-stack"]
    assert prune_stale(everything=True) == ["alive", "foreign"]
    assert [p.name for p in temp_root.iterdir()] == ["kept-stack"]  # no owner file: reused or kept


def test_prune_answers_nothing_without_docker(monkeypatch: pytest.MonkeyPatch, temp_root: Path) -> None:
    def run(argv: list[str]) -> str:
        raise FileNotFoundError("docker")

    monkeypatch.setattr(stack, "docker_run", run)
    assert prune_stale() == []


# --- the kept database connection ------------------------------------------------------------------


class FakeConnection:
    def __init__(self, log: list[str]) -> None:
        self.log, self.closed, self.broken = log, False, False

    def ping(self, reconnect: bool = False) -> None:
        if self.broken:
            raise pymysql.err.OperationalError(2006, "gone away")
        self.log.append("ping")

    def cursor(self) -> FakeConnection:
        return self

    def __enter__(self) -> FakeConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def commit(self) -> None:
        self.log.append("commit")

    def rollback(self) -> None:
        self.log.append("rollback")

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[FakeConnection]:
    made: list[FakeConnection] = []
    log: list[str] = []

    def connect(self: Database, timeout: float = 30.0) -> FakeConnection:
        made.append(FakeConnection(log))
        return made[-1]

    monkeypatch.setattr(Database, "connect", connect)
    return made


def test_kept_connection_is_reused_checked_and_closed(connections: list[FakeConnection]) -> None:
    db = Database("h", 1, "pw", keep_open=True)
    for _ in range(3):
        with db.transaction():
            pass
    assert len(connections) == 1 and not connections[0].closed
    assert connections[0].log.count("ping") == 2 and connections[0].log.count("commit") == 3
    connections[0].broken = True  # the server dropped it while idle: a new one, transparently
    with db.transaction():
        pass
    assert len(connections) == 2 and connections[0].closed
    db.close()
    assert connections[1].closed


def test_kept_connection_is_dropped_after_a_failure(connections: list[FakeConnection]) -> None:
    db = Database("h", 1, "pw", keep_open=True)
    with pytest.raises(RuntimeError), db.transaction():
        raise RuntimeError("statement failed")
    assert connections[0].log[-1] == "rollback" and connections[0].closed
    with db.transaction():
        pass
    assert len(connections) == 2


def test_nested_transaction_gets_its_own_connection(connections: list[FakeConnection]) -> None:
    db = Database("h", 1, "pw", keep_open=True)
    with db.transaction(), db.transaction():
        assert len(connections) == 2
    assert not connections[0].closed and connections[1].closed


def test_without_keep_open_each_transaction_connects(connections: list[FakeConnection]) -> None:
    db = Database("h", 1, "pw")
    for _ in range(2):
        with db.transaction():
            pass
    assert len(connections) == 2 and all(c.closed for c in connections)


# --- MailStack and the plugin, without starting anything -------------------------------------------


def test_mailstack_defaults_are_disposable_and_isolated() -> None:
    one, two = MailStack(), MailStack()
    assert one.settings.project != two.settings.project
    assert one.settings.project.startswith("mailstack-test-")
    assert one.settings.ephemeral and one.settings.hash_cost == "fast" and one.settings.fast_retry
    assert set(one.settings.ports().values()) == {0}  # Docker picks free ports: never 25/587/... of `make up`
    assert one.settings.state_dir == stacks_dir() / one.settings.project
    assert not MailStack(keep=True).settings.ephemeral
    assert not MailStack(project="mine", reuse=True).settings.ephemeral


def test_stop_before_start_touches_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack.Stack, "destroy", lambda self: pytest.fail("destroy called"))
    MailStack().stop()


@pytest.fixture
def no_docker(monkeypatch: pytest.MonkeyPatch, temp_root: Path) -> Iterator[list[str]]:
    calls: list[str] = []
    monkeypatch.setattr(api, "prune_stale", lambda: calls.append("prune") or [])
    monkeypatch.setattr(stack.Stack, "destroy", lambda self: calls.append("destroy"))
    monkeypatch.setattr(stack.Stack, "start", lambda self, report: calls.append("start"))
    yield calls


def test_a_disposable_mailstack_refuses_to_replace_a_stack_that_is_not(monkeypatch: pytest.MonkeyPatch,
                                                                       no_docker: list[str]) -> None:
    monkeypatch.setattr(stack.Stack, "is_disposable", lambda self: False)  # e.g. `make up`'s stack, or its volumes
    candidate = MailStack(project="mailstack")
    with pytest.raises(MailstackError, match="not disposable"), candidate:
        pytest.fail("started")
    assert "destroy" not in no_docker and "start" not in no_docker
    assert not candidate.settings.state_dir.exists()


def test_a_failed_start_removes_what_it_created(monkeypatch: pytest.MonkeyPatch, no_docker: list[str]) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # Ctrl-C in the middle of the start

    monkeypatch.setattr(api, "_bring_up", fail)
    monkeypatch.setattr(stack.Stack, "images_present", lambda self: True)
    candidate = MailStack()
    with pytest.raises(KeyboardInterrupt), candidate:
        pytest.fail("started")
    assert no_docker.count("destroy") == 1
    assert not candidate.settings.state_dir.exists()


def test_a_port_taken_during_the_start_is_tried_again_with_other_ports(monkeypatch: pytest.MonkeyPatch,
                                                                       no_docker: list[str]) -> None:
    tried: list[dict[str, int]] = []

    def bring_up(stack_: stack.Stack, *args: object, **kwargs: object) -> object:
        tried.append(stack_.settings.ports())
        if len(tried) == 1:
            raise PortTaken(["docker", "start"], 1, "Bind for 127.0.0.1:1234 failed: port is already allocated")
        return FakeDatabase()

    class FakeDatabase:
        def close(self) -> None:
            return None

    monkeypatch.setattr(api, "_bring_up", bring_up)
    monkeypatch.setattr(stack.Stack, "images_present", lambda self: True)
    monkeypatch.setattr(stack.Stack, "endpoints", lambda self: "endpoints")
    with MailStack() as started:
        assert started.endpoints == "endpoints"
    assert len(tried) == 2 and tried[0] != tried[1] and 0 not in [*tried[0].values(), *tried[1].values()]
    assert no_docker.count("destroy") == 2  # the failed attempt's containers, then the stack at the end


def test_a_port_taken_is_not_retried_when_the_ports_were_given(monkeypatch: pytest.MonkeyPatch,
                                                               no_docker: list[str]) -> None:
    def bring_up(*args: object, **kwargs: object) -> None:
        raise PortTaken(["docker", "start"], 1, "port is already allocated")

    monkeypatch.setattr(api, "_bring_up", bring_up)
    monkeypatch.setattr(stack.Stack, "images_present", lambda self: True)
    with pytest.raises(PortTaken), MailStack(smtp_port=2525, submission_port=2587, smtps_port=2465,
                                             imaps_port=2993, pop3s_port=2995, managesieve_port=24190):
        pytest.fail("started")


@pytest.mark.parametrize(("keep", "reuse", "worker", "expected"), [
    (False, None, None, {"project": None, "keep": False, "reuse": False}),
    (False, None, "gw1", {"project": None, "keep": False, "reuse": False}),  # random name per worker
    (True, None, "gw0", {"project": None, "keep": True, "reuse": False}),
    (False, "dev", None, {"project": "dev", "keep": False, "reuse": True}),
    (False, "dev", "gw1", {"project": "dev-gw1", "keep": False, "reuse": True}),
])
def test_plugin_stack_options(keep: bool, reuse: str | None, worker: str | None, expected: dict) -> None:
    assert stack_options(keep, reuse, worker) == expected


def test_plugin_stack_options_ask_for_lmtp_and_auth_over_tcp_only_when_given() -> None:
    assert "lmtp_auth_tcp" not in stack_options(False, None, None)
    assert stack_options(False, None, None, lmtp_auth_tcp=True)["lmtp_auth_tcp"] is True
    assert MailStack(lmtp_auth_tcp=True).settings.lmtp_auth_tcp is True
    assert MailStack().settings.lmtp_auth_tcp is False


def test_pin_free_ports_chooses_distinct_free_ports_for_zeros_only() -> None:
    settings = load_settings(project="mailstack-pin", smtp_port=0, submission_port=0, smtps_port=0,
                             imaps_port=0, pop3s_port=2993)
    pinned = pin_free_ports(settings).ports()
    chosen = [pinned[name] for name in ("smtp", "submission", "smtps", "imaps")]
    assert all(port > 0 for port in chosen) and len(set(chosen)) == len(chosen)
    assert pinned["pop3s"] == 2993
    fixed = load_settings(project="mailstack-pin")
    assert pin_free_ports(fixed) is fixed


def test_a_failed_connect_asks_where_the_server_is_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """A restarted MariaDB container may come back with another address on the stack's network."""
    tried: list[str] = []

    def connect(**kwargs: object) -> str:
        tried.append(str(kwargs["host"]))
        if kwargs["host"] != "10.0.0.9":
            raise pymysql.err.OperationalError(2003, "Can't connect to MySQL server")
        return "connection"

    monkeypatch.setattr(pymysql, "connect", connect)
    db = Database("10.0.0.3", 3306, "pw", locate=lambda: ("10.0.0.9", 3306))
    assert db.connect(timeout=5) == "connection"
    assert tried == ["10.0.0.3", "10.0.0.9"] and db.host == "10.0.0.9"
