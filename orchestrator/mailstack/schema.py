"""Schema flavours: the DDL, every query Postfix and Dovecot run, and the orchestrator's own reads and
writes. The only module that knows table and column names: another flavour (the virtual_* tables,
postfixadmin's) is one more Flavour here, and nothing in Postfix, Dovecot or the rest of the code changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mailstack.secrets import write_private

DB_NAME = "mailstack"
DB_HOST = "mysql"  # the compose service name, resolved inside the stack's network
MAIL_READER = "mailreader"
ADMIN_USER = "mailstack"
PASSWORD_HASH_MAX = 255  # users.password: a longer hash would not fit (strict mode refuses it)


class Cursor(Protocol):
    def execute(self, query: str, args: Any = None) -> int: ...
    def fetchall(self) -> Any: ...
    def fetchone(self) -> Any: ...


@dataclass(frozen=True)
class Flavour:
    name: str
    ddl: tuple[str, ...]
    # Postfix lookup tables: map name -> query (Postfix substitutes and escapes %s, %u, %d).
    postfix_maps: dict[str, str]
    # Dovecot (it substitutes and escapes %u).
    password_query: str
    user_query: str
    iterate_query: str
    # The orchestrator's own statements (PyMySQL parameters).
    sql: dict[str, str] = field(default_factory=dict)


_TABLE_OPTIONS = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"

DEFAULT = Flavour(
    name="default",
    ddl=(
        f"""CREATE TABLE IF NOT EXISTS domains (
              id INT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
              name VARCHAR(253) NOT NULL,
              UNIQUE KEY name (name)
            ) {_TABLE_OPTIONS}""",
        f"""CREATE TABLE IF NOT EXISTS users (
              id INT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
              domain_id INT UNSIGNED NOT NULL,
              email VARCHAR(254) NOT NULL,
              password VARCHAR({PASSWORD_HASH_MAX}) NOT NULL,
              UNIQUE KEY email (email),
              CONSTRAINT users_domain FOREIGN KEY (domain_id) REFERENCES domains (id) ON DELETE CASCADE
            ) {_TABLE_OPTIONS}""",
        f"""CREATE TABLE IF NOT EXISTS aliases (
              id INT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
              domain_id INT UNSIGNED NOT NULL,
              source VARCHAR(254) NOT NULL,
              destination VARCHAR(254) NOT NULL,
              UNIQUE KEY source_destination (source, destination),
              CONSTRAINT aliases_domain FOREIGN KEY (domain_id) REFERENCES domains (id) ON DELETE CASCADE
            ) {_TABLE_OPTIONS}""",
    ),
    postfix_maps={
        "virtual_domains": "SELECT 1 FROM domains WHERE name = '%s'",
        "virtual_mailboxes": "SELECT 1 FROM users WHERE email = '%s'",
        "virtual_aliases": "SELECT destination FROM aliases WHERE source = '%s'",
        "sender_logins": "SELECT email FROM users WHERE email = '%s' "
                         "UNION SELECT destination FROM aliases WHERE source = '%s'",
    },
    password_query="SELECT email AS user, password FROM users WHERE email = '%u'",
    user_query="SELECT email AS user FROM users WHERE email = '%u'",
    iterate_query="SELECT email AS user FROM users",
    sql={
        "list_domains": "SELECT name FROM domains ORDER BY name",
        "domain_usage": "SELECT d.name, (SELECT COUNT(*) FROM users u WHERE u.domain_id = d.id), "
                        "(SELECT COUNT(*) FROM aliases a WHERE a.domain_id = d.id) FROM domains d ORDER BY d.name",
        "add_domain": "INSERT IGNORE INTO domains (name) VALUES (%s)",
        "remove_domain": "DELETE FROM domains WHERE name = %s",
        "list_users": "SELECT email, password FROM users ORDER BY email",
        "user_password": "SELECT password FROM users WHERE email = %s",
        "add_user": "INSERT INTO users (domain_id, email, password) "
                    "SELECT id, %s, %s FROM domains WHERE name = %s",
        "set_password": "UPDATE users SET password = %s WHERE email = %s",
        "remove_user": "DELETE FROM users WHERE email = %s",
        "list_aliases": "SELECT source, destination FROM aliases ORDER BY source, destination",
        "add_alias": "INSERT IGNORE INTO aliases (domain_id, source, destination) "
                     "SELECT id, %s, %s FROM domains WHERE name = %s",
        "remove_alias": "DELETE FROM aliases WHERE source = %s",
        "remove_alias_destination": "DELETE FROM aliases WHERE source = %s AND destination = %s",
    },
)

FLAVOURS = {DEFAULT.name: DEFAULT}

# Not the mail schema: when the server started and its uptime ("<epoch> <seconds>"), read by Postfix's
# MariaDB watcher (see images/postfix/mysql-watch.sh).
SERVER_UPTIME_QUERY = (
    "SELECT CONCAT(UNIX_TIMESTAMP() - VARIABLE_VALUE, ' ', VARIABLE_VALUE) FROM information_schema.GLOBAL_STATUS"
    " WHERE VARIABLE_NAME = 'UPTIME' AND '%s' = 'uptime'"
)


def flavour(name: str) -> Flavour:
    return FLAVOURS[name]


def domain_of(address: str) -> str:
    return address.rsplit("@", 1)[1]


class Store:
    """The orchestrator's reads and writes, as the flavour spells them; the caller owns the transaction."""

    def __init__(self, cursor: Cursor, schema: Flavour = DEFAULT) -> None:
        self.cursor = cursor
        self.schema = schema

    def _run(self, name: str, *args: object) -> int:
        return self.cursor.execute(self.schema.sql[name], args or None)

    def create_tables(self) -> None:
        for statement in self.schema.ddl:
            self.cursor.execute(statement)

    def domains(self) -> list[str]:
        self._run("list_domains")
        return [row[0] for row in self.cursor.fetchall()]

    def domain_usage(self) -> dict[str, tuple[int, int]]:
        """Each domain with its number of users and of alias rows."""
        self._run("domain_usage")
        return {row[0]: (int(row[1]), int(row[2])) for row in self.cursor.fetchall()}

    def users(self) -> dict[str, str]:
        self._run("list_users")
        return {row[0]: row[1] for row in self.cursor.fetchall()}

    def aliases(self) -> dict[str, list[str]]:
        self._run("list_aliases")
        result: dict[str, list[str]] = {}
        for source, destination in self.cursor.fetchall():
            result.setdefault(source, []).append(destination)
        return result

    def password_hash(self, address: str) -> str | None:
        self._run("user_password", address)
        row = self.cursor.fetchone()
        return row[0] if row else None

    def add_domain(self, name: str) -> bool:
        return self._run("add_domain", name) > 0

    def remove_domain(self, name: str) -> bool:
        return self._run("remove_domain", name) > 0

    def add_user(self, address: str, password_hash: str) -> bool:
        return self._run("add_user", address, password_hash, domain_of(address)) > 0

    def set_password(self, address: str, password_hash: str) -> bool:
        return self._run("set_password", password_hash, address) > 0

    def remove_user(self, address: str) -> bool:
        return self._run("remove_user", address) > 0

    def add_alias(self, source: str, destinations: Iterable[str]) -> int:
        return sum(self._run("add_alias", source, dest, domain_of(source)) for dest in destinations)

    def remove_alias(self, source: str, destination: str | None = None) -> int:
        if destination is None:
            return self._run("remove_alias", source)
        return self._run("remove_alias_destination", source, destination)


