"""Issue 12: Sieve filters at LMTP delivery, ManageSieve on 4190, vacation replies through Postfix.

Every test uses fresh users and unique subjects and polls with deadlines; ManageSieve is spoken by a small
client here (RFC 5804 over socket + ssl, TLS verified against the stack's CA). Proof that something did
NOT happen is always anchored on something later that did (a later message, a later reply, Dovecot's own
log line for the decision), never on a sleep.
"""

from __future__ import annotations

import base64
import email.message
import email.policy
import email.utils
import re
import socket
import time
from pathlib import Path

import pytest
from mailstack import cli
from mailstack.api import MailStack, User
from mailstack.errors import MailstackError
from typer.testing import CliRunner, Result

FILEINTO = """require ["fileinto", "mailbox"];
if header :contains "subject" "{token}" {{
  fileinto :create "{folder}";
}}
"""
# line 3 calls a command that does not exist: Sieve refuses it at validation, naming line 3
BROKEN = """require ["fileinto"];
if header :contains "subject" "x" {
  fileintoo "Nowhere";
}
"""


def _message(sender: str, to: str, subject: str, **headers: str) -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = email.utils.make_msgid(domain="client.test")
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content("hello")
    return message


def _subjects(stack: MailStack, user: User, token: str, folder: str = "INBOX") -> list[str]:
    with stack.imap(user) as client:
        client.select_folder(folder, readonly=True)
        found = client.search(["SUBJECT", token])
        fetched = client.fetch(found, ["ENVELOPE"]) if found else {}
    return sorted(data[b"ENVELOPE"].subject.decode() for data in fetched.values())


def _replies(stack: MailStack, user: User, token: str) -> list[email.message.EmailMessage]:
    with stack.imap(user) as client:
        client.select_folder("INBOX", readonly=True)
        found = client.search(["SUBJECT", token])
        fetched = client.fetch(found, ["RFC822"]) if found else {}
    return [email.message_from_bytes(data[b"RFC822"], policy=email.policy.default)  # type: ignore[misc]
            for data in fetched.values()]


def _dovecot_log_line(stack: MailStack, pattern: str, timeout: float = 10.0) -> str:
    """Poll Dovecot's log for a line (its LMTP decisions are logged when delivery finishes)."""
    deadline = time.monotonic() + timeout
    while True:
        for line in stack.stack.logs("dovecot").splitlines():
            if re.search(pattern, line):
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"no Dovecot log line matching {pattern!r} within {timeout}s")
        time.sleep(0.1)  # poll interval, bounded by the deadline


def run(stack: MailStack, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli.app, ["--project", stack.settings.project,
                                        "--state-dir", str(stack.settings.state_dir), *args], input=input)


# --- filters at delivery ---------------------------------------------------------------------


def test_fileinto_creates_the_folder_and_the_message_lands_there(mailstack: MailStack, mail_user_factory,
                                                                 unique: str) -> None:
    user, sender = mail_user_factory(), mail_user_factory()
    folder = f"Filtered-{unique}"
    mailstack.set_sieve(user, FILEINTO.format(token=f"tofile {unique}", folder=folder))
    mailstack.send(sender, to=user.address, subject=f"tofile {unique}")
    mailstack.send(sender, to=user.address, subject=f"stays {unique}")
    mailstack.wait_for_message(user, subject=f"stays {unique}")  # delivered after the filtered one
    filed = mailstack.wait_for_message(user, subject=f"tofile {unique}", folder=folder)
    assert filed["From"] == sender.address
    assert _subjects(mailstack, user, unique) == [f"stays {unique}"]  # not in INBOX too


def test_redirect_sends_the_message_to_another_local_user(mailstack: MailStack, mail_user_factory,
                                                          unique: str) -> None:
    user, target, sender = mail_user_factory(), mail_user_factory(), mail_user_factory()
    mailstack.set_sieve(user, f'if header :contains "subject" "away {unique}" {{ redirect "{target.address}"; }}\n')
    mailstack.send(sender, to=user.address, subject=f"away {unique}")
    mailstack.send(sender, to=user.address, subject=f"kept {unique}")
    redirected = mailstack.wait_for_message(target, subject=f"away {unique}")
    assert redirected["From"] == sender.address
    assert redirected["Return-Path"] == f"<{sender.address}>"  # the original envelope sender (Pigeonhole's default)
    mailstack.wait_for_message(user, subject=f"kept {unique}")
    assert _subjects(mailstack, user, unique) == [f"kept {unique}"]  # redirect without :copy keeps nothing


