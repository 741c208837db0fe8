"""The `mailstack` command line: thin typer commands over the modules that do the work.
One module per command group (cli/common.py holds what they share); this one builds the app."""

from __future__ import annotations

import sys
from typing import Any

import typer
from rich.markup import escape
from typer.core import TyperGroup

from mailstack import accounts as accounts_module
from mailstack.cli import accounts, deploy, mail, queue, sieve, snapshot, stack, world
from mailstack.cli.common import Context, ProjectOpt, SchemaOpt, StateOpt, console, out, read_password, report
from mailstack.errors import MailstackError

__all__ = ["Context", "accounts_module", "app", "console", "main", "main_options", "out", "read_password", "report",
           "show_error"]


def show_error(exc: MailstackError) -> None:
    """One line saying what failed, one with the hint (markup in messages is printed as is)."""
    console.print(f"[red]error:[/red] {escape(exc.message)}", soft_wrap=True)
    if exc.hint:
        console.print(f"[yellow]hint:[/yellow] {escape(exc.hint)}", soft_wrap=True)


class _Group(TyperGroup):
    """Every command's MailstackError ends as `error: ...` + `hint: ...` and exit 1 (also under CliRunner)."""

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except MailstackError as exc:
            show_error(exc)
            raise typer.Exit(1) from exc


app = typer.Typer(
    cls=_Group,
    help="A real Postfix + Dovecot + MariaDB mail stack in Docker. Start with `mailstack up`.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)

# Commands are listed by `mailstack --help` in the order they are registered here: commands first, then groups.
app.command()(stack.up)
app.command()(stack.down)
app.command()(stack.build)
app.command()(stack.provision)
app.command()(stack.status)
app.command()(stack.logs)
app.command()(stack.prune)
app.command()(accounts.seed)
app.command("doctor")(stack.doctor_command)
app.command("chroot-sync")(stack.chroot_sync)
app.command("trace")(stack.trace_command)
app.command()(mail.send)
app.command()(mail.inbox)
app.command("client-config")(mail.client_config)
app.add_typer(accounts.domain_app, name="domain")
app.add_typer(accounts.user_app, name="user")
app.add_typer(accounts.alias_app, name="alias")
app.add_typer(accounts.alias_domain_app, name="alias-domain")
app.add_typer(accounts.catch_all_app, name="catch-all")
app.add_typer(queue.queue_app, name="queue")
app.add_typer(sieve.sieve_app, name="sieve")
app.add_typer(snapshot.snapshot_app, name="snapshot")
app.add_typer(world.dns_app, name="dns")
app.add_typer(world.dkim_app, name="dkim")
app.add_typer(world.outbound_app, name="outbound")
app.add_typer(world.outside_app, name="outside")
app.add_typer(deploy.deploy_app, name="deploy")


@app.callback()
def main_options(ctx: typer.Context, project: ProjectOpt = None, state_dir: StateOpt = None,
                 schema_name: SchemaOpt = None) -> None:
    ctx.obj = Context(project=project, state_dir=state_dir, schema_flavour=schema_name)


def main() -> None:
    try:
        app()
    except MailstackError as exc:
        show_error(exc)
        sys.exit(1)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]")
        sys.exit(130)
