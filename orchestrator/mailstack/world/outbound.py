"""The outside MX's stored messages: what the stack sent "to the internet".

The outside MX (images/outside) stores each message as <id>.eml (the bytes exactly as received) and then,
renamed into place last, <id>.json (id, mail_from, rcpt_tos, peer, helo, tls, received, ...). A .eml whose
.json is not there yet is listed from its headers (complete=False). Temporary files start with a dot.
Clearing is deleting the files.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import getaddresses
from pathlib import Path
from typing import Any

from mailstack.errors import MailstackError

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class StoredMessage:
    """One received message: the envelope from its .json (or its headers while the .json is missing)."""

    id: str
    mail_from: str
    rcpt_tos: tuple[str, ...]
    subject: str | None
    date: str | None
    received: str | None
    tls: bool | None
    peer: str | None
    helo: str | None
    complete: bool
    path: Path
    meta: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "from": self.mail_from, "to": list(self.rcpt_tos), "subject": self.subject,
                "date": self.date, "received": self.received, "tls": self.tls, "peer": self.peer,
                "helo": self.helo, "complete": self.complete}


def _headers(path: Path) -> EmailMessage:
    # Only the header block: a big message is not read whole to be listed.
    with open(path, "rb") as f:
        head = b""
        for line in f:
            head += line
            if line in (b"\r\n", b"\n"):
                break
    return email.message_from_bytes(head, policy=email.policy.default)  # type: ignore[return-value]


def _load(path: Path) -> StoredMessage | None:
    message_id = path.stem
    try:
        headers = _headers(path)
    except FileNotFoundError:  # cleared meanwhile
        return None
    meta: dict[str, Any] = {}
    complete = False
    try:
        meta = json.loads(path.with_suffix(".json").read_text())
        complete = True
    except (FileNotFoundError, json.JSONDecodeError):
        pass
    if complete:
        mail_from = meta.get("mail_from") or ""
        rcpt_tos = tuple(meta.get("rcpt_tos") or ())
    else:
        mail_from = next((a for _, a in getaddresses([str(headers.get("From", ""))]) if a), "")
        rcpt_tos = tuple(a for _, a in getaddresses([str(v) for v in headers.get_all("To", []) +
                                                     headers.get_all("Cc", [])]) if a)
    peer = meta.get("peer")
    if isinstance(peer, list | tuple):
        peer = peer[0] if peer else None
    subject = headers.get("Subject")
    date = headers.get("Date")
    return StoredMessage(
        id=message_id, mail_from=mail_from, rcpt_tos=rcpt_tos,
        subject=str(subject) if subject is not None else None, date=str(date) if date is not None else None,
        received=meta.get("received"), tls=meta.get("tls"), peer=peer, helo=meta.get("helo"),
        complete=complete, path=path, meta=meta)


def list_messages(directory: str | Path) -> list[StoredMessage]:
    """Every stored message, oldest first (ids start with the UTC receive time)."""
    root = Path(directory)
    if not root.is_dir():
        return []
    out = [m for p in sorted(root.glob("*.eml")) if not p.name.startswith(".") and (m := _load(p)) is not None]
    return sorted(out, key=lambda m: (m.received or "", m.id))


def _path(directory: str | Path, message_id: str) -> Path:
    if not _ID.match(message_id):
        raise MailstackError(f"not a message id: {message_id!r}")
    path = Path(directory) / f"{message_id}.eml"
    if not path.exists():
        raise MailstackError(f"no message {message_id} in {directory}", "list them: their ids come first")
    return path


def raw(directory: str | Path, message_id: str) -> bytes:
    """The message's bytes exactly as the outside MX received them."""
    return _path(directory, message_id).read_bytes()


def parse(directory: str | Path, message_id: str) -> EmailMessage:
    """The message as an email.message.EmailMessage (modern policy)."""
    return email.message_from_bytes(raw(directory, message_id), policy=email.policy.default)  # type: ignore[return-value]


def find(directory: str | Path, *, rcpt: str | None = None, mail_from: str | None = None,
         subject: str | None = None) -> list[StoredMessage]:
    """The messages to a recipient / from a sender (case-insensitive) / whose subject contains a text."""
    def wanted(m: StoredMessage) -> bool:
        return ((rcpt is None or rcpt.lower() in (r.lower() for r in m.rcpt_tos))
                and (mail_from is None or mail_from.lower() == m.mail_from.lower())
                and (subject is None or subject in (m.subject or "")))
    return [m for m in list_messages(directory) if wanted(m)]


def clear(directory: str | Path) -> int:
    """Delete every stored message (and leftover temporary files); the number of messages deleted."""
    root = Path(directory)
    if not root.is_dir():
        return 0
    count = 0
    for path in root.iterdir():
        if path.suffix in (".eml", ".json", ".tmp") and path.is_file():
            if path.suffix == ".eml" and not path.name.startswith("."):
                count += 1
            path.unlink(missing_ok=True)
    return count
