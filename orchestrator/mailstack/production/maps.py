"""Postfix mysql: map files and Dovecot's dovecot-sql.conf.ext: queries kept verbatim, connections private."""

from __future__ import annotations

import re
from pathlib import Path

from mailstack.production.model import DovecotSql, MapFile, ProductionInputError, Setting

CONNECTION_KEYS = frozenset({"hosts", "user", "password", "dbname"})
LEGACY_KEYS = frozenset({"table", "select_field", "where_field", "additional_conditions"})
MAP_OPTION_KEYS = frozenset({
    "result_format", "domain", "expansion_limit", "option_file", "option_group", "tls_cert_file",
    "tls_key_file", "tls_CAfile", "tls_CApath", "tls_ciphers", "tls_verify_cert", "require_result_set",
    "idle_interval", "retry_interval",
})
MAP_KEYS = CONNECTION_KEYS | LEGACY_KEYS | MAP_OPTION_KEYS | {"query"}
DOVECOT_SQL_KEYS = frozenset({
    "driver", "connect", "default_pass_scheme", "password_query", "user_query", "iterate_query",
})

_KEY_VALUE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")


def parse_postfix_style(path: Path, text: str | None = None) -> list[Setting]:
    """`name = value` lines as main.cf and map files have them: `#` lines are comments, a line starting
    with whitespace continues the previous one."""
    text = path.read_text(encoding="utf-8", errors="replace") if text is None else text
    settings: list[Setting] = []
    current: list[str] | None = None
    start = 0

    def finish() -> None:
        if current is not None:
            match = _KEY_VALUE.match(" ".join(current))
            assert match is not None
            settings.append(Setting(match.group(1), match.group(2).strip(), path, start))

    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if raw[0] in " \t":
            if current is None:
                raise ProductionInputError(
                    f"{path}:{number}: a continuation line with nothing to continue: {stripped[:60]!r}",
                    "a line starting with whitespace continues the setting above it",
                )
            current.append(stripped)
            continue
        finish()
        if not _KEY_VALUE.match(stripped):
            raise ProductionInputError(
                f"{path}:{number}: not a `name = value` line: {stripped[:60]!r}",
                "fix the line in the copied file (or remove it) and run again",
            )
        current, start = [stripped], number
    finish()
    return settings


def legacy_query(values: dict[str, str]) -> str:
    """Postfix's own translation of table/select_field/where_field/additional_conditions."""
    # Postfix's map text, not a query we run: the stack's Postfix substitutes and escapes %s.
    query = f"SELECT {values['select_field']} FROM {values['table']} WHERE {values['where_field']} = '%s'"  # noqa: S608
    extra = values.get("additional_conditions", "").strip()
    return f"{query} {extra}" if extra else query


def parse_map(path: Path, text: str | None = None) -> tuple[MapFile, list[str]]:
    """A mysql: map file, and warnings for keys the stack does not know."""
    settings = parse_postfix_style(path, text)
    values = {setting.name: setting.value for setting in settings}
    warnings = [
        f"{path}:{setting.line}: unknown mysql map key `{setting.name}`: not applied"
        for setting in settings if setting.name not in MAP_KEYS
    ]
    if "query" in values:
        query = values["query"]
    elif {"table", "select_field", "where_field"} <= values.keys():
        query = legacy_query(values)
    else:
        raise ProductionInputError(
            f"{path}:1: a mysql map needs `query` (or table, select_field and where_field)",
            "copy the whole map file from the production server",
        )
    options = {key: value for key, value in values.items() if key in MAP_OPTION_KEYS}
    connection = {key: value for key, value in values.items() if key in CONNECTION_KEYS}
    return MapFile(name=path.stem, file=path, query=query, options=options, connection=connection), warnings


def parse_dovecot_kv(path: Path, text: str | None = None) -> list[Setting]:
    """Dovecot's `key = value` files: `#` comments, a trailing `\\` continues on the next line."""
    text = path.read_text(encoding="utf-8", errors="replace") if text is None else text
    settings: list[Setting] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        logical = " ".join(part for part in pending if part)
        pending = []
        match = _KEY_VALUE.match(logical)
        if not match:
            raise ProductionInputError(
                f"{path}:{start}: not a `key = value` line: {logical[:60]!r}",
                "fix the line in the copied file (or remove it) and run again",
            )
        settings.append(Setting(match.group(1), unquote(match.group(2).strip()), path, start))
    if pending:
        raise ProductionInputError(f"{path}:{start}: the file ends inside a `\\` continuation", None)
    return settings


def unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


_CONNECT_PART = re.compile(r"""(\w+)=("[^"]*"|'[^']*'|\S+)""")


def parse_connect(connect: str) -> dict[str, str]:
    return {key: unquote(value) for key, value in _CONNECT_PART.findall(connect)}


def parse_dovecot_sql(path: Path, text: str | None = None) -> tuple[DovecotSql, list[str]]:
    settings = parse_dovecot_kv(path, text)
    values = {setting.name: setting.value for setting in settings}
    warnings = [
        f"{path}:{setting.line}: unknown dovecot-sql key `{setting.name}`: not applied"
        for setting in settings if setting.name not in DOVECOT_SQL_KEYS
    ]
    driver = values.get("driver", "mysql")
    if driver != "mysql":
        warnings.append(f"{path}: driver = {driver}: the stack runs MariaDB; its queries are run as MySQL")
    sql = DovecotSql(
        file=path,
        driver=driver,
        default_pass_scheme=values.get("default_pass_scheme"),
        password_query=values.get("password_query"),
        user_query=values.get("user_query"),
        iterate_query=values.get("iterate_query"),
        options={key: value for key, value in values.items() if key not in DOVECOT_SQL_KEYS},
        connection=parse_connect(values.get("connect", "")),
    )
    return sql, warnings


def secrets_of(maps: tuple[MapFile, ...], sql: DovecotSql | None) -> set[str]:
    found = {m.connection["password"] for m in maps if m.connection.get("password")}
    if sql is not None and sql.connection.get("password"):
        found.add(sql.connection["password"])
    return found


_TABLE_REFERENCE = re.compile(r"\b(?:FROM|JOIN|INTO|UPDATE)\s+((?:`[^`]+`|\w+)(?:\s*,\s*(?:`[^`]+`|\w+))*)",
                              re.IGNORECASE)


def tables_in_query(query: str) -> set[str]:
    names: set[str] = set()
    for group in _TABLE_REFERENCE.findall(query):
        for name in group.split(","):
            names.add(name.strip().strip("`").split(".")[-1].lower())
    return names
