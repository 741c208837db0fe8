"""`up --from DIR`: folders written from the public docs (PostfixAdmin's POSTFIX_CONF.txt / DOVECOT.txt
setup, the ISPmail tutorial with a MySQL 8 dump, a setup on this project's default schema), each brought
up and mailed through with production's own queries over its own rows; the plan's report checked; bad
folders refused with nothing left behind.

The samples carry placeholder hashes (`{SCHEME}HASH-OF-<name>`); each test copy gets real ones, made by
Dovecot's own `doveadm pw` (PostfixAdmin's unprefixed `$1$`, as its md5crypt setting stores them).
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import smtplib
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import started_together
from mailstack import cli
from mailstack.api import MailStack, User
from mailstack.errors import MailstackError
from mailstack.production import ProductionInputError
from mailstack.stack import Stack, project_resources
from typer.testing import CliRunner

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "production"
PLACEHOLDER = re.compile(r"\{(?P<scheme>[A-Z0-9-]+)\}HASH-OF-(?P<name>[a-z]+)")
PASSWORDS = {"alice": "alice-pass-1", "bob": "bob-pass-2", "carol": "carol-pass-3", "john": "john-pass-1",
             "jane": "jane-pass-2", "max": "max-pass-3", "ann": "ann-pass-1", "ben": "ben-pass-2"}
UNPREFIXED = {"MD5-CRYPT", "SHA512-CRYPT"}  # PostfixAdmin stores crypt hashes without a prefix
# bob's mailbox was created after the upgrade to a PostfixAdmin with php_crypt's SHA512 default, while
# dovecot-sql.conf still says MD5-CRYPT as DOVECOT.txt does: the production bug to reproduce.
SCHEME_OF = {"bob": "SHA512-CRYPT"}


def doveadm_pw(scheme: str, password: str) -> str:
    image = f"mailstack-dovecot:{Stack(MailStack().settings).tag}"
    made = subprocess.run(["docker", "run", "--rm", "--entrypoint", "doveadm", image, "pw", "-s", scheme,
                           "-p", password], capture_output=True, text=True, check=True).stdout.strip()
    return made.split("}", 1)[1] if scheme in UNPREFIXED else made


def with_real_hashes(name: str, into: Path) -> Path:
    """A copy of a sample folder whose dump holds real hashes for the README's passwords."""
    target = into / name
    shutil.copytree(SAMPLES / name, target)
    for dump in [*target.rglob("*.sql"), *target.rglob("*.gz")]:
        packed = dump.read_bytes()[:2] == b"\x1f\x8b"
        text = (gzip.decompress(dump.read_bytes()) if packed else dump.read_bytes()).decode("utf-8")
        text = PLACEHOLDER.sub(lambda m: doveadm_pw(SCHEME_OF.get(m["name"], m["scheme"]), PASSWORDS[m["name"]]),
                               text)
        dump.write_bytes(gzip.compress(text.encode()) if packed else text.encode())
    return target


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, MailStack]]:
    """One stack per sample folder, started together."""
    folders = tmp_path_factory.mktemp("production")
    stacks = {name: MailStack(from_production=with_real_hashes(name, folders))
              for name in ("postfixadmin", "ispmail", "default")}
    with started_together(stacks):
        yield stacks


def login(address: str) -> User:
    return User(address, PASSWORDS[address.split("@")[0]])


def send_inbound(stack: MailStack, to: str) -> str:
    subject = f"prod-{uuid.uuid4().hex[:10]}"
    stack.send(None, to=to, subject=subject, body="from outside")
    return subject


def test_postfixadmin_setup_runs_its_own_queries_and_rows(production: dict[str, MailStack]) -> None:
    stack = production["postfixadmin"]
    report = stack.plan.as_json()  # type: ignore[union-attr]
    assert report["flavour"] == "postfixadmin"
    rewritten = {entry["name"]: entry for entry in report["postfix"]["rewritten"]}
    assert rewritten["smtpd_tls_cert_file"]["to"] == "/run/mailstack/tls/server.crt"
    dropped = {entry["name"]: entry for entry in report["postfix"]["dropped"]}
    assert "relayhost" in dropped and "content_filter" in dropped
    assert stack.hostname == "mail.example.org"  # production's myhostname; the certificate names it
    # the map files run verbatim (only the connection is the stack's)
    query = stack.stack.exec("postfix", ["grep", "^query", "/etc/postfix/sql/mysql_virtual_alias_maps.cf"])
    assert b"SELECT goto FROM alias WHERE address='%s' AND active = '1'" in query.stdout
    alice = login("alice@example.org")
    subject = send_inbound(stack, alice.address)
    assert stack.wait_for_message(alice, subject=subject)["Subject"] == subject
    via_alias_domain = send_inbound(stack, "alice@example.net")  # example.net is an alias domain of .org
    assert stack.wait_for_message(alice, subject=via_alias_domain)
    to_catch_all = send_inbound(stack, f"nobody-{uuid.uuid4().hex[:6]}@example.org")
    assert in_mailbox(stack, "bob@example.org", to_catch_all)  # bob cannot log in (see below): doveadm looks