def _cf(password: str, query: str) -> str:
    return (
        "# rendered by mailstack from its schema definition; do not edit\n"
        f"hosts = {DB_HOST}\nuser = {MAIL_READER}\npassword = {password}\ndbname = {DB_NAME}\nquery = {query}\n"
    )


def render_configs(config_dir: Path, schema: Flavour, mail_password: str, password_scheme: str,
                   postconf_commands: Iterable[tuple[str, str]] = ()) -> None:
    """Write the Postfix map files, the postconf overrides and Dovecot's SQL config the containers install
    at start."""
    postfix_dir = config_dir / "postfix"
    postfix_dir.mkdir(parents=True, exist_ok=True)
    maps = {**schema.postfix_maps, "server_uptime": SERVER_UPTIME_QUERY}
    for name, query in maps.items():
        write_private(postfix_dir / f"{name}.cf", _cf(mail_password, query).encode())
    dovecot = (
        "# rendered by mailstack from its schema definition; do not edit\n"
        "driver = mysql\n"
        f"connect = host={DB_HOST} dbname={DB_NAME} user={MAIL_READER} password={mail_password}\n"
        f"default_pass_scheme = {password_scheme}\n"
        f"password_query = {schema.password_query}\n"
        f"user_query = {schema.user_query}\n"
        f"iterate_query = {schema.iterate_query}\n"
    )
    write_private(config_dir / "dovecot" / "dovecot-sql.conf.ext", dovecot.encode())
    overrides = "# rendered by mailstack: postconf calls applied over the image's main.cf/master.cf, FLAG<TAB>ARG\n"
    overrides += "".join(f"{flag}\t{argument}\n" for flag, argument in postconf_commands)
    write_private(postfix_dir / "postconf.overrides", overrides.encode())
    ddl = "".join(f"{statement};\n" for statement in schema.ddl)
    write_private(config_dir / "mysql" / "schema.sql", ddl.encode())
