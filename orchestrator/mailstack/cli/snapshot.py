"""Snapshots of the database, maildirs and queue: save, restore, list, delete."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from mailstack import snapshots
from mailstack.cli.common import JsonOpt, out, print_json, report, table

snapshot_app = typer.Typer(help="Snapshots of the database, maildirs and queue: save, restore, list, delete.",
                           no_args_is_help=True)

SnapshotName = Annotated[str, typer.Argument(help="[a-z0-9][a-z0-9._-]*, e.g. before-migration")]


def _snapshot_row(info: snapshots.SnapshotInfo) -> list[object]:
    size = f"{info.size / 1e6:.1f} MB" if info.size >= 100_000 else f"{info.size / 1e3:.0f} kB"
    return [info.name, info.created, size, info.flavour, ", ".join(info.parts)]


@snapshot_app.command("save")
def snapshot_save(ctx: typer.Context, name: SnapshotName,
                  force: Annotated[bool, typer.Option("--force", help="replace a snapshot of that name")] = False,
                  as_json: JsonOpt = False) -> None:
    """Save the database, the maildirs and Postfix's queue (into the state directory, owner-only)."""
    info = snapshots.save(ctx.obj.running_stack(), name, force=force, report=report)
    if as_json:
        print_json(info.as_dict())


@snapshot_app.command("restore")
def snapshot_restore(ctx: typer.Context, name: SnapshotName) -> None:
    """Make the running stack what it was at `save`: users, mail and queue entries added since are gone.
    Open IMAP and POP3 sessions are closed; Postfix is reloaded."""
    snapshots.restore(ctx.obj.running_stack(), name, report=report)


@snapshot_app.command("list")
def snapshot_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """The snapshots: name, created, size, schema flavour."""
    found = snapshots.list_snapshots(ctx.obj.stack())
    if as_json:
        print_json([info.as_dict() for info in found])
        return
    out.print(table("snapshots", ["name", "created", "size", "flavour", "parts"],
                     [_snapshot_row(info) for info in found]))


@snapshot_app.command("delete")
def snapshot_delete(ctx: typer.Context, name: SnapshotName) -> None:
    """Delete a snapshot."""
    snapshots.delete(ctx.obj.stack(), name)
    report(f"deleted snapshot {escape(name)}")
