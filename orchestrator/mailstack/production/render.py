"""A Plan into the files the stack's containers install at start: production's own map files and SQL
queries verbatim with the stack's connection details, the postconf calls over the image's main.cf and
master.cf, Dovecot's settings included after the image's dovecot.conf, and the mail root link."""

from __future__ import annotations

import json
from pathlib import Path

from mailstack import schema
from mailstack.errors import MailstackError
from mailstack.production.plan import STACK_MAIL_ROOT, Plan
from mailstack.secrets import write_private

HEADER = "# rendered by mailstack from a production server's files; do not edit\n"
# Dovecot's own default when dovecot-sql.conf.ext names none (MD5 is MD5-CRYPT).
DOVECOT_DEFAULT_PASS_SCHEME = "MD5-CRYPT"


def _connection(password: str) -> str:
    return (f"hosts = {schema.DB_HOST}\nuser = {schema.MAIL_READER}\npassword = {password}\n"
            f"dbname = {schema.DB_NAME}\n")


def render_plan(config_dir: Path, plan: Plan, mail_password: str) -> None:
    """Replace the flavour's rendered files with production's (run after schema.render_configs)."""
    root = (plan.mail_root or "").rstrip("/")
    if root and STACK_MAIL_ROOT.startswith(root + "/"):
        raise MailstackError(
            f"production's mail root {root} holds the stack's mail volume ({STACK_MAIL_ROOT}): it cannot be "
            "linked to it", "not supported yet: edit mail_location/home in the copied files to a root of its "
            "own (e.g. /var/vmail) to try the rest; nothing was started")
    postfix_dir = config_dir / "postfix"
    # The flavour's maps stay beside production's (a parameter production does not set keeps the image's).
    for table in plan.maps:
        options = "".join(f"{key} = {value}\n" for key, value in table.options.items())
        write_private(postfix_dir / f"{table.name}.cf",
                      (HEADER + _connection(mail_password) + options + f"query = {table.query}\n").encode())
    commands = "".join(f"{flag}\t{argument}\n" for flag, argument in plan.postconf_commands)
    write_private(postfix_dir / "postconf.overrides",
                  (HEADER.replace("\n", ": postconf calls, FLAG<TAB>ARG\n") + commands).encode())

    if plan.dump is not None:  # production's dump creates its own tables: none of the flavour's beside them
        record = "".join(f"{statement};\n" for statement in schema.flavour_record(plan.flavour))
        write_private(config_dir / "mysql" / "schema.sql",
                      ("-- tables come from the production dump\n" + record).encode())

    dovecot_dir = config_dir / "dovecot"
    sql = plan.dovecot_sql
    if sql is not None:
        lines = [
            "driver = mysql",
            f"connect = host={schema.DB_HOST} dbname={schema.DB_NAME} user={schema.MAIL_READER} "
            f"password={mail_password}",
            f"default_pass_scheme = {sql.default_pass_scheme or DOVECOT_DEFAULT_PASS_SCHEME}",
            *(f"{key} = {value}" for key, value in sql.options.items()),
            *(f"{name} = {query}" for name, query in (("password_query", sql.password_query),
                                                     ("user_query", sql.user_query),
                                                     ("iterate_query", sql.iterate_query)) if query),
        ]
        write_private(dovecot_dir / "dovecot-sql.conf.ext", (HEADER + "\n".join(lines) + "\n").encode())
    write_private(dovecot_dir / "overrides.conf", plan.dovecot_config.encode())
    root = dovecot_dir / "mail-root"
    if plan.mail_root and plan.mail_root.rstrip("/") != STACK_MAIL_ROOT:
        write_private(root, plan.mail_root.rstrip("/").encode())
    else:
        root.unlink(missing_ok=True)


    write_private(config_dir / schema.FLAVOUR_FILE, (plan.flavour + "\n").encode())
    # the report, masked: no secret in it
    write_private(config_dir / MARKER, (json.dumps(plan.as_json(), indent=1) + "\n").encode())


MARKER = "production.json"  # in the config dir: this stack was made from production files (their report)


def forget(config_dir: Path) -> None:
    """The next plain start renders the flavour's files again."""
    (config_dir / MARKER).unlink(missing_ok=True)
    (config_dir / "dovecot" / "overrides.conf").unlink(missing_ok=True)
    (config_dir / "dovecot" / "mail-root").unlink(missing_ok=True)


def from_production(config_dir: Path) -> bool:
    """Whether the stack's rendered config is a production plan's (then a plain `up` keeps it)."""
    return (config_dir / MARKER).is_file()
