"""pytest plugin (entry point `pytest11`): a real mail stack for a test session.

Fixtures: `mailstack` (session-scoped MailStack, one per xdist worker), `mail_user` (a fresh user per
test). Options: --mailstack-keep (leave the stack up after the session), --mailstack-reuse (use an
already running stack of the given project instead of starting one).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailstack.api import MailStack, User


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mailstack", "real Postfix + Dovecot + MariaDB stack")
    group.addoption("--mailstack-keep", action="store_true", default=False,
                    help="leave the session's stack running afterwards (prints its project name)")
    group.addoption("--mailstack-reuse", metavar="PROJECT", default=None,
                    help="reuse this running stack (or start it under that name and keep it)")
    group.addoption("--mailstack-seed", metavar="FILE", default=None, help="seed file applied at start")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "mailstack: the test uses the mailstack fixtures")


@pytest.fixture(scope="session")
def mailstack(request: pytest.FixtureRequest) -> Iterator[MailStack]:
    """One isolated stack for the session (per xdist worker), removed afterwards."""
    config = request.config
    keep = config.getoption("--mailstack-keep")
    reuse = config.getoption("--mailstack-reuse")
    seed_file = config.getoption("--mailstack-seed")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    project = reuse or None
    if project and worker:
        project = f"{project}-{worker}"
    kwargs = {"project": project, "keep": keep, "reuse": bool(reuse)}
    stack = MailStack.from_file(Path(seed_file), **kwargs) if seed_file else MailStack(**kwargs)
    with stack:
        yield stack
    if keep or reuse:
        print(f"\nmailstack: stack '{stack.settings.project}' left running "
              f"(state in {stack.settings.state_dir}); `mailstack -p {stack.settings.project} down -v` removes it")


@pytest.fixture
def mail_user(mailstack: MailStack) -> User:
    """A fresh mailbox user for this test: its own address and password, nobody else's mail."""
    return mailstack.add_user()


@pytest.fixture
def mail_user_factory(mailstack: MailStack):
    """Make as many fresh users as a test needs: mail_user_factory() -> User."""
    return mailstack.add_user
