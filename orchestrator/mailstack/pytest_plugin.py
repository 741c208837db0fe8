"""pytest plugin (entry point `pytest11`): a real mail stack for a test session.

Fixtures: `mailstack` (session-scoped MailStack, one per xdist worker), `mail_user` (a fresh user per
test), `mail_user_factory`, and for tests that change the stack's state (delete users, fill or empty
mailboxes, leave mail queued): `mailstack_snapshot` (the session's MailStack, restored after the test to
what it was when a test first asked for this fixture: a snapshot saved once per session) and
`mailstack_module_snapshot` (the same, restored once after the last test of the module). A restore takes
well under a second and closes IMAP/POP3 sessions left open (see MailStack.restore).
Options: --mailstack-keep (leave the stack up after the session),
--mailstack-reuse (use an already running stack of the given project instead of starting one; under
xdist each worker uses PROJECT-gwN), --mailstack-seed, --mailstack-schema (the schema flavour: default,
virtual or postfixadmin), --mailstack-world, --mailstack-webmail, --mailstack-lmtp-tcp (Postfix reaches Dovecot's
LMTP, SASL auth and quota-status over TCP on an internal network instead of unix sockets).

The stack is removed at the end of the session, also when it fails or is interrupted (Ctrl-C); a stack
left by a killed session is removed by label at the next start of any MailStack (or `mailstack prune`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import nullcontext, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # imported when a test uses the fixtures: every pytest run in a project loads this plugin
    from mailstack.api import MailStack, User


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mailstack", "real Postfix + Dovecot + MariaDB stack")
    group.addoption("--mailstack-keep", action="store_true", default=False,
                    help="leave the session's stack running afterwards (prints its project name)")
    group.addoption("--mailstack-reuse", metavar="PROJECT", default=None,
                    help="reuse this running stack (or start it under that name and keep it)")
    group.addoption("--mailstack-seed", metavar="FILE", default=None, help="seed file applied at start")
    group.addoption("--mailstack-schema", metavar="NAME", default=None,
                    help="schema flavour of the session's stack: default, virtual or postfixadmin "
                         "(default: MAILSTACK_SCHEMA, else default)")
    group.addoption("--mailstack-world", action="store_true", default=False,
                    help="give the session's stack its outside world: DNS, rspamd (DKIM, SPF/DMARC, spam) and an "
                         "outside MX catching mail for other domains (mailstack.outbound_messages(), "
                         "wait_for_outbound(), send_from_outside())")
    group.addoption("--mailstack-webmail", action="store_true", default=False,
                    help="give the session's stack its webmail: Roundcube and the client autoconfiguration "
                         "(mailstack.webmail_url)")
    group.addoption("--mailstack-lmtp-tcp", action="store_true", default=False,
                    help="Postfix reaches Dovecot's LMTP, SASL auth and quota-status over TCP on an internal network "
                         "only the two share, instead of unix sockets (as across machines)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "mailstack: the test uses the mailstack fixtures")


def stack_options(keep: bool, reuse: str | None, worker: str | None, schema: str | None = None,
                  world: bool = False, webmail: bool = False, lmtp_auth_tcp: bool = False) -> dict[str, Any]:
    """MailStack's arguments for this session. Without --mailstack-reuse every session, and under xdist
    every worker, gets a stack of its own under a random project name; with it, each worker reuses one
    of its own (PROJECT-gw0, PROJECT-gw1, ...), so that workers never start or seed the same stack."""
    project = f"{reuse}-{worker}" if reuse and worker else reuse or None
    options: dict[str, Any] = {"project": project, "keep": keep, "reuse": bool(reuse)}
    if schema is not None:
        options["schema"] = schema
    if world:
        options["world"] = True
    if webmail:
        options["webmail"] = True
    if lmtp_auth_tcp:
        options["lmtp_auth_tcp"] = True
    return options


@pytest.fixture(scope="session")
def mailstack(request: pytest.FixtureRequest) -> Iterator[MailStack]:
    """One isolated stack for the session (per xdist worker), removed afterwards."""
    config = request.config
    keep = config.getoption("--mailstack-keep")
    reuse = config.getoption("--mailstack-reuse")
    seed_file = config.getoption("--mailstack-seed")
    from mailstack.api import MailStack

    kwargs = stack_options(keep, reuse, os.environ.get("PYTEST_XDIST_WORKER"), config.getoption("--mailstack-schema"),
                           config.getoption("--mailstack-world"), config.getoption("--mailstack-webmail"),
                           config.getoption("--mailstack-lmtp-tcp"))
    stack = MailStack.from_file(Path(seed_file), **kwargs) if seed_file else MailStack(**kwargs)
    with stack:
        yield stack
    if keep or reuse:
        _tell(config, f"mailstack: stack '{stack.settings.project}' left running (state in "
                      f"{stack.settings.state_dir}); `mailstack -p {stack.settings.project} down -v` removes it")


@pytest.fixture(scope="session")
def mailstack_baseline(mailstack: MailStack) -> Iterator[str]:
    """The name of a snapshot of the session's stack, saved when a test first needs it; deleted at the end."""
    from mailstack.errors import MailstackError

    name = f"pytest-{uuid.uuid4().hex[:8]}"  # of this session: a reused stack may serve several at once
    mailstack.snapshot(name)
    yield name
    with suppress(MailstackError):
        mailstack.delete_snapshot(name)


@pytest.fixture
def mailstack_snapshot(mailstack: MailStack, mailstack_baseline: str) -> Iterator[MailStack]:
    """The session's stack; after the test it is restored to the session's baseline snapshot."""
    yield mailstack
    mailstack.restore(mailstack_baseline)


@pytest.fixture(scope="module")
def mailstack_module_snapshot(mailstack: MailStack, mailstack_baseline: str) -> Iterator[MailStack]:
    """The session's stack; after the module's last test it is restored to the session's baseline snapshot."""
    yield mailstack
    mailstack.restore(mailstack_baseline)


def _tell(config: pytest.Config, message: str) -> None:
    """A line on the terminal, past output capturing (a print in a fixture's teardown would be swallowed)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:  # an xdist worker has no terminal of its own
        return
    capture = config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else nullcontext():
        reporter.write_line(message)


@pytest.fixture
def mail_user(mailstack: MailStack) -> User:
    """A fresh mailbox user for this test: its own address and password, nobody else's mail."""
    return mailstack.add_user()


@pytest.fixture
def mail_user_factory(mailstack: MailStack) -> Callable[..., User]:
    """Make as many fresh users as a test needs: mail_user_factory(address=None, password=None) -> User."""
    return mailstack.add_user
