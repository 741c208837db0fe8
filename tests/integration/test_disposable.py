"""Disposable stacks for other projects' test suites (issue 5), against real Docker: isolated side by side,
one per xdist worker, always removed (normal exit, exception, Ctrl-C, even during the start), stacks of
killed processes pruned by label (at the next start and by `mailstack prune`) and nothing else pruned,
reuse across sessions without compose, and the README's example run as a user would run it.

The stacks here are their own (random projects and ports); a `make up` stack (project `mailstack`) may run
on the standard ports meanwhile and is checked to be left alone. The child processes start together at the
first test that needs them, so that their start-ups overlap.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from imapclient.exceptions import LoginError
from mailstack import api, provision
from mailstack.api import MailStack, User
from mailstack.errors import MailstackError
from mailstack.stack import (
    OWNER_FILE,
    SERVICES,
    Stack,
    owner_label,
    project_resources,
    prune_stale,
    remove_project,
    stacks_dir,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 180.0  # several stacks start at once on a possibly busy machine
STANDARD_PORTS = {25, 465, 587, 993, 995}

CHILD = '''
"""Holds a MailStack and says what happens on stdout: `project P`, `progress P message`, `ready P`."""
import signal
import sys

from mailstack.api import MailStack


def say(*words: str) -> None:
    print(*words, flush=True)


mode = sys.argv[1]
stack = MailStack(report=lambda message: say("progress", stack.settings.project, message))
say("project", stack.settings.project)
with stack:
    stack.add_user()
    say("ready", stack.settings.project)
    if mode == "raise":
        raise RuntimeError("boom inside the with")
    if mode == "wait":
        signal.pause()  # until SIGINT (KeyboardInterrupt) or SIGKILL
say("left", stack.settings.project)
'''


def leftovers(project: str) -> dict[str, list[str]]:
    """What Docker still has of a project (containers, volumes, networks), and its state directory."""
    found = {kind: names for kind, names in project_resources(project).items() if names}
    if (stacks_dir() / project).exists():
        found["state dir"] = [str(stacks_dir() / project)]
    return found


def make_up_stack() -> dict[str, list[str]]:
    """The `make up` stack's containers, volumes and network (empty when it is not there)."""
    return project_resources("mailstack")