def test_reject_notifies_the_sender_and_delivers_nothing(mailstack: MailStack, mail_user_factory,
                                                         unique: str) -> None:
    user, sender = mail_user_factory(), mail_user_factory()
    mailstack.set_sieve(user, f'require "reject";\nif header :contains "subject" "no {unique}" '
                              f'{{ reject "not from you {unique}"; }}\n')
    mailstack.send(sender, to=user.address, subject=f"no {unique}")
    notice = mailstack.wait_for_message(sender, subject=f"Rejected: no {unique}")
    assert notice["Auto-Submitted"].startswith("auto-replied")
    assert notice.get_content_type() == "multipart/report"
    assert f"not from you {unique}" in notice.as_string()
    # the rejection was sent while LMTP handled the message: by now the user has all they would get
    mailstack.send(sender, to=user.address, subject=f"later {unique}")
    mailstack.wait_for_message(user, subject=f"later {unique}")
    assert _subjects(mailstack, user, unique) == [f"later {unique}"]


# --- vacation --------------------------------------------------------------------------------


def _vacation(subject: str) -> str:
    return f'require "vacation";\nvacation :days 1 :subject "{subject}" "I am away until Monday.";\n'


def test_vacation_replies_once_per_period_with_a_null_envelope_sender(mailstack: MailStack, mail_user_factory,
                                                                      unique: str) -> None:
    user, sender, other = mail_user_factory(), mail_user_factory(), mail_user_factory()
    mailstack.set_sieve(user, _vacation(f"away {unique}"))
    mailstack.set_sieve(other, _vacation(f"also away {unique}"))
    first = mailstack.send(sender, to=user.address, subject=f"one {unique}")
    second = mailstack.send(sender, to=user.address, subject=f"two {unique}")
    mailstack.wait_for_message(user, message_id=second)
    reply = mailstack.wait_for_message(sender, subject=f"away {unique}")
    assert reply["In-Reply-To"] == first
    assert reply["Return-Path"] == "<>"  # RFC 5230: never to be answered or bounced
    assert reply["From"] == f"<{user.address}>" or reply["From"] == user.address
    assert reply["Auto-Submitted"] == "auto-replied (vacation)"
    _dovecot_log_line(mailstack, rf"msgid={re.escape(second)}: vacation action: discarded duplicate vacation "
                                 rf"response to <{re.escape(sender.address)}>")
    # a later reply to the same sender, from another user, has arrived: a second one would have too
    mailstack.send(sender, to=other.address, subject=f"three {unique}")
    mailstack.wait_for_message(sender, subject=f"also away {unique}")
    assert [m["In-Reply-To"] for m in _replies(mailstack, sender, f"away {unique}")
            if m["Subject"] == f"away {unique}"] == [first]


@pytest.mark.parametrize("header", [{"Auto_Submitted": "auto-generated"}, {"List_Id": "<news.lists.example.test>"}],
                         ids=["auto-submitted", "list-id"])
def test_vacation_never_answers_automatic_or_list_mail(mailstack: MailStack, mail_user_factory, unique: str,
                                                       header: dict[str, str]) -> None:
    user, sender = mail_user_factory(), mail_user_factory()
    mailstack.set_sieve(user, _vacation(f"away {unique}"))
    automatic = _message(sender.address, user.address, f"automatic {unique}", **header)
    mailstack.send(sender, to=user.address, message=automatic)
    mailstack.wait_for_message(user, subject=f"automatic {unique}")  # delivered, not answered
    normal = mailstack.send(sender, to=user.address, subject=f"personal {unique}")
    reply = mailstack.wait_for_message(sender, subject=f"away {unique}")
    assert reply["In-Reply-To"] == normal  # the personal one was answered (first reply to this sender) ...
    assert [m["In-Reply-To"] for m in _replies(mailstack, sender, f"away {unique}")] == [normal]  # ... only it


