"""Schema flavours: the DDL, every query Postfix and Dovecot run, and the orchestrator's own reads and
writes. The only package that knows table and column names: a flavour is one module here (default.py,
virtual.py, postfixadmin.py), and nothing in Postfix, Dovecot or the rest of the code changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from mailstack.errors import MailstackError
from mailstack.schema import base
from mailstack.schema.base import (
    ADMIN_USER,
    DB_HOST,
    DB_NAME,
    FLAVOUR_TABLE,
    MAIL_READER,
    PASSWORD_HASH_MAX,
    SQL_DIR,
    Cursor,
    Feature,
    Flavour,
    Limits,
    Store,
    UserRow,
    domain_of,
    flavour_record,
    mismatch_error,
)
from mailstack.schema.default import DEFAULT
from mailstack.schema.postfixadmin import POSTFIXADMIN
from mailstack.schema.virtual import VIRTUAL
from mailstack.secrets import write_private

FLAVOURS: dict[str, Flavour] = {f.name: f for f in (DEFAULT, VIRTUAL, POSTFIXADMIN)}
base._FLAVOURS_WITH.update({name: f.features for name, f in FLAVOURS.items()})

# Not the mail schema: when the server started, its uptime and the id of this run of it ("<epoch> <seconds>
# <uuid>"; the MariaDB image's init file makes a new id at every start), read by Postfix's MariaDB watcher (see
# images/postfix/mysql-watch.sh).
SERVER_UPTIME_QUERY = (
    "SELECT CONCAT(UNIX_TIMESTAMP() - VARIABLE_VALUE, ' ', VARIABLE_VALUE, ' ', (SELECT id FROM server_state.boot"
    " LIMIT 1)) FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'UPTIME' AND '%s' = 'uptime'"
)


def flavour(name: str) -> Flavour:
    try:
        return FLAVOURS[name]
    except KeyError:
        raise MailstackError(f"unknown schema flavour {name!r}",
                             f"choose one of {', '.join(FLAVOURS)} (MAILSTACK_SCHEMA, --schema)") from None


def _cf(password: str, query: str) -> str:
    return (
        "# rendered by mailstack from its schema definition; do not edit\n"
        f"hosts = {DB_HOST}\nuser = {MAIL_READER}\npassword = {password}\ndbname = {DB_NAME}\nquery = {query}\n"
    )


def render_configs(config_dir: Path, schema: Flavour, mail_password: str, password_scheme: str,
                   postconf_commands: Iterable[tuple[str, str]] = (), default_pass_scheme: str | None = None) -> None:
    """Write the Postfix map files, the postconf overrides and Dovecot's SQL config the containers install
    at start. Dovecot's default_pass_scheme (for unprefixed hashes): default_pass_scheme if given, else the
    flavour's, else password_scheme (the scheme of the stack's own, always prefixed, hashes). The
    flavour's own postconf commands (which maps each parameter lists) come first, the given ones after."""
    postfix_dir = config_dir / "postfix"
    postfix_dir.mkdir(parents=True, exist_ok=True)
    for stale in postfix_dir.glob("*.cf"):  # another flavour's maps must not be installed too
        stale.unlink()
    maps = {**schema.postfix_maps, "server_uptime": SERVER_UPTIME_QUERY}
    for name, query in maps.items():
        write_private(postfix_dir / f"{name}.cf", _cf(mail_password, query).encode())
    dovecot = (
        "# rendered by mailstack from its schema definition; do not edit\n"
        "driver = mysql\n"
        f"connect = host={DB_HOST} dbname={DB_NAME} user={MAIL_READER} password={mail_password}\n"
        f"default_pass_scheme = {default_pass_scheme or schema.default_pass_scheme or password_scheme}\n"
        f"password_query = {schema.password_query}\n"
        f"user_query = {schema.user_query}\n"
        f"iterate_query = {schema.iterate_query}\n"
    )
    write_private(config_dir / "dovecot" / "dovecot-sql.conf.ext", dovecot.encode())
    overrides = "# rendered by mailstack: postconf calls applied over the image's main.cf/master.cf, FLAG<TAB>ARG\n"
    commands = [*schema.postconf_commands(), *postconf_commands]
    overrides += "".join(f"{flag}\t{argument}\n" for flag, argument in commands)
    write_private(postfix_dir / "postconf.overrides", overrides.encode())
    ddl = "".join(f"{statement};\n" for statement in schema.schema_statements())
    write_private(config_dir / "mysql" / "schema.sql", ddl.encode())
    write_private(config_dir / FLAVOUR_FILE, (schema.name + "\n").encode())


FLAVOUR_FILE = "flavour"  # in the config dir: the flavour the stack was rendered with


def rendered_flavour(config_dir: Path) -> str | None:
    """The built-in flavour a stack's config was rendered with (None: none, or a production copy's own)."""
    try:
        name = (config_dir / FLAVOUR_FILE).read_text().strip()
    except OSError:
        return None
    return name if name in FLAVOURS else None


__all__ = [
    "ADMIN_USER", "DB_HOST", "DB_NAME", "DEFAULT", "FLAVOURS", "FLAVOUR_TABLE", "MAIL_READER", "PASSWORD_HASH_MAX",
    "POSTFIXADMIN", "SERVER_UPTIME_QUERY", "SQL_DIR", "VIRTUAL", "Cursor", "Feature", "Flavour", "Limits", "Store",
    "UserRow", "domain_of", "flavour", "flavour_record", "mismatch_error", "rendered_flavour", "render_configs",
]
