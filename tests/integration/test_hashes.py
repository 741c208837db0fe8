"""Password hashes as production databases store them: every format logs in over IMAPS and SMTP AUTH,
unprefixed ones verified with the passdb's default_pass_scheme exactly as Dovecot does. PostfixAdmin's
docs say `default_pass_scheme = MD5-CRYPT` while it stores `$6$` hashes: that bug reproduces, and
`mailstack doctor` names the users it locks out, with the fix.

The hashes are made by Dovecot's own `doveadm pw` in the stack's container (what production admins use).
"""

from __future__ import annotations

import json
import smtplib
import uuid
from collections.abc import Iterator

import imapclient.exceptions
import pytest
from helpers import started_together
from mailstack import cli
from mailstack.api import MailStack
from mailstack.seed import SeedFile, seed_database
from typer.testing import CliRunner

PASSWORD = "production-secret-1"
DOMAIN = "example.test"
# user -> (doveadm pw scheme, keep the {SCHEME} prefix)
FORMATS = {
    "md5-unprefixed": ("MD5-CRYPT", False),  # PostfixAdmin's old default
    "sha512-unprefixed": ("SHA512-CRYPT", False),  # PostfixAdmin's php_crypt default since 2021
    "sha512-prefixed": ("SHA512-CRYPT", True),
    "blf-prefixed": ("BLF-CRYPT", True),  # $2y$
    "argon2i": ("ARGON2I", True),
    "argon2id": ("ARGON2ID", True),
    "ssha512": ("SSHA512", True),
    "plain": ("PLAIN", True),
}


@pytest.fixture(scope="module")
def stacks() -> Iterator[dict[str, MailStack]]:
    """Two stacks that differ only in the passdb's default_pass_scheme, started together."""
    found = {scheme: MailStack(default_pass_scheme=scheme) for scheme in ("MD5-CRYPT", "SHA512-CRYPT")}
    with started_together(found):
        yield found


def doveadm_hash(stack: MailStack, scheme: str, keep_prefix: bool) -> str:
    made = stack.stack.exec("dovecot", ["doveadm", "pw", "-s", scheme, "-p", PASSWORD]).stdout.decode().strip()
    assert made.startswith("{" + scheme + "}"), made
    return made if keep_prefix else made.split("}", 1)[1]


def seeded(stack: MailStack) -> dict[str, str]:
    """A user per format; returns label -> address."""
    token = uuid.uuid4().hex[:6]
    addresses = {label: f"{label}-{token}@{DOMAIN}" for label in FORMATS}
    users = [{"address": addresses[label], "password_hash": doveadm_hash(stack, scheme, prefixed)}
             for label, (scheme, prefixed) in FORMATS.items()]
    seed = SeedFile.model_validate({"domains": [DOMAIN], "users": users})
    seed_database(stack.database, seed, stack.settings.password_scheme, stack.settings.hash_cost)
    return addresses


def imap_login(stack: MailStack, address: str) -> bool:
    client = imapclient.IMAPClient(stack.endpoints.imaps.host, port=stack.endpoints.imaps.port, ssl=True,
                                   ssl_context=stack.ssl_context(), timeout=30)
    try:
        client.login(address, PASSWORD)
        return True
    except imapclient.exceptions.LoginError:
        return False
    finally:
        client.shutdown()


def smtp_login(stack: MailStack, address: str) -> int:
    with smtplib.SMTP(stack.endpoints.submission.host, stack.endpoints.submission.port, timeout=30) as smtp:
        smtp.starttls(context=stack.ssl_context())
        try:
            return smtp.login(address, PASSWORD)[0]
        except smtplib.SMTPAuthenticationError as exc:
            return exc.smtp_code


def doctor(stack: MailStack) -> dict[str, dict[str, str]]:
    result = CliRunner().invoke(cli.app, ["--project", stack.settings.project, "--state-dir",
                                          str(stack.settings.state_dir), "doctor", "--json"])
    return {check["name"]: check for check in json.loads(result.stdout)["checks"]}


def test_every_production_format_logs_in_with_a_fitting_default_scheme(stacks: dict[str, MailStack]) -> None:
    stack = stacks["SHA512-CRYPT"]
    addresses = seeded(stack)
    logins = {label: (imap_login(stack, address), smtp_login(stack, address)) for label, address in addresses.items()}
    # libcrypt verifies $1$ too: under SHA512-CRYPT (as under CRYPT) both unprefixed kinds work
    assert logins == {label: (True, 235) for label in FORMATS}
    check = doctor(stack)["password hashes"]
    assert check["status"] == "ok" and "SHA512-CRYPT" in check["detail"], check


def test_postfixadmin_md5_crypt_docs_lock_out_its_sha512_hashes_and_doctor_names_them(
        stacks: dict[str, MailStack]) -> None:
    stack = stacks["MD5-CRYPT"]
    addresses = seeded(stack)
    logins = {label: imap_login(stack, address) for label, address in addresses.items()}
    assert logins == {label: label != "sha512-unprefixed" for label in FORMATS}
    assert smtp_login(stack, addresses["sha512-unprefixed"]) == 535
    assert smtp_login(stack, addresses["md5-unprefixed"]) == 235
    check = doctor(stack)["password hashes"]
    assert check["status"] == "fail", check
    assert addresses["sha512-unprefixed"] in check["detail"]
    assert "1 user(s) cannot log in" in check["detail"]  # only that one: prefixed hashes are fine
    assert "verified as MD5-CRYPT (default_pass_scheme = MD5-CRYPT)" in check["detail"]
    assert "set default_pass_scheme = SHA512-CRYPT" in check["hint"]
