"""Recognise production files by their content, whatever their names, and parse them into Sources."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from mailstack.production import dovecot, dump, maps, postfix
from mailstack.production.model import DovecotSql, DumpStats, MapFile, ProductionInputError, Setting

LOOKED_FOR = (
    "`postconf -n` output or main.cf", "master.cf", "`doveconf -n` output or dovecot.conf",
    "Postfix mysql: map files", "dovecot-sql.conf.ext", "a schema or mysqldump (.sql or .sql.gz)",
)
_SQL_START = re.compile(r"^\s*(CREATE\s+TABLE|INSERT\s+INTO|DROP\s+TABLE|LOCK\s+TABLES|--\s+(MySQL|MariaDB)\s+dump)",
                        re.IGNORECASE | re.MULTILINE)
_KEY_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=")


@dataclass(frozen=True)
class Sources:
    root: Path
    postfix_main: tuple[Setting, ...] = ()
    postfix_main_file: Path | None = None
    master: tuple[postfix.MasterEntry, ...] = ()
    dovecot: dovecot.ParsedConfig | None = None
    maps: tuple[MapFile, ...] = ()
    dovecot_sql: DovecotSql | None = None
    dump: Path | None = None
    dump_stats: DumpStats | None = None
    other_files: dict[str, Path] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


def classify(path: Path) -> str | None:
    """postfix-main | master | dovecot | map | dovecot-sql | dump, or None."""
    text = dump.head_text(path)
    if not text.strip() or "\x00" in text:
        return None
    if _SQL_START.search(text):
        return "dump"
    keys = {m.group(1) for line in text.splitlines() if (m := _KEY_LINE.match(line.strip()))}
    has_sections = any(line.rstrip().endswith("{") for line in text.splitlines() if not line.lstrip().startswith("#"))
    if not has_sections and "connect" in keys and keys & {"password_query", "user_query", "iterate_query"}:
        return "dovecot-sql"
    if not has_sections and ("query" in keys or "select_field" in keys) and keys <= maps.MAP_KEYS | {"query"}:
        return "map"
    if not has_sections and ("query" in keys or "select_field" in keys) and "hosts" in keys:
        return "map"
    if postfix.looks_like_master(text):
        return "master"
    postfix_score = sum(1 for key in keys if key in postfix.known_parameters())
    dovecot_score = dovecot.looks_like_dovecot(text)
    if max(postfix_score, dovecot_score) < 2:
        return None
    return "postfix-main" if postfix_score > dovecot_score else "dovecot"


def _files(root: Path) -> list[Path]:
    return sorted(
        path for path in root.rglob("*")
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts)
    )


def _one(kind: str, candidates: list[Path], same: object = None) -> Path | None:
    if len(candidates) > 1 and not same:
        names = ", ".join(str(p) for p in candidates)
        raise ProductionInputError(
            f"two different {kind} files: {names}",
            "keep one of them in the folder (files of the same kind must agree)",
        )
    return candidates[0] if candidates else None


def read_dir(path: Path) -> Sources:
    """Detect and parse every file under `path`; errors name file:line."""
    root = Path(path)
    if not root.is_dir():
        raise ProductionInputError(f"{root} is not a directory", "pass the folder copied from production")
    kinds: dict[str, list[Path]] = {}
    unrecognised: list[Path] = []
    for file in _files(root):
        kind = classify(file)
        (kinds.setdefault(kind, []) if kind else unrecognised).append(file)
    if not kinds:
        raise ProductionInputError(
            f"nothing recognisable in {root}",
            "it looked for: " + "; ".join(LOOKED_FOR),
        )
    warnings: list[str] = []

    mains = {file: tuple(maps.parse_postfix_style(file)) for file in kinds.get("postfix-main", [])}
    values = {file: {s.name: s.value for s in settings} for file, settings in mains.items()}
    main_file = _one("main.cf / postconf -n", list(mains), len({str(v) for v in values.values()}) == 1)

    masters = {file: tuple(postfix.parse_master(file)) for file in kinds.get("master", [])}
    texts = {tuple(e.entry_text() for e in entries) for entries in masters.values()}
    master_file = _one("master.cf", list(masters), len(texts) == 1)

    parsed = [dovecot.parse_dovecot(file) for file in kinds.get("dovecot", [])]
    included = {f for config in parsed for f in config.files[1:]}
    roots = [config for config in parsed if config.root not in included]
    rendered = {str([dovecot.render(n) for n in config.nodes]) for config in roots}
    dovecot_root = _one("Dovecot configuration", [c.root for c in roots], len(rendered) == 1)
    dovecot_config = next((c for c in roots if c.root == dovecot_root), None)
    if dovecot_config is not None:
        warnings += dovecot_config.warnings

    map_files: dict[str, MapFile] = {}
    for file in kinds.get("map", []):
        parsed_map, map_warnings = maps.parse_map(file)
        warnings += map_warnings
        earlier = map_files.get(parsed_map.name)
        if earlier is not None and (earlier.query, earlier.options) != (parsed_map.query, parsed_map.options):
            raise ProductionInputError(f"two different map files named {parsed_map.name}: {earlier.file}, {file}",
                                       "keep one of them (the stack installs maps by file name)")
        map_files.setdefault(parsed_map.name, parsed_map)

    sql_files = [maps.parse_dovecot_sql(file) for file in kinds.get("dovecot-sql", [])]
    distinct = {(s.password_query, s.user_query, s.iterate_query, s.default_pass_scheme) for s, _ in sql_files}
    sql_file = _one("dovecot-sql.conf.ext", [s.file for s, _ in sql_files], len(distinct) == 1)
    dovecot_sql = next((s for s, _ in sql_files if s.file == sql_file), None)
    for s, sql_warnings in sql_files:
        if s.file == sql_file:
            warnings += sql_warnings

    dump_file = _one("SQL dump", kinds.get("dump", []))
    dump_stats = dump.stats(dump_file) if dump_file is not None else None

    return Sources(
        root=root,
        postfix_main=mains.get(main_file, ()) if main_file else (),
        postfix_main_file=main_file,
        master=masters.get(master_file, ()) if master_file else (),
        dovecot=dovecot_config,
        maps=tuple(map_files[name] for name in sorted(map_files)),
        dovecot_sql=dovecot_sql,
        dump=dump_file,
        dump_stats=dump_stats,
        other_files={file.name: file for file in unrecognised},
        warnings=tuple(warnings),
    )
