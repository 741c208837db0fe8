"""Issue 15: Roundcube against the stack's own Dovecot and Postfix, driven in Debian's headless Chromium
(Playwright with executable_path; its browser download is never used), and the client autoconfiguration
documents served by the webmail's nginx. Every browser test leaves a screenshot in the artifacts folder."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mailstack import cli, provision
from mailstack.api import MailStack, User
from typer.testing import CliRunner

pytestmark = [pytest.mark.integration, pytest.mark.browser]

EXAMPLE_SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"
ARTIFACTS = Path(os.environ.get("MAILSTACK_ARTIFACTS", Path(__file__).resolve().parents[2] / ".artifacts"))
AUTODISCOVER = "{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}"
AUTODISCOVER_REQUEST = """<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
  <Request><EMailAddress>{address}</EMailAddress>
  <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
  </Request>
</Autodiscover>"""


@pytest.fixture(scope="module")
def webmail() -> Iterator[MailStack]:
    """A stack with its webmail, seeded as `make up` seeds (examples/seed.yaml)."""
    with MailStack.from_file(EXAMPLE_SEED, webmail=True) as stack:
        yield stack


@pytest.fixture(scope="module")
def alice(webmail: MailStack) -> User:
    return User("alice@example.test", "alice-password")  # the example seed's users


@pytest.fixture(scope="module")
def bob(webmail: MailStack) -> User:
    return User("bob@example.test", "bob-password")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    chromium = provision.ensure_browser(print)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(chromium))
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, webmail: MailStack, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context (no cookies) on the webmail; its screenshot is saved after the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(15_000)
    tab = context.new_page()
    tab.goto(webmail.webmail_url)
    yield tab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / f"webmail-{request.node.name}.png"))
    context.close()


def log_in(page: Any, user: User, password: str | None = None) -> None:
    page.fill("#rcmloginuser", user.address)
    page.fill("#rcmloginpwd", user.password if password is None else password)
    page.click("#rcmloginsubmit")


def row(page: Any, subject: str) -> Any:
    return page.locator("#messagelist tbody tr", has_text=subject)


def get(url: str, data: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "text/xml"} if data else {})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - the stack's own http URL
        return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()


def test_a_message_sent_through_587_is_listed_and_opens_with_its_body(webmail: MailStack, alice: User,
                                                                       bob: User, page: Any) -> None:
    subject = f"webmail-{uuid.uuid4().hex[:8]}"
    body = f"the body of {subject}"
    webmail.send(bob, to=alice.address, subject=subject, body=body)
    webmail.wait_for_message(alice, subject=subject)
    log_in(page, alice)
    page.wait_for_selector("#messagelist")
    row(page, subject).first.click()
    preview = page.frame_locator("#messagecontframe")
    preview.locator("#messagebody").get_by_text(body).wait_for()
    assert preview.locator(".subject").first.inner_text().strip().endswith(subject)


def test_a_reply_from_the_browser_arrives_over_imap(webmail: MailStack, alice: User, bob: User, page: Any) -> None:
    subject = f"reply-{uuid.uuid4().hex[:8]}"
    webmail.send(bob, to=alice.address, subject=subject, body="please answer")
    webmail.wait_for_message(alice, subject=subject)
    log_in(page, alice)
    row(page, subject).first.dblclick()  # the message in full, with its own toolbar
    page.locator("a.reply:not(.all):visible").first.click()
    body = page.locator("#composebody")
    body.wait_for()
    body.press("Control+Home")
    body.press_sequentially("answered from the browser\n")
    page.locator("button.send:visible, a.send:visible").first.click()  # elastic shows a clone of the button
    reply = webmail.wait_for_message(bob, subject=f"Re: {subject}", timeout=30)
    assert reply["From"].addresses[0].addr_spec == alice.address
    assert "answered from the browser" in reply.get_content()
    assert subject in str(reply["In-Reply-To"] or "") or reply["References"]  # threaded as a reply


def test_the_filters_page_reads_the_users_sieve_script_over_managesieve(webmail: MailStack, alice: User,
                                                                       page: Any) -> None:
    """Roundcube's managesieve plugin (STARTTLS to Dovecot's 4190, verified) lists the rules of the active
    script, here one set through the API."""
    rule = f"from-bob-{uuid.uuid4().hex[:6]}"
    webmail.set_sieve(alice, f'require ["fileinto"];\n# rule:[{rule}]\n'
                             'if header :contains "from" "bob@example.test" { fileinto "Junk"; }\n')
    log_in(page, alice)
    page.wait_for_url(re.compile(r"_task=mail"))  # logged in
    page.goto(webmail.webmail_url + "/?_task=settings&_action=plugin.managesieve")
    page.locator("#filterslist").get_by_text(rule).wait_for()
    assert page.get_by_text("Unable to connect").count() == 0


def test_a_wrong_password_shows_roundcubes_error_and_logs_it(webmail: MailStack, page: Any, alice: User) -> None:
    log_in(page, alice, password="not-" + alice.password)
    page.get_by_text("Login failed").first.wait_for()
    assert page.locator("#rcmloginuser").is_visible()  # still the login form
    # Roundcube logs to stdout (log_driver), php-fpm passes it on: in the container's log
    assert f"Failed login for {alice.address}" in webmail.stack.logs("webmail")


def test_the_login_page_sets_the_usual_headers(webmail: MailStack) -> None:
    status, headers, body = get(webmail.webmail_url + "/")
    assert status == 200 and b"rcmloginuser" in body
    assert "frame-ancestors 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"].lower() == "sameorigin"
    assert headers["x-content-type-options"] == "nosniff"
    assert "no-store" in headers["cache-control"] or "no-cache" in headers["cache-control"]
    with pytest.raises(urllib.error.HTTPError) as refused:  # Roundcube's own files stay private
        get(webmail.webmail_url + "/config/config.inc.php")
    assert refused.value.code in (403, 404)


def test_the_webmail_verifies_the_stacks_certificate_and_name(webmail: MailStack) -> None:
    """What Roundcube's connections rest on, in its own container: the stack's CA and host name verify;
    another name for the same certificate is refused."""
    def connect(peer_name: str) -> int:
        script = ("$c = stream_context_create(['ssl' => ['verify_peer' => true, 'verify_peer_name' => true, "
                  f"'peer_name' => '{peer_name}', 'cafile' => '/run/mailstack/tls/ca.crt']]);"
                  "$s = @stream_socket_client('ssl://dovecot:993', $e, $m, 10, STREAM_CLIENT_CONNECT, $c);"
                  "exit($s ? 0 : 3);")
        return webmail.stack.exec("webmail", ["php", "-r", script], check=False).returncode

    assert connect(webmail.hostname) == 0
    assert connect("not-the-stack.example") == 3


@pytest.mark.parametrize("path", ["/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml"])
def test_thunderbirds_autoconfig_names_the_stacks_ports(webmail: MailStack, path: str) -> None:
    status, headers, body = get(webmail.webmail_url + path + "?emailaddress=alice%40example.test")
    assert status == 200 and "xml" in headers["content-type"]
    provider = ET.fromstring(body).find("emailProvider")  # noqa: S314 - the stack's own document
    assert provider is not None
    ports = {(s.get("type"), int(s.findtext("port") or 0), s.findtext("socketType"))
             for s in [*provider.findall("incomingServer"), *provider.findall("outgoingServer")]}
    endpoints = webmail.endpoints
    assert ports == {("imap", endpoints.imaps.port, "SSL"), ("pop3", endpoints.pop3s.port, "SSL"),
                     ("smtp", endpoints.submission.port, "STARTTLS"), ("smtp", endpoints.smtps.port, "SSL")}
    assert "example.test" in [domain.text for domain in provider.findall("domain")]


def test_outlooks_autodiscover_answers_a_post_with_the_address(webmail: MailStack, alice: User) -> None:
    request = AUTODISCOVER_REQUEST.format(address=alice.address).encode()
    status, _headers, body = get(webmail.webmail_url + "/autodiscover/autodiscover.xml", data=request)
    assert status == 200
    protocols = {p.findtext(f"{AUTODISCOVER}Type"): p for p in ET.fromstring(body).iter(f"{AUTODISCOVER}Protocol")}  # noqa: S314
    assert int(protocols["IMAP"].findtext(f"{AUTODISCOVER}Port") or 0) == webmail.endpoints.imaps.port
    assert int(protocols["SMTP"].findtext(f"{AUTODISCOVER}Port") or 0) == webmail.endpoints.submission.port
    assert protocols["SMTP"].findtext(f"{AUTODISCOVER}LoginName") == alice.address


def test_a_domain_added_later_is_in_the_autoconfig(webmail: MailStack) -> None:
    domain = webmail.add_domain(f"later-{uuid.uuid4().hex[:6]}.test")
    _status, _headers, body = get(webmail.webmail_url + "/mail/config-v1.1.xml")
    assert domain in re.findall(r"<domain>([^<]+)</domain>", body.decode())


def test_status_and_client_config_name_the_webmail(webmail: MailStack, alice: User) -> None:
    base = ["--project", webmail.settings.project, "--state-dir", str(webmail.settings.state_dir)]
    status = CliRunner().invoke(cli.app, [*base, "status", "--json"])
    assert status.exit_code == 0, status.output
    data = json.loads(status.output)
    assert data["endpoints"]["webmail"] == str(webmail.endpoints.webmail)
    assert data["services"]["webmail"]["health"] == "healthy"
    config = CliRunner().invoke(cli.app, [*base, "client-config", alice.address, "--json"])
    assert config.exit_code == 0, config.output
    autoconfig = json.loads(config.output)["autoconfig"]
    assert autoconfig["thunderbird"] == webmail.webmail_url + "/.well-known/autoconfig/mail/config-v1.1.xml"
