"""MailStackContainer used the way a testcontainers user would: a fixture `with MailStackContainer() as mail`,
plain smtplib and IMAP clients on get_container_host_ip() / get_exposed_port(587 / 993), TLS verified against
the stack's CA, a testcontainers wait strategy, TESTCONTAINERS_RYUK_DISABLED unset (Ryuk's image cannot be
pulled here), and nothing left of the stack after the `with`."""

from __future__ import annotations

import os
import smtplib
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
from imapclient import IMAPClient
from mailstack.stack import project_resources
from mailstack.testcontainers import MailStackContainer
from testcontainers.core.wait_strategies import LogMessageWaitStrategy

pytestmark = pytest.mark.integration

ALICE, ALICE_PASSWORD = "alice@example.test", "alice-password"


@pytest.fixture(scope="module", autouse=True)
def ryuk_setting_unset() -> Iterator[None]:
    """As on a machine where nobody set it: testcontainers would start Ryuk for a container of its own."""
    saved = os.environ.pop("TESTCONTAINERS_RYUK_DISABLED", None)
    yield
    if saved is not None:
        os.environ["TESTCONTAINERS_RYUK_DISABLED"] = saved


@pytest.fixture(scope="module")
def mail(ryuk_setting_unset: None) -> Iterator[MailStackContainer]:
    container = (MailStackContainer().with_user(ALICE, ALICE_PASSWORD)
                 .waiting_for(LogMessageWaitStrategy("postfix/master.*daemon started").with_startup_timeout(30)))
    with container as mail:
        yield mail


def test_mail_over_submission_comes_back_over_imaps(mail: MailStackContainer) -> None:
    subject = f"tc-{uuid.uuid4().hex[:12]}"
    tls = ssl.create_default_context(cafile=str(mail.ca_cert))  # verification on, only the stack's CA
    with smtplib.SMTP(mail.get_container_host_ip(), mail.get_exposed_port(587), timeout=30) as smtp:
        smtp.starttls(context=tls)
        smtp.login(ALICE, ALICE_PASSWORD)
        smtp.sendmail(ALICE, [ALICE], f"Subject: {subject}\r\nFrom: {ALICE}\r\n\r\nhello\r\n".encode())

    with IMAPClient(mail.get_container_host_ip(), port=mail.get_exposed_port(993), ssl=True, ssl_context=tls,
                    timeout=30) as imap:
        imap.login(ALICE, ALICE_PASSWORD)
        imap.select_folder("INBOX", readonly=True)
        deadline = time.monotonic() + 15
        while not (found := imap.search(["SUBJECT", subject])):
            assert time.monotonic() < deadline, f"{subject} did not arrive in {ALICE}'s INBOX"
            time.sleep(0.1)
            imap.noop()
        body = imap.fetch(found, ["BODY[TEXT]"])[found[0]][b"BODY[TEXT]"]
    assert body.strip() == b"hello"


def test_delegated_helpers_and_connection_params(mail: MailStackContainer) -> None:
    bob = mail.add_user()
    params = mail.get_connection_params(bob)
    assert params["username"] == bob.address and params["imap_port"] == mail.get_exposed_port(993)
    message_id = mail.send(bob, to=bob.address, subject="params")
    assert mail.wait_for_message(bob, message_id=message_id)["Subject"] == "params"
    assert mail.status == "running"


def test_no_ryuk_was_started(mail: MailStackContainer) -> None:
    images = subprocess.run(["docker", "ps", "--all", "--format", "{{.Image}}"], capture_output=True, text=True,
                            check=True).stdout
    assert "ryuk" not in images


def test_nothing_is_left_after_the_with(ryuk_setting_unset: None) -> None:
    with MailStackContainer() as mail:
        project, state_dir = mail.project, mail.mailstack.settings.state_dir
        assert project_resources(project)["containers"]
    assert project_resources(project) == {"containers": [], "volumes": [], "networks": []}
    assert not state_dir.exists()