# --- ManageSieve (RFC 5804) --------------------------------------------------------------------


class ManageSieve:
    """Just enough of a ManageSieve client: responses, literals, STARTTLS, AUTHENTICATE PLAIN, PUTSCRIPT."""

    def __init__(self, stack: MailStack) -> None:
        endpoint = stack.endpoints.managesieve
        self.stack = stack
        self.sock: socket.socket = socket.create_connection((endpoint.host, endpoint.port), timeout=10)
        self.file = self.sock.makefile("rb")
        self.capabilities = self.response()[0]

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def _line(self) -> bytes:
        line = self.file.readline()
        if not line:
            raise ConnectionError("ManageSieve server closed the connection")
        literal = re.search(rb"\{(\d+)\+?\}\r\n$", line)
        if literal:  # a string sent as a literal: {N} CRLF then N octets
            line = line[:literal.start()] + self.file.read(int(literal[1])) + self._line()
        return line.rstrip(b"\r\n")

    def response(self) -> tuple[list[bytes], bytes]:
        lines = []
        while True:
            line = self._line()
            if re.match(rb"(OK|NO|BYE)\b", line):
                return lines, line
            lines.append(line)

    def command(self, text: bytes) -> tuple[list[bytes], bytes]:
        self.sock.sendall(text + b"\r\n")
        return self.response()

    def starttls(self) -> None:
        assert self.command(b"STARTTLS")[1].startswith(b"OK")
        self.file.close()
        self.sock = self.stack.ssl_context().wrap_socket(self.sock, server_hostname=self.stack.hostname)
        self.file = self.sock.makefile("rb")
        self.capabilities = self.response()[0]  # the server repeats its capabilities after TLS

    def sasl(self) -> list[str]:
        line = next((c for c in self.capabilities if c.startswith(b'"SASL"')), b'"SASL" ""')
        return line.split(b" ", 1)[1].strip(b'"').decode().split()

    def authenticate(self, user: User) -> bytes:
        token = base64.b64encode(f"\0{user.address}\0{user.password}".encode()).decode()
        return self.command(f'AUTHENTICATE "PLAIN" "{token}"'.encode())[1]

    def putscript(self, name: str, script: str) -> bytes:
        data = script.encode()
        return self.command(f'PUTSCRIPT "{name}" {{{len(data)}+}}\r\n'.encode() + data)[1]


def test_managesieve_refuses_authenticate_before_starttls(mailstack: MailStack, mail_user: User) -> None:
    client = ManageSieve(mailstack)
    try:
        assert b'"STARTTLS"' in client.capabilities
        assert client.sasl() == []  # no mechanism offered in clear text
        assert client.authenticate(mail_user).startswith(b"NO (ENCRYPT-NEEDED)")
    finally:
        client.close()
    # The same credentials over TLS (on a new connection: Dovecot 2.3's managesieve-login refuses every
    # later AUTHENTICATE on a connection whose first one came before STARTTLS).
    client = ManageSieve(mailstack)
    try:
        client.starttls()
        assert "PLAIN" in client.sasl()
        assert client.authenticate(mail_user).startswith(b"OK")
    finally:
        client.close()


def test_a_broken_script_over_managesieve_is_refused_with_sieves_error_and_the_old_one_stays(
        mailstack: MailStack, mail_user_factory, unique: str) -> None:
    user, sender = mail_user_factory(), mail_user_factory()
    folder = f"Kept-{unique}"
    mailstack.set_sieve(user, FILEINTO.format(token=f"file {unique}", folder=folder))
    client = ManageSieve(mailstack)
    try:
        client.starttls()
        assert client.authenticate(user).startswith(b"OK")
        refused = client.putscript(f"broken-{unique}", BROKEN)
        assert refused.startswith(b"NO"), refused
        assert f"broken-{unique}: line 3: error: unknown command 'fileintoo'".encode() in refused, refused
        assert client.putscript(f"fine-{unique}", FILEINTO.format(token="x", folder="X")).startswith(b"OK")
        assert client.command(b"LOGOUT")[1].startswith(b"OK")
    finally:
        client.close()
    listed = {script.name: script.active for script in mailstack.list_sieve(user)}
    assert listed == {"mailstack": True, f"fine-{unique}": False}  # PUTSCRIPT stores, never activates
    mailstack.send(sender, to=user.address, subject=f"file {unique}")
    mailstack.wait_for_message(user, subject=f"file {unique}", folder=folder)  # still filtering


