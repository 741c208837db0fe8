"""The shapes read_dir and make_plan pass around: one error type, the report's entries, the parsed files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mailstack.errors import MailstackError

MASK = "***"


class ProductionInputError(MailstackError):
    """A production file could not be read: the message starts with `file:line`."""


def located(path: Path, line: int | None) -> str:
    return f"{path}:{line}" if line else str(path)


@dataclass(frozen=True)
class Kept:
    name: str
    value: str


@dataclass(frozen=True)
class Rewritten:
    name: str
    old: str
    new: str
    why: str


@dataclass(frozen=True)
class Dropped:
    name: str
    value: str
    why: str


@dataclass(frozen=True)
class ServicePlan:
    """What happens to each production setting of one service: kept as is, rewritten, or dropped."""

    kept: tuple[Kept, ...] = ()
    rewritten: tuple[Rewritten, ...] = ()
    dropped: tuple[Dropped, ...] = ()

    def kept_dict(self) -> dict[str, str]:
        return {entry.name: entry.value for entry in self.kept}

    def find(self, name: str) -> Kept | Rewritten | Dropped | None:
        for entry in (*self.kept, *self.rewritten, *self.dropped):
            if entry.name == name:
                return entry
        return None


@dataclass(frozen=True)
class Setting:
    """One `name = value` of a Postfix-style file, with where it was written."""

    name: str
    value: str
    file: Path
    line: int


@dataclass(frozen=True)
class MapFile:
    """A Postfix mysql: table: its query and options verbatim; the connection stays private."""

    name: str
    file: Path
    query: str
    options: dict[str, str] = field(default_factory=dict)
    connection: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class DovecotSql:
    """Dovecot's dovecot-sql.conf.ext: queries verbatim; the connect string stays private."""

    file: Path
    driver: str
    default_pass_scheme: str | None
    password_query: str | None
    user_query: str | None
    iterate_query: str | None
    options: dict[str, str] = field(default_factory=dict)
    connection: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class DumpStats:
    tables: int
    rows: int
    table_names: tuple[str, ...] = ()
    rewrites: dict[str, int] = field(default_factory=dict)
