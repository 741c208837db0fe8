"""A running stack's outside world, for the API, the CLI and the pytest plugin: what the outside MX received,
mail sent into the stack as an outside server would send it, the DNS records and DKIM keys of its domains."""

from __future__ import annotations

import email.message
import email.utils
import time
import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Literal

from mailstack.db import Database
from mailstack.errors import MailstackError
from mailstack.stack import Stack
from mailstack.world import dkim, outbound
from mailstack.world import dns as world_dns
from mailstack.world.state import WorldPaths, domain_records

Spf = Literal["pass", "fail"]
# The outside test domains whose SPF passes / fails from the outside MX's address (world/dns.py).
SPF_DOMAINS: dict[str, str] = {"pass": world_dns.OUTSIDE_DOMAIN, "fail": world_dns.SPF_FAIL_DOMAIN}


@dataclass(frozen=True)
class OutsideReply:
    """How the stack answered a message sent from outside: the deciding reply (DATA's when accepted)."""

    code: int
    text: str

    @property
    def accepted(self) -> bool:
        return 200 <= self.code < 300


def no_world(project: str) -> MailstackError:
    return MailstackError(f"stack {project!r} has no outside world (DNS, rspamd, outside MX)",
                          "start it with one: MAILSTACK_WORLD=1 `mailstack up` (the default of `make up`), "
                          "MailStack(world=True), or pytest --mailstack-world")


class World:
    def __init__(self, stack: Stack) -> None:
        if stack.network is None:
            raise no_world(stack.settings.project)
        self.stack = stack
        self.paths = WorldPaths.of(stack.settings)

    # --- what "the internet" received ------------------------------------------------------------

    def outbound(self) -> list[outbound.StoredMessage]:
        return outbound.list_messages(self.paths.outbound_dir)

    def outbound_raw(self, message_id: str) -> bytes:
        return outbound.raw(self.paths.outbound_dir, message_id)

    def outbound_message(self, message_id: str) -> EmailMessage:
        return outbound.parse(self.paths.outbound_dir, message_id)

    def clear_outbound(self) -> int:
        return outbound.clear(self.paths.outbound_dir)

    def wait_for_outbound(self, *, to: str | None = None, subject: str | None = None, sender: str | None = None,
                          timeout: float = 30.0, interval: float = 0.1) -> EmailMessage:
        """The first message the outside MX received (completely) to `to`, whose subject contains `subject`."""
        deadline = time.monotonic() + timeout
        while True:
            found = [m for m in outbound.find(self.paths.outbound_dir, rcpt=to, mail_from=sender, subject=subject)
                     if m.complete]
            if found:
                return self.outbound_message(found[0].id)
            if time.monotonic() > deadline:
                wanted = ", ".join(f"{k}={v!r}" for k, v in (("to", to), ("subject", subject), ("from", sender)) if v)
                queued = self.stack.exec("postfix", ["postqueue", "-p"], check=False).stdout.decode(errors="replace")
                raise MailstackError(f"no message ({wanted or 'any'}) reached the outside MX within {timeout:.0f}s; "
                                     f"Postfix's queue: {queued.strip().splitlines()[-1] if queued.strip() else '?'}",
                                     "`mailstack queue list` shows what waits and why; `mailstack logs postfix`")
            time.sleep(interval)

    # --- mail from outside ---------------------------------------------------------------------------

    def send_from_outside(self, to: str | list[str], *, from_: str | None = None, spf: Spf | None = None,
                          subject: str = "from outside", body: str = "hello from outside\n",
                          message: bytes | EmailMessage | None = None) -> OutsideReply:
        """Send to the stack's port 25 from the outside MX's address, over STARTTLS (verified), as another
        server on the internet would. spf: the envelope sender's domain is chosen so that SPF passes
        (outside.test) or fails (spf-fail.test) for this address; from_ must then be in that domain."""
        recipients = [to] if isinstance(to, str) else list(to)
        if spf is not None:
            domain = SPF_DOMAINS[spf]
            if from_ is None:
                from_ = f"sender-{uuid.uuid4().hex[:6]}@{domain}"
            elif not from_.lower().endswith("@" + domain) and not (
                    spf == "fail" and from_.lower().endswith("@" + world_dns.DMARC_REJECT_DOMAIN)):
                raise MailstackError(f"spf={spf!r} needs a sender in {domain} (its SPF record decides it), "
                                     f"not {from_}", f"leave from_ out, or use an address @{domain}")
        from_ = from_ or f"sender-{uuid.uuid4().hex[:6]}@{world_dns.OUTSIDE_DOMAIN}"
        if message is None:
            built = email.message.EmailMessage()
            built["From"], built["To"], built["Subject"] = from_, ", ".join(recipients), subject
            built["Date"] = email.utils.formatdate(localtime=False)
            built["Message-ID"] = email.utils.make_msgid(domain=from_.rpartition("@")[2] or None)
            built.set_content(body)
            message = built
        data = message.as_bytes() if isinstance(message, EmailMessage) else message
        argv = ["send-from-outside", "--from", from_, "--host", self.stack.settings.hostname]
        for recipient in recipients:
            argv += ["--to", recipient]
        result = self.stack.exec("outside", argv, input=data, check=False)
        said = (result.stdout if result.returncode == 0 else result.stderr).decode(errors="replace").strip()
        if result.returncode == 2 or not said:
            raise MailstackError(f"sending from outside failed: {said or 'no reply'}",
                                 "`mailstack logs postfix` and `mailstack logs outside`")
        last = said.splitlines()[-1]
        reply = last.split(": ", 1)[1] if ": " in last and not last[:3].isdigit() else last
        code, _, text = reply.partition(" ")
        return OutsideReply(int(code) if code.isdigit() else 0, text)

    # --- DNS and DKIM ----------------------------------------------------------------------------------

    def dns_records(self, domain: str) -> list[world_dns.Record]:
        """What a real deployment of this local domain publishes (the stack's DNS serves the same)."""
        assert self.stack.network is not None
        self.dkim_record(domain)  # a local domain has its key (sync_world): refuse others, make no key for them
        return world_dns.unique(domain_records(self.stack.settings, self.stack.network, domain, self.paths))

    def dkim_record(self, domain: str) -> dkim.DkimRecord:
        selector = dkim.current_selector(self.paths.dkim_dir, domain)
        if selector is None:
            raise MailstackError(f"no DKIM key for {domain}: it is not a local domain of this stack",
                                 f"`mailstack domain add {domain}` makes one")
        return dkim.record(self.paths.dkim_dir, domain, selector)

    def rotate_dkim(self, domain: str, database: Database) -> dkim.DkimRecord:
        """A new key under a new selector, published and signed with from now on (the previous key's record
        stays published, for mail signed with it that is still on its way)."""
        with database.transaction() as store:
            domains = store.domains()
        name = dkim.normalize_domain(domain)
        if name not in domains:
            raise MailstackError(f"{name} is not a local domain", "`mailstack domain list` shows them")
        dkim.rotate(self.paths.dkim_dir, name)
        self.stack.sync_world(domains)
        return self.dkim_record(name)
