#!/usr/bin/python3
"""The outside MX: "the rest of the internet" for the stack. Accepts mail for every domain on port 25,
offers STARTTLS when /run/mailstack/tls/outside.{crt,key} exist, and stores each message as
<id>.eml (the bytes of DATA exactly as received, after dot-unstuffing) and then <id>.json (the envelope
and session). Both are written to a hidden temporary file and renamed, the .json last: a reader that sees
a .json sees the whole message. Clearing is deleting the files.

Environment: OUTSIDE_HOSTNAME (mx.outside.test: the greeting's name, the certificate's), OUTSIDE_PORT (25),
OUTSIDE_MESSAGES (/var/lib/outside/messages), OUTSIDE_TLS_DIR (/run/mailstack/tls),
OUTSIDE_MAX_SIZE (bytes, 33554432).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import secrets
import signal
import ssl
import sys
from pathlib import Path

from aiosmtpd.smtp import SMTP

log = logging.getLogger("outside-mx")


class Store:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def _write(self, name: str, data: bytes) -> None:
        tmp = self.directory / f".{name}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.directory / name)

    def save(self, raw: bytes, meta: dict) -> str:
        now = dt.datetime.now(dt.timezone.utc)
        message_id = f"{now:%Y%m%dT%H%M%S.%fZ}-{secrets.token_hex(4)}"
        meta = {"id": message_id, **meta, "received": now.isoformat(timespec="microseconds"), "size": len(raw)}
        self._write(f"{message_id}.eml", raw)
        self._write(f"{message_id}.json", (json.dumps(meta, indent=2) + "\n").encode())
        return message_id


class Handler:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        tls = session.ssl is not None
        ssl_object = session.ssl.get("ssl_object") if tls else None
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "mail_options": list(envelope.mail_options),
            "peer": list(session.peer) if isinstance(session.peer, tuple) else session.peer,
            "helo": session.host_name,
            "tls": tls,
            "tls_version": ssl_object.version() if ssl_object else None,
            "tls_cipher": ssl_object.cipher()[0] if ssl_object else None,
        }
        try:
            message_id = await asyncio.get_running_loop().run_in_executor(
                None, self.store.save, envelope.original_content, meta)
        except OSError as exc:
            log.error("cannot store a message from %s: %s", meta["peer"], exc)
            return "451 4.3.0 Cannot store the message"
        log.info("stored %s from=<%s> to=%s peer=%s tls=%s", message_id, envelope.mail_from,
                 ",".join(envelope.rcpt_tos), meta["peer"], meta["tls_version"] or "no")
        return f"250 2.0.0 Ok: queued as {message_id}"


def tls_context(directory: Path) -> ssl.SSLContext | None:
    cert, key = directory / "outside.crt", directory / "outside.key"
    if not (cert.exists() and key.exists()):
        log.warning("no %s and %s: STARTTLS not offered", cert, key)
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def main() -> int:
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    hostname = os.environ.get("OUTSIDE_HOSTNAME", "mx.outside.test")
    port = int(os.environ.get("OUTSIDE_PORT", "25"))
    store = Store(Path(os.environ.get("OUTSIDE_MESSAGES", "/var/lib/outside/messages")))
    context = tls_context(Path(os.environ.get("OUTSIDE_TLS_DIR", "/run/mailstack/tls")))
    limit = int(os.environ.get("OUTSIDE_MAX_SIZE", str(32 * 1024 * 1024)))
    handler = Handler(store)

    def factory() -> SMTP:
        return SMTP(handler, hostname=hostname, tls_context=context, require_starttls=False,
                    decode_data=False, enable_SMTPUTF8=True, data_size_limit=limit, ident="outside MX")

    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(factory, host="0.0.0.0", port=port))  # noqa: S104
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, loop.stop)
    log.info("listening on port %d as %s, STARTTLS %s, storing in %s", port, hostname,
             "offered" if context else "off", store.directory)
    loop.run_forever()
    server.close()
    loop.run_until_complete(server.wait_closed())
    return 0


if __name__ == "__main__":
    sys.exit(main())
