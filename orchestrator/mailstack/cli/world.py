"""The outside world: the DNS records of a domain, DKIM keys, what the outside MX received, mail from outside."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from mailstack.cli.common import JsonOpt, out, print_json, report, table
from mailstack.world.access import World
from mailstack.world.dns import as_zone_lines

dns_app = typer.Typer(help="The stack's DNS: the records a real deployment of a domain needs.", no_args_is_help=True)
dkim_app = typer.Typer(help="DKIM signing keys of the local domains: show, rotate.", no_args_is_help=True)
outbound_app = typer.Typer(help="What the outside MX received (mail for every non-local domain): list, show, clear.",
                           no_args_is_help=True)
outside_app = typer.Typer(help="Mail into the stack as an outside server sends it: send.", no_args_is_help=True)

DomainArg = Annotated[str, typer.Argument(help="a local domain, e.g. example.test")]


def _world(ctx: typer.Context) -> World:
    return World(ctx.obj.running_stack())


@dns_app.command("records")
def dns_records(ctx: typer.Context, domain: DomainArg, as_json: JsonOpt = False) -> None:
    """MX, A, SPF, DKIM, DMARC and the PTR hint for DOMAIN, as zone file lines (what the stack's DNS serves)."""
    records = _world(ctx).dns_records(domain)
    if as_json:
        print_json([{"name": r.name, "type": r.type, "ttl": r.ttl, "value": r.value, "zone": r.zone_line()}
                    for r in records])
        return
    for line in as_zone_lines(records):
        out.print(Text(line), soft_wrap=True)
    ptr = next((r for r in records if r.type == "PTR"), None)
    if ptr is not None:
        report(f"the PTR record belongs in the reverse zone of the mail host's address ({ptr.name}), "
               "which its network's owner runs")


def _print_dkim(name: str, value: str, as_json: bool) -> None:
    if as_json:
        print_json({"name": name, "value": value})
    else:
        out.print(Text(f"{name}. IN TXT \"{value}\""), soft_wrap=True)


@dkim_app.command("show")
def dkim_show(ctx: typer.Context, domain: DomainArg, as_json: JsonOpt = False) -> None:
    """The record name and TXT value of DOMAIN's current signing key."""
    record = _world(ctx).dkim_record(domain)
    _print_dkim(record.name, record.value, as_json)


@dkim_app.command("rotate")
def dkim_rotate(ctx: typer.Context, domain: DomainArg, as_json: JsonOpt = False) -> None:
    """A new key under a new selector: signed with from now on; the previous record stays published."""
    record = _world(ctx).rotate_dkim(domain, ctx.obj.database())
    if not as_json:
        report(f"{domain} signs with {record.name.split('.', 1)[0]} now; publish this record:")
    _print_dkim(record.name, record.value, as_json)


@outbound_app.command("list")
def outbound_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Each message the outside MX received: id, from, to, subject, date."""
    messages = _world(ctx).outbound()
    if as_json:
        print_json([m.to_dict() for m in messages])
        return
    rows = [[m.id, m.mail_from or "<>", ", ".join(m.rcpt_tos), m.subject or "", m.date or m.received or "",
             "yes" if m.tls else "no"] for m in messages]
    out.print(table(f"outbound: {len(messages)} message(s)", ["id", "from", "to", "subject", "date", "tls"], rows))


@outbound_app.command("show")
def outbound_show(ctx: typer.Context,
                  message_id: Annotated[str, typer.Argument(help="an id from `mailstack outbound list`")]) -> None:
    """The raw message, exactly as the outside MX received it."""
    sys.stdout.buffer.write(_world(ctx).outbound_raw(message_id))
    sys.stdout.buffer.flush()


@outbound_app.command("clear")
def outbound_clear(ctx: typer.Context) -> None:
    """Forget every message the outside MX received."""
    report(f"deleted {_world(ctx).clear_outbound()} message(s)")


@outside_app.command("send")
def outside_send(
    ctx: typer.Context,
    to: Annotated[list[str], typer.Option("--to", help="a recipient (repeatable)")],
    sender: Annotated[str | None, typer.Option("--from", help="envelope and From: sender")] = None,
    spf: Annotated[str | None, typer.Option("--spf", help="pass or fail: a sender domain whose SPF does so")] = None,
    subject: Annotated[str, typer.Option("--subject")] = "from outside",
    body: Annotated[str, typer.Option("--body")] = "hello from outside\n",
    file: Annotated[Path | None, typer.Option("--file", help="a whole message (RFC 5322) instead; - : stdin")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Send to the stack's port 25 from the outside MX (STARTTLS, verified), as a server on the internet does.
    Exit status 0: accepted; 1: refused (the reply is printed)."""
    if spf not in (None, "pass", "fail"):
        raise typer.BadParameter("--spf is pass or fail")
    message = None if file is None else (sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes())
    reply = _world(ctx).send_from_outside(to, from_=sender, spf=spf, subject=subject, body=body,  # type: ignore[arg-type]
                                          message=message)
    if as_json:
        print_json({"code": reply.code, "text": reply.text, "accepted": reply.accepted})
    else:
        out.print(Text(f"{reply.code} {reply.text}"))
    if not reply.accepted:
        raise typer.Exit(1)
