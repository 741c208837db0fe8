"""Integration tests: a real, disposable stack per session (random loopback ports), real clients."""

from __future__ import annotations

import ssl
import uuid

import pytest
from mailstack.api import MailStack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def tls(mailstack: MailStack) -> ssl.SSLContext:
    """A client TLS context trusting only the stack's CA (verification on)."""
    return mailstack.ssl_context()


@pytest.fixture
def unique() -> str:
    """A unique token for subjects and addresses, so every test finds exactly its own mail."""
    return uuid.uuid4().hex[:12]


@pytest.fixture(scope="session")
def own_stack_options(request: pytest.FixtureRequest) -> dict[str, bool]:
    """What the session's options ask of the stacks a module starts itself (MailStack(**own_stack_options)), as the
    plugin's session stack gets it: --mailstack-lmtp-tcp."""
    return {"lmtp_auth_tcp": True} if request.config.getoption("--mailstack-lmtp-tcp") else {}
