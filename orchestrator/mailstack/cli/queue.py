"""Postfix's queue: list, show, flush, hold, release, delete, requeue."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Annotated

import typer

from mailstack import queue as queue_module
from mailstack.cli.common import JsonOpt, out, print_json, report, table

queue_app = typer.Typer(help="Postfix's queue: list, show, flush, hold, release, delete, requeue.",
                        no_args_is_help=True)

QueueIdsArg = Annotated[list[str] | None, typer.Argument(help="queue ids (`mailstack queue list`)")]
AllOpt = Annotated[bool, typer.Option("--all", help="every message in the queue")]


def _queue(ctx: typer.Context) -> queue_module.Queue:
    stack = ctx.obj.stack()
    stack.require_running(["postfix"])  # the queue is Postfix's: it is there to see while Dovecot is down
    return queue_module.Queue(stack)


@queue_app.command("list")
def queue_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """What is in Postfix's queue (postqueue -j): id, queue, size, sender, recipients and why it waits."""
    entries = _queue(ctx).entries()
    if as_json:
        print_json([entry.as_dict() for entry in entries])
        return
    rows = [[e.queue_id, e.queue_name, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.arrival_time)),
             e.message_size, e.sender or "<>", ", ".join(r.address for r in e.recipients),
             "; ".join(sorted({r.delay_reason for r in e.recipients if r.delay_reason}))] for e in entries]
    out.print(table(f"queue: {len(entries)} message(s)", ["id", "queue", "arrived", "bytes", "sender",
                                                            "recipients", "why it waits"], rows))


@queue_app.command("show")
def queue_show(ctx: typer.Context, queue_id: str) -> None:
    """One queued message as postcat shows it: envelope, headers, body."""
    sys.stdout.write(_queue(ctx).show(queue_id))


@queue_app.command("flush")
def queue_flush(ctx: typer.Context) -> None:
    """Try every deferred message again now (postqueue -f)."""
    _queue(ctx).flush()
    report("flushed: Postfix is delivering what it can")


def _queue_action(action: str, done: str) -> Callable[..., None]:
    def command(ctx: typer.Context, queue_ids: QueueIdsArg = None, everything: AllOpt = False) -> None:
        count = _queue(ctx).act(action, queue_ids or [], everything, notice=lambda text: report(f"notice: {text}"))
        report(f"{done}: {count} message(s)")
    command.__doc__ = f"{action.capitalize()} queued messages (postsuper): the given ids, or --all."
    return command


queue_app.command("hold")(_queue_action("hold", "placed on hold"))
queue_app.command("release")(_queue_action("release", "released from hold"))
queue_app.command("delete")(_queue_action("delete", "deleted"))
queue_app.command("requeue")(_queue_action("requeue", "requeued"))