@dataclass
class Child:
    """A child process holding a MailStack; its stdout lines arrive through a queue."""

    mode: str
    process: subprocess.Popen[str]
    stderr: Path
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    project: str = ""

    @classmethod
    def launch(cls, argv: list[str], mode: str, directory: Path) -> Child:
        stderr = directory / f"{mode}-{uuid.uuid4().hex[:6]}.stderr"
        # SIGINT as a terminal gives it: a test run started in the background (`cmd &`: SIGINT ignored, and
        # ignored signals are inherited) would otherwise make the children deaf to the Ctrl-C tests' SIGINT.
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr.open("w"), text=True,
                                   cwd=directory, env=clean_environment(),
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        child = cls(mode, process, stderr)
        threading.Thread(target=child._read, daemon=True).start()
        return child

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())

    def expect(self, word: str, containing: str = "", timeout: float = START_TIMEOUT) -> list[str]:
        """The next line starting with `word` and containing `containing` (earlier lines are read past)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                fields = self.lines.get(timeout=max(0.0, deadline - time.monotonic())).split()
            except queue.Empty:
                pytest.fail(f"child {self.mode}: no '{word}' within {timeout:.0f}s; stderr:\n{self.errors()}")
            if fields[:1] == ["project"]:
                self.project = fields[1]
            if fields[:1] == [word] and containing in " ".join(fields):
                return fields

    def finish(self, timeout: float = 60.0) -> int:
        return self.process.wait(timeout=timeout)

    def errors(self) -> str:
        return self.stderr.read_text()[-3000:]


ROLES = {  # role -> the child's mode ("pytest": a pytest session using the plugin, waiting in a test)
    "exit": "exit",
    "raise": "raise",
    "sigint": "wait",
    "sigint-starting": "wait",
    "kill-then-start": "wait",
    "kill-then-prune": "wait",
    "pytest-sigint": "pytest",
}

WAITING_TEST = '''
import signal


def test_waits(mailstack):
    print("project", mailstack.settings.project, flush=True)
    print("ready", mailstack.settings.project, flush=True)
    signal.pause()
'''


def clean_environment(**extra: str) -> dict[str, str]:
    """This environment without pytest's and mailstack's variables (an outer xdist worker's included)."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "MAILSTACK_"))}, **extra}


@pytest.fixture(scope="module")
def children(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Child]]:
    directory = tmp_path_factory.mktemp("children")
    (directory / "child.py").write_text(CHILD)
    (directory / "test_waits.py").write_text(WAITING_TEST)
    argv = {"pytest": [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s", "-q", "test_waits.py"]}
    started = {role: Child.launch(argv.get(mode, [sys.executable, "child.py", mode]), mode, directory)
               for role, mode in ROLES.items()}
    try:
        yield started
    finally:
        for child in started.values():
            if child.process.poll() is None:
                child.process.kill()
                child.process.wait()
            while not child.lines.empty():  # a project line not read by a test
                fields = child.lines.get().split()
                if fields[:1] == ["project"]:
                    child.project = fields[1]
            if child.project:
                remove_project(child.project)
                shutil.rmtree(stacks_dir() / child.project, ignore_errors=True)


@dataclass(frozen=True)
class Reused:
    project: str
    user: User
    stack: Stack


@pytest.fixture(scope="module")
def reused() -> Iterator[Reused]:
    """A stack started by an earlier "session" with reuse=True, and left running by it."""
    project = f"mailstack-reuse-{uuid.uuid4().hex[:8]}"
    first = MailStack(project=project, reuse=True)
    try:
        with first:
            user = first.add_user()
        yield Reused(project, user, Stack(first.settings))
    finally:
        remove_project(project)
        shutil.rmtree(first.settings.state_dir, ignore_errors=True)


def ports(stack: MailStack) -> set[int]:
    return {endpoint.port for endpoint in (stack.endpoints.smtp, stack.endpoints.submission,
                                           stack.endpoints.smtps, stack.endpoints.imaps, stack.endpoints.pop3s)}


# --- isolation and parallelism ---------------------------------------------------------------------


def test_two_stacks_side_by_side_are_isolated() -> None:
    make_up = make_up_stack()
    stacks = [MailStack(), MailStack()]
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            for started in [pool.submit(s.start) for s in stacks]:
                started.result()
        a, b = stacks
        found = {s.settings.project: project_resources(s.settings.project) for s in stacks}
        for project, resources in found.items():
            assert len(resources["containers"]) == 3 and len(resources["volumes"]) == 4, resources
            assert resources["networks"] == [f"{project}_default"]
        assert not set(sum(found[a.settings.project].values(), [])) & set(sum(found[b.settings.project].values(), []))
        assert not ports(a) & ports(b) and not (ports(a) | ports(b)) & STANDARD_PORTS
        assert a.ca_cert.read_bytes() != b.ca_cert.read_bytes()

        # The same address in both, with different passwords: two databases, two mailboxes.
        alice_a, alice_b = a.add_user("alice@example.test"), b.add_user("alice@example.test")
        subject = f"only in a {uuid.uuid4().hex[:8]}"
        a.send(alice_a, to=alice_a.address, subject=subject)
        assert a.wait_for_message(alice_a, subject=subject)
        with b.imap(alice_b) as client:
            client.select_folder("INBOX", readonly=True)
            assert client.search(["ALL"]) == []
        with pytest.raises(LoginError):
            b.imap(alice_a)
        only_a = a.add_user()
        with b.database.transaction() as store:
            assert only_a.address not in store.users()
    finally:
        for s in stacks:
            s.stop()
    for s in stacks:
        assert leftovers(s.settings.project) == {}
    assert make_up_stack() == make_up


def _readme_example() -> str:
    section = (ROOT / "README.md").read_text().split("## In your own tests", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found, "README: no python example under 'In your own tests'"
    return found.group(1)


RECORDING_CONFTEST = '''
import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def record_stack(mailstack):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    Path(os.environ["RECORD_DIR"], worker).write_text(mailstack.settings.project)
'''


def inner_pytest(directory: Path, *args: str, env: dict[str, str] | None = None,
                 timeout: float = START_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """pytest in a project of its own, with the installed plugin (as another project would run it)."""
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
                          cwd=directory, env=clean_environment(**(env or {})), capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_readme_example_passes_with_a_stack_per_xdist_worker(tmp_path: Path) -> None:
    """The README's example file, verbatim, in a project of its own, under `pytest -n 2`: each worker
    gets a stack of its own, and none is left afterwards."""
    project = tmp_path / "project"
    records = tmp_path / "records"
    project.mkdir()
    records.mkdir()
    example = _readme_example()
    name = re.match(r"# (test_\w+\.py)", example)
    (project / (name.group(1) if name else "test_example.py")).write_text(example)
    (project / "conftest.py").write_text(RECORDING_CONFTEST)
    make_up = make_up_stack()

    result = inner_pytest(project, "-n", "2", env={"RECORD_DIR": str(records)})

    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
    per_worker = {path.name: path.read_text() for path in records.iterdir()}
    assert sorted(per_worker) == ["gw0", "gw1"]
    assert len(set(per_worker.values())) == 2, per_worker
    for stack_project in per_worker.values():
        assert leftovers(stack_project) == {}
    assert make_up_stack() == make_up


# --- always removed --------------------------------------------------------------------------------


def test_normal_exit_removes_everything(children: dict[str, Child]) -> None:
    child = children["exit"]
    project = child.expect("ready")[1]
    assert child.finish() == 0, child.errors()
    assert leftovers(project) == {}


def test_an_exception_inside_the_with_removes_everything(children: dict[str, Child]) -> None:
    child = children["raise"]
    project = child.expect("ready")[1]
    assert child.finish() == 1
    assert "RuntimeError: boom inside the with" in child.errors()
    assert leftovers(project) == {}


def test_ctrl_c_removes_everything(children: dict[str, Child]) -> None:
    child = children["sigint"]
    project = child.expect("ready")[1]
    there = leftovers(project)
    assert len(there["containers"]) == 3 and len(there["volumes"]) == 4 and there["networks"] and there["state dir"]
    child.process.send_signal(signal.SIGINT)
    assert child.finish() == -signal.SIGINT, child.errors()  # KeyboardInterrupt, after the teardown
    assert "KeyboardInterrupt" in child.errors()
    assert leftovers(project) == {}


def test_ctrl_c_in_a_pytest_session_removes_its_stack(children: dict[str, Child]) -> None:
    child = children["pytest-sigint"]
    project = child.expect("ready")[1]
    assert len(leftovers(project)["containers"]) == 3
    child.process.send_signal(signal.SIGINT)
    assert child.finish() == pytest.ExitCode.INTERRUPTED, child.errors()
    assert leftovers(project) == {}


def test_ctrl_c_during_the_start_removes_everything(children: dict[str, Child]) -> None:
    child = children["sigint-starting"]
    project = child.expect("progress", "starting containers")[1]  # compose is about to create them
    child.process.send_signal(signal.SIGINT)
    assert child.finish() == -signal.SIGINT, child.errors()
    assert leftovers(project) == {}


def _kill(child: Child, project: str) -> None:
    child.process.kill()
    child.finish()
    there = leftovers(project)  # SIGKILL: no teardown could run
    assert len(there.get("containers", [])) == 3 and there.get("state dir"), there


def test_a_killed_owners_stack_is_removed_at_the_next_start(children: dict[str, Child], reused: Reused) -> None:
    child = children["kill-then-start"]
    project = child.expect("ready")[1]
    _kill(child, project)
    with MailStack(project=reused.project, reuse=True):  # any start prunes; this one is quick
        pass
    assert leftovers(project) == {}


def test_mailstack_prune_removes_a_killed_owners_stack_and_nothing_alive(children: dict[str, Child],
                                                                        reused: Reused) -> None:
    child = children["kill-then-prune"]
    project = child.expect("ready")[1]
    make_up = make_up_stack()

    def prune() -> str:
        result = subprocess.run([sys.executable, "-m", "mailstack", "prune"], capture_output=True, text=True,
                                check=False, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout + result.stderr  # what it reports goes to stderr

    assert project not in prune()  # its owner is alive: left alone, like the reused and `make up` stacks
    assert len(leftovers(project)["containers"]) == 3
    assert len(leftovers(reused.project)["containers"]) == 3
    assert make_up_stack() == make_up

    _kill(child, project)
    output = prune()
    assert leftovers(project) == {}
    assert project in output or "nothing to prune" in output  # another process's start may have been first
    assert len(leftovers(reused.project)["containers"]) == 3
    assert make_up_stack() == make_up


def _fake_stack(project: str, image: str, labels: dict[str, str]) -> None:
    """Containers, volume and network labelled like a stack's, for prune to judge (never started)."""
    flags: list[str] = []
    for key, value in {"com.docker.compose.project": project, "com.docker.compose.service": "mysql",
                       "io.mailstack.project": project, **labels}.items():
        flags += ["--label", f"{key}={value}"]
    for argv in (["network", "create", "--label", f"com.docker.compose.project={project}", f"{project}_default"],
                 ["volume", "create", *flags, f"{project}_db"],
                 ["container", "create", "--name", f"{project}-mysql-1", "--network", f"{project}_default",
                  *flags, image, "true"]):
        subprocess.run(["docker", *argv], check=True, capture_output=True, timeout=60)


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_prune_judges_each_stack_by_its_owner(reused: Reused) -> None:
    image = Stack(MailStack().settings).image_names()[0]
    me, dead = str(os.getpid()), _dead_pid()
    namespace, _, started = owner_label().split("/")
    token = uuid.uuid4().hex[:6]
    fakes = {  # project -> (labels, removed?)
        f"mailstack-fake-dead-{token}": ({"io.mailstack.ephemeral": "true",
                                          "io.mailstack.owner": owner_label(dead)}, True),
        f"mailstack-fake-live-{token}": ({"io.mailstack.ephemeral": "true", "io.mailstack.owner": owner_label()},
                                         False),
        f"mailstack-fake-pid-reused-{token}": ({"io.mailstack.ephemeral": "true",
                                                "io.mailstack.owner": f"{namespace}/{me}/{started}1"}, bool(started)),
        f"mailstack-fake-foreign-{token}": ({"io.mailstack.ephemeral": "true",
                                             "io.mailstack.owner": f"elsewhere:1:boot/{dead}/1"}, False),
        f"mailstack-fake-ownerless-{token}": ({"io.mailstack.ephemeral": "true"}, True),
        f"mailstack-fake-make-up-{token}": ({"io.mailstack.ephemeral": "false"}, False),
    }
    state_dirs = {f"mailstack-fake-dir-dead-{token}": (owner_label(dead), True),
                  f"mailstack-fake-dir-live-{token}": (owner_label(), False)}
    make_up = make_up_stack()
    try:
        with ThreadPoolExecutor(max_workers=len(fakes)) as pool:
            for made in [pool.submit(_fake_stack, p, image, labels) for p, (labels, _) in fakes.items()]:
                made.result()
        for name, (owner, _) in state_dirs.items():
            (stacks_dir() / name).mkdir(parents=True)
            (stacks_dir() / name / OWNER_FILE).write_text(owner)

        removed = prune_stale()

        for project, (_, gone) in fakes.items():
            there = project_resources(project)
            if gone:
                assert not any(there.values()), (project, there)
            else:
                assert project not in removed
                assert there == {"containers": there["containers"], "volumes": [f"{project}_db"],
                                 "networks": [f"{project}_default"]} and len(there["containers"]) == 1, project
        for name, (_, gone) in state_dirs.items():
            assert (stacks_dir() / name).exists() is not gone, name
        assert len(leftovers(reused.project)["containers"]) == 3
        assert make_up_stack() == make_up
    finally:
        for project in fakes:
            remove_project(project)
        for name in state_dirs:
            shutil.rmtree(stacks_dir() / name, ignore_errors=True)


def test_a_disposable_stack_never_takes_over_a_kept_stacks_volumes() -> None:
    """A `make up` stack taken down keeps its volumes; a disposable MailStack under that project name
    would delete them at its end. It refuses to start instead, and the volume stays."""
    project = f"mailstack-fake-kept-{uuid.uuid4().hex[:6]}"
    subprocess.run(["docker", "volume", "create", "--label", f"com.docker.compose.project={project}",
                    "--label", "io.mailstack.ephemeral=false", f"{project}_db"], check=True, capture_output=True)
    try:
        with pytest.raises(MailstackError, match="not disposable"), MailStack(project=project):
            pytest.fail("started")
        assert project_resources(project)["volumes"] == [f"{project}_db"]
        assert not (stacks_dir() / project).exists()
    finally:
        remove_project(project)


# --- reuse -----------------------------------------------------------------------------------------


def test_reuse_attaches_to_the_running_stack_without_compose(reused: Reused,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    before = {service: (info.id, info.running) for service, info in reused.stack.snapshot().items()}

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a running stack was reused: nothing may be provisioned, built or started")

    monkeypatch.setattr(Stack, "start", refuse)
    monkeypatch.setattr(Stack, "build", refuse)
    monkeypatch.setattr(provision, "provision", refuse)
    monkeypatch.setattr(api, "_bring_up", refuse)
    started = time.monotonic()
    with MailStack(project=reused.project, reuse=True) as again:
        attach = time.monotonic() - started
        with again.imap(reused.user) as client:  # the earlier session's user and data are still there
            client.select_folder("INBOX", readonly=True)
        newcomer = again.add_user()
    after = {service: (info.id, info.running) for service, info in reused.stack.snapshot().items()}
    assert after == before and all(running for _, running in after.values())  # same containers, left running
    assert reused.stack.settings.state_dir.exists()
    print(f"\n[reuse] attached in {attach:.2f}s")
    with MailStack(project=reused.project, reuse=True) as third, third.imap(newcomer) as client:
        client.select_folder("INBOX", readonly=True)


def test_reuse_finds_the_running_stacks_state_directory(reused: Reused, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # another TMPDIR: the default state dir differs
    with MailStack(project=reused.project, reuse=True) as again:
        assert again.settings.state_dir == reused.stack.settings.state_dir
        with again.imap(reused.user) as client:
            client.select_folder("INBOX", readonly=True)
    assert not (tmp_path / "mailstack-stacks" / reused.project).exists()


REUSE_TEST = '''
import os

from mailstack.api import User


def test_runs_on_the_reused_stack(mailstack):
    assert mailstack.settings.project == os.environ["EXPECTED_PROJECT"]
    with mailstack.imap(User(os.environ["OLD_ADDRESS"], os.environ["OLD_PASSWORD"])) as client:
        client.select_folder("INBOX", readonly=True)
'''


def test_plugin_reuse_option_uses_the_running_stack_and_leaves_it(reused: Reused, tmp_path: Path) -> None:
    (tmp_path / "test_reuse.py").write_text(REUSE_TEST)
    before = {service: info.id for service, info in reused.stack.snapshot().items()}
    result = inner_pytest(tmp_path, "--mailstack-reuse", reused.project,
                          env={"EXPECTED_PROJECT": reused.project, "OLD_ADDRESS": reused.user.address,
                               "OLD_PASSWORD": reused.user.password})
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"mailstack: stack '{reused.project}' left running" in result.stdout
    assert {service: info.id for service, info in reused.stack.snapshot().items()} == before


def test_a_fresh_stack_logs_no_error_or_warning() -> None:
    """Start-up and a first message leave clean logs: an error or warning that shows on every start
    teaches users to ignore the ones that matter (e.g. a Dovecot probe racing MariaDB, settings below
    MariaDB's minimums, a grant row naming the image's build host)."""
    with MailStack() as stack:
        user = stack.add_user()
        message_id = stack.send(user, user.address, subject="clean logs")
        stack.wait_for_message(user, message_id=message_id)
        noisy = {service: _noisy_lines(stack, service) for service in SERVICES}
    assert noisy == {service: [] for service in SERVICES}


def _noisy_lines(stack: MailStack, service: str) -> list[str]:
    return [line for line in stack.stack.logs(service).splitlines()
            if re.search(r"error|warning|fatal|panic", line, re.IGNORECASE)]


def _spool_filesystem(stack: MailStack) -> str:
    mounts = stack.stack.exec("postfix", ["cat", "/proc/mounts"]).stdout.decode().splitlines()
    return next(line.split()[2] for line in mounts if line.split()[1] == "/var/spool/postfix")


def test_queue_in_memory_puts_postfix_spool_on_tmpfs_and_mail_flows(mailstack: MailStack) -> None:
    """queue_in_memory (load tests): Postfix's spool on tmpfs, rebuilt at each start. The chroot's etc/,
    the queue directories and their modes all come from the Postfix container's start: mail has to flow
    through all of them, and the logs stay clean."""
    assert _spool_filesystem(mailstack) != "tmpfs"  # every stack's default: the `queue` volume
    with MailStack(queue_in_memory=True) as stack:
        assert _spool_filesystem(stack) == "tmpfs"
        assert stack.stack.exec("postfix", ["postfix", "check"]).stdout == b""
        author, recipient = stack.add_user(), stack.add_user()
        message_id = stack.send(author, recipient.address, subject="through a queue in memory")
        assert stack.wait_for_message(recipient, message_id=message_id)["Message-ID"] == message_id
        noisy = _noisy_lines(stack, "postfix")
    assert noisy == []
