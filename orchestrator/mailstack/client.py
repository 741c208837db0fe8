"""A mail client's view of the stack: send through submission (587), read an inbox over IMAPS, and the
settings to type into Thunderbird, Outlook or a phone. TLS is always verified against the stack's CA."""

from __future__ import annotations

import email.message
import email.policy
import email.utils
import re
import smtplib
import ssl
from dataclasses import asdict, dataclass
from email.parser import BytesHeaderParser
from pathlib import Path

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from mailstack.errors import MailstackError
from mailstack.settings import Settings
from mailstack.stack import Endpoint, Endpoints

_QUEUED_AS = re.compile(r"queued as (?P<qid>\S+)")
_HEADERS = "BODY[HEADER.FIELDS (DATE FROM SUBJECT MESSAGE-ID)]"


def tls_context(ca_cert: Path) -> ssl.SSLContext:
    if not ca_cert.exists():
        raise MailstackError(f"the stack's CA certificate {ca_cert} is missing", "`mailstack up` creates it")
    return ssl.create_default_context(cafile=str(ca_cert))


@dataclass(frozen=True)
class Sent:
    message_id: str
    queue_id: str | None
    recipients: list[str]


def send(endpoint: Endpoint, ca_cert: Path, login: str, password: str, recipients: list[str],
         subject: str = "test", body: str = "test", sender: str | None = None) -> Sent:
    """One message through submission: STARTTLS (verified), AUTH as `login`, then the SMTP transaction.
    Returns the Message-ID and the queue id Postfix answered with (for `mailstack trace`)."""
    sender = sender or login
    message = email.message.EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message["Date"] = email.utils.formatdate(localtime=True)
    message["Message-ID"] = email.utils.make_msgid(domain=sender.rsplit("@", 1)[-1])
    message.set_content(body)
    where = f"submission on {endpoint}"
    try:
        with smtplib.SMTP(endpoint.client_host, endpoint.port, local_hostname="mailstack-cli", timeout=30) as smtp:
            smtp.starttls(context=tls_context(ca_cert))
            smtp.login(login, password)
            code, reply = smtp.mail(sender)
            if code != 250:
                raise MailstackError(f"sender {sender} refused: {code} {reply.decode(errors='replace')}",
                                     f"on 587 {login} may only send as itself or an alias that points to it")
            refused = {}
            for recipient in recipients:
                code, reply = smtp.rcpt(recipient)
                if code not in (250, 251):
                    refused[recipient] = f"{code} {reply.decode(errors='replace')}"
            if refused:
                smtp.rset()
                first = next(iter(refused))
                raise MailstackError(
                    "recipient refused, nothing was sent: " + "; ".join(f"{r}: {why}" for r, why in refused.items()),
                    f"`mailstack trace {first}` shows Postfix's reject line")
            code, reply = smtp.data(message.as_bytes(policy=email.policy.SMTP))
    except smtplib.SMTPAuthenticationError as exc:
        raise MailstackError(f"login as {login} refused: {exc.smtp_code} {exc.smtp_error.decode(errors='replace')}",
                             f"check the password; `mailstack user passwd {login}` sets a new one") from exc
    except smtplib.SMTPResponseException as exc:
        raise MailstackError(f"{where}: {exc.smtp_code} {exc.smtp_error.decode(errors='replace')}",
                             "`mailstack logs postfix` shows why") from exc
    except ssl.SSLError as exc:
        raise MailstackError(f"{where}: TLS failed: {exc}",
                             f"the client trusts {ca_cert}; `mailstack doctor` checks the certificate") from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise MailstackError(f"{where}: {exc or type(exc).__name__}", "`mailstack status`, `mailstack doctor`") from exc
    match = _QUEUED_AS.search(reply.decode(errors="replace"))
    return Sent(str(message["Message-ID"]), match["qid"] if match else None, recipients)


