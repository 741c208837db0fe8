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
