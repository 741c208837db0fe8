"""What every flavour is made of: the Flavour record, the Store that runs its statements, the names
shared by all flavours (database, users), and the small table recording which flavour a database holds."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Protocol

from mailstack.errors import MailstackError

DB_NAME = "mailstack"
DB_HOST = "mysql"  # the compose service name, resolved inside the stack's network
MAIL_READER = "mailreader"
ADMIN_USER = "mailstack"
PASSWORD_HASH_MAX = 255  # the widest password column of any flavour (each flavour has its own limit)
SQL_DIR = "/etc/postfix/sql"  # where the Postfix image installs the rendered map files

Feature = Literal["quota", "active", "alias_domains"]
FEATURE_NAMES: Mapping[Feature, str] = MappingProxyType({
    "quota": "quotas", "active": "disabled users (no active column)", "alias_domains": "alias domains",
})

# Which flavour a database holds: one row, written when the tables are first created. A database made
# before flavours were recorded has the default flavour's `domains` table: that is what it holds.
FLAVOUR_TABLE = "mailstack_schema"
_RECORD_DDL = (
    "CREATE TABLE IF NOT EXISTS mailstack_schema (id TINYINT UNSIGNED PRIMARY KEY, "
    "flavour VARCHAR(64) NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=ascii",
    "INSERT IGNORE INTO mailstack_schema (id, flavour) SELECT 1, 'default' FROM information_schema.TABLES "
    "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'domains'",
)
_RECORDED = "SELECT flavour FROM mailstack_schema WHERE id = 1"


class Cursor(Protocol):
    def execute(self, query: str, args: Any = None) -> int: ...
    def fetchall(self) -> Any: ...
    def fetchone(self) -> Any: ...


@dataclass(frozen=True)
class UserRow:
    address: str
    password: str
    quota: int | None = None  # bytes, 0 = unlimited; None: the flavour has no quota column
    active: bool | None = None  # None: the flavour has no active column


@dataclass(frozen=True)
class Limits:
    """Column widths: longer values would be refused by MariaDB's strict mode."""

    domain: int = 253
    address: int = 254
    password: int = PASSWORD_HASH_MAX


@dataclass(frozen=True)
class Flavour:
    name: str
    ddl: tuple[str, ...]
    # Postfix lookup tables: map name -> query (Postfix substitutes and escapes %s, %u, %d). Rendered as
    # SQL_DIR/NAME.cf.
    postfix_maps: dict[str, str]
    # Which main.cf parameter lists which maps, in lookup order (rendered as `postconf -e` commands).
    postfix_parameters: dict[str, tuple[str, ...]]
    # Dovecot (it substitutes and escapes %u, %d, %n).
    password_query: str
    user_query: str
    iterate_query: str
    # The orchestrator's own statements (PyMySQL, named parameters: %(address)s, %(domain)s, ...).
    sql: dict[str, str] = field(default_factory=dict)
    # Dovecot's default_pass_scheme; None: the stack's password_scheme (the default flavour, as before).
    default_pass_scheme: str | None = None
    features: frozenset[Feature] = frozenset()
    limits: Limits = Limits()
    store_class: type[Store] | None = None  # None: Store
    # Idempotent statements run after the DDL, wherever it runs (Store.create_tables at `up` and seeding, the
    # MariaDB init file at each server start): what a later release added to a flavour's tables, so that an
    # existing stack's database gets it in place (CREATE TABLE IF NOT EXISTS, ADD COLUMN IF NOT EXISTS).
    migrations: tuple[str, ...] = ()

    def supports(self, feature: Feature) -> bool:
        return feature in self.features

    def require(self, feature: Feature) -> None:
        """A clear one-line error where the flavour has no column for this."""
        if feature not in self.features:
            having = ", ".join(sorted(name for name, f in _FLAVOURS_WITH.items() if feature in f)) or "none"
            raise MailstackError(f"the {self.name} schema has no {FEATURE_NAMES[feature]}",
                                 f"flavours that have them: {having} (MAILSTACK_SCHEMA=NAME, `mailstack up --schema "
                                 "NAME` on a fresh stack); nothing was changed")

    def postconf_commands(self) -> list[tuple[str, str]]:
        commands = [("-e", f"{parameter} = " + ", ".join(f"mysql:{SQL_DIR}/{name}.cf" for name in names))
                    for parameter, names in self.postfix_parameters.items()]
        if "quota_limited_recipients" in self.postfix_parameters:
            # main.cf: quota-status is asked only for the mailboxes this map names (it answers the class)
            commands.append(("-e", "quota_limited_check = check_recipient_access $quota_limited_recipients"))
        return commands

    def schema_statements(self) -> tuple[str, ...]:
        """Everything that makes (or brings up to date) this flavour's tables, in order; idempotent."""
        return (*self.record_statements(), *self.ddl, *self.migrations)

    def record_statements(self) -> tuple[str, ...]:
        """Create the flavour record (idempotent): an existing record is kept, whatever it says."""
        return flavour_record(self.name)

    def store(self, cursor: Cursor) -> Store:
        return (self.store_class or Store)(cursor, self)


# name -> features, filled by schema/__init__ (for the "which flavours have it" hint).
_FLAVOURS_WITH: dict[str, frozenset[Feature]] = {}


def flavour_record(name: str) -> tuple[str, ...]:
    """The statements that record which flavour (or 'custom': a production copy's own tables) a database holds."""
    if not name.replace("-", "").isalnum():
        raise ValueError(f"not a flavour name: {name!r}")
    return (*_RECORD_DDL, f"INSERT IGNORE INTO mailstack_schema (id, flavour) VALUES (1, '{name}')")  # noqa: S608