# --- the CLI and the API -----------------------------------------------------------------------


def test_cli_sieve_set_refuses_a_broken_script_and_the_previous_one_keeps_filtering(
        mailstack: MailStack, mail_user_factory, unique: str, tmp_path: Path) -> None:
    user, sender = mail_user_factory(), mail_user_factory()
    folder = f"Cli-{unique}"
    good, broken = tmp_path / "good.sieve", tmp_path / "broken.sieve"
    good.write_text(FILEINTO.format(token=f"cli {unique}", folder=folder))
    broken.write_text(BROKEN)
    result = run(mailstack, "sieve", "set", user.address, str(good))
    assert result.exit_code == 0, result.output
    result = run(mailstack, "sieve", "set", user.address, str(broken))
    assert result.exit_code == 1, result.output
    assert f"{broken}" in result.output and "line 3: unknown command 'fileintoo'" in result.output, result.output
    assert "active script is unchanged" in result.output
    listed = run(mailstack, "sieve", "list", user.address, "--json")
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.strip().startswith("[") and '"active": true' in listed.stdout
    assert run(mailstack, "sieve", "get", user.address).stdout == good.read_text()
    mailstack.send(sender, to=user.address, subject=f"cli {unique}")
    mailstack.wait_for_message(user, subject=f"cli {unique}", folder=folder)
    # remove: mail is delivered unfiltered again
    assert run(mailstack, "sieve", "remove", user.address).exit_code == 0
    assert mailstack.list_sieve(user) == []
    mailstack.send(sender, to=user.address, subject=f"cli again {unique}")
    mailstack.wait_for_message(user, subject=f"cli again {unique}")


def test_api_errors_say_what_to_do(mailstack: MailStack, mail_user: User, unique: str) -> None:
    with pytest.raises(MailstackError, match="no active Sieve script"):
        mailstack.get_sieve(mail_user)
    with pytest.raises(MailstackError, match=r"line 3: unknown command 'fileintoo'") as refused:
        mailstack.set_sieve(mail_user, BROKEN)
    assert "unchanged" in (refused.value.hint or "")
    with pytest.raises(MailstackError, match=f"no user nobody-{unique}@example.test"):
        mailstack.set_sieve(f"nobody-{unique}@example.test", "keep;\n")
    mailstack.set_sieve(mail_user, "keep;\n")
    assert mailstack.get_sieve(mail_user.address) == "keep;\n"
    assert mailstack.remove_sieve(mail_user) == "mailstack"


def test_seed_files_store_scripts_and_refuse_a_broken_one_before_changing_anything(
        mailstack: MailStack, unique: str, tmp_path: Path) -> None:
    address = f"seeded-{unique}@example.test"
    seed = tmp_path / "seed.yaml"
    indented = "\n".join("      " + line for line in BROKEN.splitlines())
    seed.write_text(f"users:\n  - address: {address}\n    password: seeded-password\n    sieve: |\n{indented}\n")
    refused = run(mailstack, "seed", str(seed))
    assert refused.exit_code == 1 and "line 3: unknown command 'fileintoo'" in refused.output, refused.output
    assert address not in run(mailstack, "user", "list", "--json").stdout  # nothing was changed
    seed.write_text(f"users:\n  - address: {address}\n    password: seeded-password\n    sieve: |\n"
                    f"      keep;\n")
    result = run(mailstack, "seed", str(seed))
    assert result.exit_code == 0 and f"set sieve {address}" in result.output, result.output
    assert mailstack.get_sieve(address) == "keep;\n"
    again = run(mailstack, "seed", str(seed))
    assert again.exit_code == 0 and "nothing to change" in again.output, again.output  # idempotent
