"""What the command modules share: the consoles, the shared option types, the per-invocation Context and the
output and password helpers (it imports no command module)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mailstack import accounts as accounts_module
from mailstack import schema
from mailstack.db import Database
from mailstack.errors import MailstackError
from mailstack.settings import Settings, load_settings
from mailstack.stack import Stack, adopt_started

console = Console(stderr=True)
out = Console()

ProjectOpt = Annotated[str | None, typer.Option("--project", "-p",
                                                help="compose project name [env: MAILSTACK_PROJECT]")]
StateOpt = Annotated[Path | None, typer.Option("--state-dir", help="where secrets, certificates and rendered "
                                               "configs live [env: MAILSTACK_STATE_DIR]")]
SchemaOpt = Annotated[str | None, typer.Option("--schema", help="schema flavour: default, virtual or postfixadmin "
                                               "[env: MAILSTACK_SCHEMA]")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]
PasswordStdinOpt = Annotated[bool, typer.Option("--password-stdin",
                                                help="read the password from the first line of standard input")]


class Context:
    """Settings resolved once per invocation, from the global options, the environment and .env."""

    def __init__(self, **overrides: object) -> None:
        self.overrides = overrides
        self._settings: Settings | None = None
        self._stack: Stack | None = None
        self._database: Database | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(**self.overrides)
        return self._settings

    def stack(self) -> Stack:
        if self._stack is None:
            self._stack = Stack(adopt_started(self.settings))
        return self._stack

    def running_stack(self) -> Stack:
        """The stack, or StackNotRunning ("run `make up`")."""
        stack = self.stack()
        stack.require_running()
        return stack

    def database(self) -> Database:
        if self._database is None:
            database = Database.for_stack(self.running_stack())  # in the flavour the database records
            database.check_flavour()  # and, when the settings name one, the same
            self._database = database
        return self._database

    def flavour(self) -> schema.Flavour:
        """The settings' flavour when they name one, else the one this stack was rendered with (its state
        directory says; no stack or database is asked, so that checks run before any prompt)."""
        if "schema_flavour" in self.settings.model_fields_set:
            return schema.flavour(self.settings.schema_flavour)
        return schema.flavour(schema.rendered_flavour(self.settings.config_dir) or self.settings.schema_flavour)

    def accounts(self) -> accounts_module.Accounts:
        return accounts_module.Accounts(self.database, self.settings.password_scheme, self.settings.hash_cost,
                                        self.flavour(),
                                        domains_changed=lambda domains: accounts_module.publish_domains(
                                            self.stack(), domains))


def report(message: str) -> None:
    console.print(f"[dim]•[/dim] {message}", soft_wrap=True)


def print_json(data: object) -> None:
    out.print_json(json.dumps(data))


def table(title: str, columns: list[str], rows: list[list[object]]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(Text(str(cell)) for cell in row))  # Text: no markup in data
    return table


def read_password(from_stdin: bool, confirm: bool, prompt: str = "Password",
                  before_prompt: Callable[[], object] | None = None) -> str:
    """From the first line of stdin (--password-stdin) or a hidden prompt; never from the command line.
    `before_prompt` runs first on the interactive path (e.g. checking the stack runs, so nobody types a
    password twice for nothing)."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise MailstackError("no password on standard input (--password-stdin)",
                                 "pipe it in: printf '%s\\n' \"$PASSWORD\" | mailstack ... --password-stdin")
        return password
    if before_prompt is not None:
        before_prompt()
    try:
        return typer.prompt(prompt, hide_input=True, confirmation_prompt=confirm)
    except typer.Abort as exc:
        raise MailstackError("no password given", "type it at the prompt, or pipe it in with --password-stdin") from exc