def domain_of(address: str) -> str:
    return address.rsplit("@", 1)[1]


def mismatch_error(recorded: str, wanted: str) -> MailstackError:
    return MailstackError(
        f"this stack's database holds the {recorded} schema; MAILSTACK_SCHEMA={wanted} would not see its data",
        f"use MAILSTACK_SCHEMA={recorded} (or --schema {recorded}) for this stack, or "
        "`mailstack down --volumes` starts afresh (deleting its mail and database)",
    )


class Store:
    """The orchestrator's reads and writes, as the flavour spells them; the caller owns the transaction.
    This generic store runs the flavour's `sql` statements (one row per alias destination); a flavour
    whose tables work differently brings its own subclass."""

    def __init__(self, cursor: Cursor, schema: Flavour | None = None) -> None:
        if schema is None:
            from mailstack.schema.default import DEFAULT  # noqa: PLC0415 - default.py builds on this module
            schema = DEFAULT
        self.cursor = cursor
        self.schema = schema

    def _run(self, name: str, **params: object) -> int:
        return self.cursor.execute(self.schema.sql[name], params or None)

    # --- tables and the flavour record ----------------------------------------------------------

    def create_tables(self) -> None:
        for statement in self.schema.schema_statements():
            self.cursor.execute(statement)

    def recorded_flavour(self) -> str | None:
        """The flavour this database was created with (None: no record yet)."""
        try:
            self.cursor.execute(_RECORDED)
        except Exception as exc:  # noqa: BLE001 - no table yet (PyMySQL ProgrammingError 1146)
            if getattr(exc, "args", (None,))[0] == 1146:
                return None
            raise
        row = self.cursor.fetchone()
        return row[0] if row else None

    # --- reads ----------------------------------------------------------------------------------

    def domains(self) -> list[str]:
        self._run("list_domains")
        return [row[0] for row in self.cursor.fetchall()]

    def domain_usage(self) -> dict[str, tuple[int, int]]:
        """Each domain with its number of users and of alias rows."""
        self._run("domain_usage")
        return {row[0]: (int(row[1]), int(row[2])) for row in self.cursor.fetchall()}

    def users(self) -> dict[str, str]:
        return {row.address: row.password for row in self.user_rows()}

    def user_rows(self) -> list[UserRow]:
        self._run("list_users")
        rows = []
        for row in self.cursor.fetchall():
            quota = int(row[2] or 0) if self.schema.supports("quota") else None  # NULL: unlimited
            active = bool(int(row[3])) if self.schema.supports("active") else None
            rows.append(UserRow(row[0], row[1], quota, active))
        return rows

    def aliases(self) -> dict[str, list[str]]:
        self._run("list_aliases")
        result: dict[str, list[str]] = {}
        for source, destination in self.cursor.fetchall():
            result.setdefault(source, []).append(destination)
        return result

    def alias_domains(self) -> dict[str, str]:
        self.schema.require("alias_domains")
        self._run("list_alias_domains")
        return {row[0]: row[1] for row in self.cursor.fetchall()}

    def password_hash(self, address: str) -> str | None:
        self._run("user_password", address=address)
        row = self.cursor.fetchone()
        return row[0] if row else None

    # --- writes ---------------------------------------------------------------------------------

    def add_domain(self, name: str) -> bool:
        return self._run("add_domain", domain=name) > 0

    def remove_domain(self, name: str) -> bool:
        return self._run("remove_domain", domain=name) > 0

    def add_user(self, address: str, password_hash: str, quota: int | None = None, active: bool = True) -> bool:
        """Add a mailbox; False when its domain is not a local domain."""
        if quota is not None:
            self.schema.require("quota")
        if not active:
            self.schema.require("active")
        return self._run("add_user", address=address, password=password_hash, domain=domain_of(address),
                         quota=quota or 0, active=1 if active else 0) > 0

    def set_password(self, address: str, password_hash: str) -> bool:
        return self._run("set_password", address=address, password=password_hash) > 0

    def set_quota(self, address: str, quota: int) -> bool:
        self.schema.require("quota")
        return self._run("set_quota", address=address, quota=quota) > 0

    def set_active(self, address: str, active: bool) -> bool:
        self.schema.require("active")
        return self._run("set_active", address=address, active=1 if active else 0) > 0

    def remove_user(self, address: str) -> bool:
        return self._run("remove_user", address=address) > 0

    def add_alias(self, source: str, destinations: Iterable[str]) -> int:
        return sum(self._run("add_alias", source=source, destination=dest, domain=domain_of(source))
                   for dest in destinations)

    def remove_alias(self, source: str, destination: str | None = None) -> int:
        if destination is None:
            return self._run("remove_alias", source=source)
        return self._run("remove_alias_destination", source=source, destination=destination)

    def add_alias_domain(self, alias: str, target: str) -> bool:
        self.schema.require("alias_domains")
        return self._run("add_alias_domain", alias=alias, target=target) > 0

    def remove_alias_domain(self, alias: str) -> bool:
        self.schema.require("alias_domains")
        return self._run("remove_alias_domain", alias=alias) > 0

    # --- catch-alls: the alias @domain, in every flavour ------------------------------------------

    def catch_alls(self) -> dict[str, list[str]]:
        """Each domain with a catch-all, and where its mail goes."""
        return {source[1:]: destinations for source, destinations in self.aliases().items()
                if source.startswith("@")}

    def set_catch_all(self, domain: str, destinations: Iterable[str]) -> None:
        """Replace the domain's catch-all destinations (the caller's transaction makes it one change)."""
        self.remove_alias(f"@{domain}")
        self.add_alias(f"@{domain}", destinations)
