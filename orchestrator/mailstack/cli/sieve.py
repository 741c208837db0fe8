"""Users' Sieve filters: set, get, list, remove."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from mailstack import accounts as accounts_module
from mailstack import sieve as sieve_module
from mailstack.cli.common import JsonOpt, out, print_json, report, table
from mailstack.errors import MailstackError

sieve_app = typer.Typer(help="Users' Sieve filters (applied at delivery): set, get, list, remove.",
                        no_args_is_help=True)

ScriptNameOpt = Annotated[str | None, typer.Option("--name", help="a script by name (default: the active one)")]


def _read_script(file: Path) -> tuple[bytes, str]:
    if str(file) == "-":
        return sys.stdin.buffer.read(), "<stdin>"
    try:
        return file.read_bytes(), str(file)
    except OSError as exc:
        raise MailstackError(f"cannot read {file}: {exc.strerror}", "give the path of a Sieve script") from exc


@sieve_app.command("set")
def sieve_set(ctx: typer.Context, address: Annotated[str, typer.Argument(help="the user, e.g. alice@example.test")],
              file: Annotated[Path, typer.Argument(help="the Sieve script (- reads standard input)")],
              name: Annotated[str, typer.Option("--name", help="the script's name")] = sieve_module.SCRIPT_NAME,
              ) -> None:
    """Store a Sieve script for ADDRESS and make it the active one. A script with an error is refused with
    Sieve's message (FILE: line N: ...); the active script then stays active."""
    address = accounts_module.valid_login(address)
    script, source = _read_script(file)
    sieve_module.Sieve(ctx.obj.running_stack()).set(address, script, sieve_module.check_name(name), source=source)
    report(f"Sieve script {escape(name)} of {escape(address)} stored and active")


@sieve_app.command("get")
def sieve_get(ctx: typer.Context, address: str, name: ScriptNameOpt = None) -> None:
    """Print ADDRESS's active Sieve script (or the one named)."""
    address = accounts_module.valid_login(address)
    sys.stdout.write(sieve_module.Sieve(ctx.obj.running_stack()).get(address, name))
    sys.stdout.flush()


@sieve_app.command("list")
def sieve_list(ctx: typer.Context, address: str, as_json: JsonOpt = False) -> None:
    """ADDRESS's Sieve scripts (also those stored over ManageSieve) and which one is active."""
    address = accounts_module.valid_login(address)
    scripts = sieve_module.Sieve(ctx.obj.running_stack()).scripts(address)
    if as_json:
        print_json([script.as_dict() for script in scripts])
        return
    out.print(table(f"Sieve scripts of {address}", ["name", "active"],
                     [[script.name, "yes" if script.active else "no"] for script in scripts]))


@sieve_app.command("remove")
def sieve_remove(ctx: typer.Context, address: str, name: ScriptNameOpt = None) -> None:
    """Delete ADDRESS's active Sieve script (or the one named): mail then goes to INBOX unfiltered."""
    address = accounts_module.valid_login(address)
    removed = sieve_module.Sieve(ctx.obj.running_stack()).remove(address, name)
    report(f"removed Sieve script {escape(removed)} of {escape(address)}")