@dataclass(frozen=True)
class MessageSummary:
    uid: int
    date: str
    sender: str
    subject: str
    message_id: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def inbox(endpoint: Endpoint, ca_cert: Path, login: str, password: str, limit: int = 10,
          folder: str = "INBOX") -> list[MessageSummary]:
    """The newest `limit` messages of a folder over IMAPS (read-only: nothing is marked as seen)."""
    where = f"IMAPS on {endpoint}"
    try:
        with IMAPClient(endpoint.client_host, port=endpoint.port, ssl=True,
                        ssl_context=tls_context(ca_cert), timeout=30) as client:
            client.login(login, password)
            client.select_folder(folder, readonly=True)
            uids = sorted(client.search("ALL"))[-limit:] if limit > 0 else []
            fetched = client.fetch(uids, ["INTERNALDATE", _HEADERS.replace("BODY[", "BODY.PEEK[")]) if uids else {}
    except LoginError as exc:
        raise MailstackError(f"login as {login} refused", f"check the password; `mailstack user passwd {login}` "
                             "sets a new one") from exc
    except ssl.SSLError as exc:
        raise MailstackError(f"{where}: TLS failed: {exc}",
                             f"the client trusts {ca_cert}; `mailstack doctor` checks the certificate") from exc
    except (IMAPClientError, OSError) as exc:
        raise MailstackError(f"{where}: {exc}", "`mailstack status`, `mailstack doctor`") from exc
    parser = BytesHeaderParser(policy=email.policy.default)
    messages = []
    for uid in reversed(uids):
        data = fetched.get(uid, {})
        headers = parser.parsebytes(data.get(_HEADERS.encode(), b""))
        try:
            when = email.utils.parsedate_to_datetime(str(headers["Date"])) if headers["Date"] else None
        except (TypeError, ValueError):
            when = None
        internal = data.get(b"INTERNALDATE")
        date = (when or internal).isoformat(sep=" ", timespec="seconds") if (when or internal) else ""
        messages.append(MessageSummary(uid, date, str(headers["From"] or ""), str(headers["Subject"] or ""),
                                       str(headers["Message-ID"] or "")))
    return messages


def client_config(settings: Settings, endpoints: Endpoints, address: str) -> dict[str, object]:
    """What to type into a mail client for `address`: servers, ports, security, auth, username, CA."""
    host = endpoints.imaps.client_host

    def server(protocol: str, endpoint: Endpoint, security: str) -> dict[str, object]:
        return {"protocol": protocol, "server": host, "port": endpoint.port, "security": security,
                "authentication": "normal password", "username": address}

    notes = [
        f"trust the CA file {settings.ca_cert} (Thunderbird: Settings > Privacy & Security > Certificates > "
        "Manage Certificates > Authorities > Import; a phone: install it as a CA profile)",
        f"the certificate is valid for {settings.hostname}, localhost and 127.0.0.1; to use "
        f"{settings.hostname}, point it at this machine in /etc/hosts",
        f"ports are published on {settings.bind_address}; other devices need MAILSTACK_BIND_ADDRESS=0.0.0.0",
    ]
    autoconfig: dict[str, str] | None = None
    if endpoints.webmail_url:
        web = endpoints.webmail_url
        autoconfig = {"webmail": web, "thunderbird": f"{web}/.well-known/autoconfig/mail/config-v1.1.xml",
                      "outlook": f"{web}/autodiscover/autodiscover.xml"}
        domain = address.rpartition("@")[2]
        notes.append(f"webmail: {web}; the autoconfiguration: {autoconfig['thunderbird']} (Thunderbird asks "
                     f"http://autoconfig.{domain}/mail/config-v1.1.xml on port 80: point that name at this machine "
                     "and set MAILSTACK_WEBMAIL_PORT=80 to have it found), Outlook POSTs to " + autoconfig["outlook"])
    return {
        "address": address,
        "username": address,
        "incoming": [server("IMAP", endpoints.imaps, "SSL/TLS"), server("POP3", endpoints.pop3s, "SSL/TLS")],
        "outgoing": [server("SMTP", endpoints.submission, "STARTTLS"), server("SMTP", endpoints.smtps, "SSL/TLS")],
        "ca_cert": str(settings.ca_cert),
        "certificate_names": [settings.hostname, "localhost", "127.0.0.1"],
        "autoconfig": autoconfig,
        "notes": notes,
    }