def in_mailbox(stack: MailStack, address: str, subject: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        found = stack.stack.exec("dovecot", ["doveadm", "search", "-u", address, "mailbox", "INBOX",
                                             "subject", subject], check=False).stdout.strip()
        if found or time.monotonic() > deadline:
            return bool(found)
        time.sleep(0.1)  # poll interval, bounded by the deadline


def test_postfixadmin_md5_crypt_docs_vs_sha512_hash_reproduces_and_doctor_names_it(
        production: dict[str, MailStack]) -> None:
    stack = production["postfixadmin"]
    with pytest.raises(Exception, match="AUTHENTICATIONFAILED|Authentication failed"):
        stack.imap(login("bob@example.org"))  # Dovecot's MD5-CRYPT verifier refuses his $6$ hash
    result = CliRunner().invoke(cli.app, ["--project", stack.settings.project, "--state-dir",
                                          str(stack.settings.state_dir), "doctor", "--json"])
    check = {c["name"]: c for c in json.loads(result.stdout)["checks"]}["password hashes"]
    assert check["status"] == "fail" and "1 user(s) cannot log in: bob@example.org" in check["detail"], check
    assert "set default_pass_scheme = SHA512-CRYPT" in check["hint"]


def test_postfixadmin_inactive_mailbox_cannot_log_in(production: dict[str, MailStack]) -> None:
    stack = production["postfixadmin"]
    with pytest.raises(Exception, match="AUTHENTICATIONFAILED|Authentication failed"):
        stack.imap(login("carol@example.org"))
    stack.imap(login("alice@example.org")).logout()


def test_ispmail_mysql8_dump_loads_and_mail_flows(production: dict[str, MailStack]) -> None:
    stack = production["ispmail"]
    report = stack.plan.as_json()  # type: ignore[union-attr]
    assert report["flavour"] == "virtual"
    rewrites = report["database"]["rewrites"]
    assert any("0900" in label or "collation" in label for label in rewrites), rewrites
    assert any("DEFINER" in label for label in rewrites), rewrites
    john, jane = login("john@example.org"), login("jane@example.org")
    subject = f"prod-{uuid.uuid4().hex[:10]}"
    stack.send(john, to=jane.address, subject=subject, body="through 587 with john's production hash")
    assert stack.wait_for_message(jane, subject=subject)


def test_default_schema_setup_submission_and_pop3(production: dict[str, MailStack]) -> None:
    stack = production["default"]
    ann, ben = login("ann@default.test"), login("ben@default.test")
    subject = f"prod-{uuid.uuid4().hex[:10]}"
    stack.send(ann, to=ben.address, subject=subject)
    assert stack.wait_for_message(ben, subject=subject)
    with smtplib.SMTP(stack.endpoints.submission.host, stack.endpoints.submission.port) as smtp:
        smtp.starttls(context=stack.ssl_context())
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            smtp.login(ann.address, "not-anns-password")
    assert refused.value.smtp_code == 535


def test_no_secret_of_production_reaches_the_report_or_the_state_dir(production: dict[str, MailStack]) -> None:
    stack = production["postfixadmin"]
    assert "pfa-Secret-8812" in (SAMPLES / "postfixadmin" / "sql" / "mysql_virtual_alias_maps.cf").read_text()
    assert "pfa-Secret-8812" not in str(stack.plan.as_json())  # type: ignore[union-attr]
    assert "pfa-Secret-8812" not in "\n".join(stack.plan.report_lines())  # type: ignore[union-attr]
    for path in stack.settings.state_dir.rglob("*"):
        if path.is_file():
            assert b"pfa-Secret-8812" not in path.read_bytes(), path


@pytest.mark.parametrize("folder", ["main-unparsable", "dump-unterminated", "empty"])
def test_bad_folders_are_refused_before_anything_starts(folder: str) -> None:
    with pytest.raises(ProductionInputError if folder != "empty" else MailstackError) as refused:
        MailStack(from_production=SAMPLES / "bad" / folder)
    if folder != "empty":
        assert re.search(r":\d+: ", refused.value.message), refused.value.message  # file:line


def test_a_dump_the_database_refuses_leaves_no_stack_behind() -> None:
    stack = MailStack(from_production=SAMPLES / "bad" / "dump-bad-statement")
    with pytest.raises(MailstackError) as refused:
        stack.start()
    assert re.search(r"\.sql:\d+: the database refused the statement", refused.value.message), refused.value.message
    left = project_resources(stack.settings.project)
    assert left == {"containers": [], "volumes": [], "networks": []}
    assert not stack.settings.state_dir.exists()
