"""A mail client's view: send, inbox, client-config."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.text import Text

from mailstack import accounts as accounts_module
from mailstack import client
from mailstack.cli.common import JsonOpt, PasswordStdinOpt, out, print_json, read_password, report, table
from mailstack.errors import MailstackError


def send(
    ctx: typer.Context,
    sender: Annotated[str, typer.Option("--from", help="the user to log in and send as")],
    to: Annotated[list[str], typer.Option("--to", help="recipient (repeat for more)")],
    subject: Annotated[str, typer.Option(help="subject line")] = "mailstack test",
    body: Annotated[str, typer.Option(help="message text")] = "A test message sent by `mailstack send`.",
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Send a test message through submission (587: STARTTLS, then AUTH as --from)."""
    sender = accounts_module.valid_login(sender)
    recipients = [accounts_module.valid_address(address) for address in to]
    password = read_password(password_stdin, confirm=False, prompt=f"Password for {sender}",
                             before_prompt=ctx.obj.running_stack)
    stack = ctx.obj.running_stack()
    sent = client.send(stack.endpoints().submission, ctx.obj.settings.ca_cert, sender, password, recipients,
                       subject=subject, body=body)
    out.print(Text(f"sent {sent.message_id} to {', '.join(sent.recipients)}"
                   + (f"; queue id {sent.queue_id}" if sent.queue_id else "")), soft_wrap=True)
    report(f"follow it: mailstack trace {escape(sent.queue_id or sent.message_id)}")


def inbox(
    ctx: typer.Context,
    address: Annotated[str, typer.Argument(help="the mailbox to read (logs in as it)")],
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000, help="how many messages")] = 10,
    folder: Annotated[str, typer.Option(help="IMAP folder")] = "INBOX",
    password_stdin: PasswordStdinOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """The newest messages of a mailbox over IMAPS: date, from, subject (read-only)."""
    address = accounts_module.valid_login(address)
    password = read_password(password_stdin, confirm=False, prompt=f"Password for {address}",
                             before_prompt=ctx.obj.running_stack)
    stack = ctx.obj.running_stack()
    messages = client.inbox(stack.endpoints().imaps, ctx.obj.settings.ca_cert, address, password,
                            limit=limit, folder=folder)
    if as_json:
        print_json([message.as_dict() for message in messages])
        return
    out.print(table(f"{address} {folder} (newest first)", ["date", "from", "subject"],
                     [[m.date, m.sender, m.subject] for m in messages]))


def client_config(ctx: typer.Context, address: str, as_json: JsonOpt = False) -> None:
    """The settings to type into Thunderbird, Outlook or a phone for ADDRESS."""
    address = accounts_module.valid_login(address)
    stack = ctx.obj.running_stack()
    if not ctx.obj.accounts().user_exists(address):
        raise MailstackError(f"no user {address}", f"`mailstack user add {address}` creates it")
    config = client.client_config(stack.settings, stack.endpoints(), address)
    if as_json:
        print_json(config)
        return
    rows = [[f"{s['protocol']} ({direction})", s["server"], s["port"], s["security"]]
            for direction in ("incoming", "outgoing") for s in config[direction]]  # type: ignore[attr-defined]
    out.print(table(f"mail client settings for {address}", ["server type", "server", "port", "security"], rows))
    out.print(Text(f"username: {config['username']} (the full address), authentication: normal password"),
              soft_wrap=True)
    out.print(Text(f"CA file to trust: {config['ca_cert']}"), soft_wrap=True)
    for note in config["notes"]:  # type: ignore[attr-defined]
        out.print(Text(f"- {note}"), soft_wrap=True)
