"""mysqldump files (plain or gzip), streamed: statements with their line numbers, the rewrites a MySQL 8 or
5.7 dump needs to load into MariaDB 10.11, table and row counts, and the loader."""

from __future__ import annotations

import gzip
import io
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mailstack.production.model import DumpStats, ProductionInputError

GZIP_MAGIC = b"\x1f\x8b"
CHUNK_LINES_HINT = 1 << 16
STACK_DATABASE = "mailstack"

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Statement:
    text: str
    line: int


def is_gzip(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(2) == GZIP_MAGIC


@contextmanager
def _open_text(path: Path) -> Iterator[tuple[io.TextIOWrapper, BinaryIO]]:
    """The dump as text (UTF-8, undecodable bytes kept as surrogates), and the raw file for progress."""
    raw = path.open("rb")
    try:
        binary: BinaryIO = gzip.GzipFile(fileobj=raw, mode="rb") if is_gzip(path) else raw  # type: ignore[assignment]
        yield io.TextIOWrapper(binary, encoding="utf-8", errors="surrogateescape", newline=""), raw
    finally:
        raw.close()


def head_text(path: Path, limit: int = 65536) -> str:
    """The first bytes of a (possibly gzipped) file as text, for detection."""
    try:
        with path.open("rb") as raw:
            binary = gzip.GzipFile(fileobj=raw, mode="rb") if raw.read(2) == GZIP_MAGIC else raw
            raw.seek(0)
            return binary.read(limit).decode("utf-8", errors="replace")
    except (OSError, EOFError):
        return ""


def _normal_pattern(delimiter: str) -> re.Pattern[str]:
    return re.compile(r"""['"`]|--(?=\s)|\#|/\*[!M]?|\*/|""" + re.escape(delimiter))


_QUOTE_END = {q: re.compile(r"[\\" + q + "]") for q in ("'", '"')}
_QUOTE_END["`"] = re.compile("`")
_COMMENT_END = re.compile(r"\*/")
_DELIMITER_LINE = re.compile(r"\s*DELIMITER\s+(\S+)\s*$", re.IGNORECASE)
# With the ; delimiter: a run of text holding no token the scanner acts on, quoted strings that end on
# the same line included, matched in one go (an extended INSERT's line is mostly that).
_PLAIN_RUN = re.compile(
    r"""(?:[^'"`\-#/*;]+|-(?!-\s)|/(?!\*)|\*(?!/)"""
    r"""|'[^'\\]*(?:\\[\s\S][^'\\]*)*'|"[^"\\]*(?:\\[\s\S][^"\\]*)*"|`[^`]*`)+"""
)


def iter_statements(path: Path, progress: Progress | None = None) -> Iterator[Statement]:
    """Each SQL statement of the dump (comments removed, MySQL versioned comments kept), streamed."""
    total = os.path.getsize(path)
    delimiter = ";"
    pattern = _normal_pattern(delimiter)
    parts: list[str] = []
    start_line = 0
    quote: str | None = None
    in_comment = False
    versioned = False
    line_number = 0
    if progress is not None:
        progress(0, total)
    with _open_text(path) as (text, raw):
        for line_number, line in enumerate(text, start=1):  # noqa: B007 (used after the loop)
            if progress is not None and (line_number % 4096 == 0 or len(line) > CHUNK_LINES_HINT):
                progress(raw.tell(), total)  # mysqldump writes each extended INSERT (~1 MB) on one line
            if quote is None and not in_comment and not versioned and not "".join(parts).strip():
                match = _DELIMITER_LINE.match(line)
                if match:
                    delimiter = match.group(1)
                    pattern = _normal_pattern(delimiter)
                    parts, start_line = [], 0
                    continue
            position = 0
            length = len(line)
            while position < length:
                if in_comment:
                    end = _COMMENT_END.search(line, position)
                    if end is None:
                        position = length
                        break
                    in_comment = False
                    position = end.end()
                    continue
                if quote is not None:
                    end = _QUOTE_END[quote].search(line, position)
                    if end is None:
                        parts.append(line[position:])
                        position = length
                        break
                    if end.group() == "\\":
                        parts.append(line[position:end.end() + 1])
                        position = end.end() + 1
                        continue
                    parts.append(line[position:end.end()])
                    position = end.end()
                    quote = None
                    continue
                if delimiter == ";":
                    run = _PLAIN_RUN.match(line, position)
                    if run is not None:
                        if not start_line and not run.group().isspace():
                            start_line = line_number
                        parts.append(run.group())
                        position = run.end()
                        continue
                found = pattern.search(line, position)
                if found is None:
                    chunk = line[position:]
                    if not start_line and chunk.strip():
                        start_line = line_number
                    parts.append(chunk)
                    break
                before = line[position:found.start()]
                token = found.group()
                if not start_line and (before.strip() or token in ("'", '"', "`", "/*!", "/*M")):
                    start_line = line_number
                parts.append(before)
                position = found.end()
                if token in ("'", '"', "`"):
                    parts.append(token)
                    quote = token
                elif token in ("--", "#"):
                    parts.append("\n")
                    break
                elif token == "/*":
                    in_comment = True
                    parts.append(" ")
                elif token in ("/*!", "/*M"):
                    parts.append(token)
                    versioned = True
                elif token == "*/":
                    parts.append(token)
                    versioned = False
                elif versioned:
                    parts.append(token)
                else:  # the delimiter
                    statement = "".join(parts).strip()
                    if statement:
                        yield Statement(statement, start_line)
                    parts, start_line = [], 0
        if quote is not None:
            raise ProductionInputError(
                f"{path}:{start_line}: unterminated {quote} quote in the statement starting here",
                "the dump is truncated or not a mysqldump file",
            )
        statement = "".join(parts).strip()
        if statement:
            yield Statement(statement, start_line or line_number)
        if progress is not None:
            progress(total, total)


# --- MySQL 8 / 5.7 -> MariaDB 10.11 --------------------------------------------------------------------

_DATA_STATEMENT = re.compile(r"(?:/\*![0-9]+\s*)?\s*(INSERT|REPLACE)\b", re.IGNORECASE)
_SKIP_BINLOG = re.compile(
    r"^\s*(?:/\*![0-9]+\s*)?SET\s+(?:@@(?:GLOBAL|SESSION)\.)?(?:GTID_PURGED|SQL_LOG_BIN|GTID_NEXT)\b"
    r"|^\s*(?:/\*![0-9]+\s*)?SET\s+@MYSQLDUMP_TEMP_LOG_BIN\b",
    re.IGNORECASE,
)
_CREATE_DATABASE = re.compile(r"^\s*(?:/\*![0-9]+\s*)?CREATE\s+(?:DATABASE|SCHEMA)\b", re.IGNORECASE)
_USE = re.compile(r"^\s*USE\s+", re.IGNORECASE)
_COLLATION_0900 = re.compile(r"\butf8mb4_0900_\w+", re.IGNORECASE)
_DEFINER = re.compile(
    r"\s*\bDEFINER\s*=\s*(?:`[^`]*`|'[^']*'|[^\s@]+)(?:\s*@\s*(?:`[^`]*`|'[^']*'|[^\s*]+))?", re.IGNORECASE
)
# MariaDB's version numbers (10xxxx) are larger than MySQL 8's (8xxxx): it would run what MySQL 8 meant
# for itself only. Five digits starting with 8 or 9 are MySQL 8+ only.
_MYSQL8_COMMENT = re.compile(r"/\*![89][0-9]{4}\s(?:[^*']|'[^']*'|\*(?!/))*\*/")
_EMPTY_VERSIONED = re.compile(r"/\*![0-9]+\s*\*/")

REWRITE_LABELS = {
    "collation": "utf8mb4_0900_* collation -> utf8mb4_unicode_ci",
    "definer": "DEFINER= clause removed",
    "mysql8_comment": "MySQL 8 versioned comment removed",
    "binlog_set": "GTID/binary-log SET statement skipped",
    "create_database": "CREATE DATABASE skipped (the stack's database is used)",
    "use": f"USE skipped (loaded into `{STACK_DATABASE}`)",
}


def rewrite(statement: str, counts: Counter[str] | None = None) -> str | None:
    """The statement as MariaDB 10.11 must see it, or None to skip it. Row data is never touched."""
    counts = counts if counts is not None else Counter()
    if _DATA_STATEMENT.match(statement):
        return statement
    if _SKIP_BINLOG.search(statement):
        counts["binlog_set"] += 1
        return None
    if _CREATE_DATABASE.match(statement):
        counts["create_database"] += 1
        return None
    if _USE.match(statement):
        counts["use"] += 1
        return None
    text, found = _MYSQL8_COMMENT.subn("", statement)
    counts["mysql8_comment"] += found
    text, found = _COLLATION_0900.subn("utf8mb4_unicode_ci", text)
    counts["collation"] += found
    text, found = _DEFINER.subn("", text)
    counts["definer"] += found
    text = _EMPTY_VERSIONED.sub("", text).strip()
    return text or None


# --- counting ------------------------------------------------------------------------------------------

_CREATE_TABLE = re.compile(
    r"^\s*CREATE\s+(?:TEMPORARY\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?((?:`[^`]+`|\w+)(?:\.(?:`[^`]+`|\w+))?)",
    re.IGNORECASE,
)
_VALUES = re.compile(r"\bVALUES?\b", re.IGNORECASE)
_STRINGS = re.compile(r"'[^'\\]*(?:(?:\\.|'')[^'\\]*)*'|\"[^\"\\]*(?:(?:\\.|\"\")[^\"\\]*)*\"", re.DOTALL)
_NESTED = re.compile(r"\([^)]*\(")
_PARENTHESES = re.compile(r"[()]")


def table_name(statement: str) -> str | None:
    match = _CREATE_TABLE.match(statement)
    if not match:
        return None
    return match.group(1).split(".")[-1].strip("`")


def count_rows(statement: str) -> int:
    """The row tuples of INSERT ... VALUES (...),(...); 0 for anything else."""
    if not _DATA_STATEMENT.match(statement):
        return 0
    values = _VALUES.search(statement)
    if values is None:
        return 0
    parentheses = _STRINGS.sub("", statement[values.end():])
    if _NESTED.search(parentheses) is None:  # the usual case: each ( opens a row
        return parentheses.count("(")
    rows = depth = 0
    for token in _PARENTHESES.finditer(parentheses):
        char = token.group()
        if char == "(":
            if depth == 0:
                rows += 1
            depth += 1
        elif char == ")":
            depth -= 1
    return rows


def _labelled(counts: Counter[str]) -> dict[str, int]:
    return {REWRITE_LABELS[key]: value for key, value in sorted(counts.items()) if value}


def stats(path: Path, progress: Progress | None = None) -> DumpStats:
    """Tables created, rows inserted and the rewrites loading will make (one streamed pass, nothing run)."""
    return load_dump(lambda _statement: None, path, progress)


class DumpLoadError(ProductionInputError):
    """The database refused a statement of the dump."""


def _database_message(error: Exception) -> str:
    args = error.args
    if len(args) >= 2 and isinstance(args[0], int):
        return f"({args[0]}) {args[1]}"
    return str(error) or type(error).__name__


def load_dump(execute: Callable[[str], object], path: Path, progress: Progress | None = None) -> DumpStats:
    """Run each (rewritten) statement through `execute`; a refusal names file:line and the server's words."""
    counts: Counter[str] = Counter()
    tables: list[str] = []
    rows = 0
    for statement in iter_statements(path, progress):
        text = rewrite(statement.text, counts)
        if text is None:
            continue
        try:
            execute(text)
        except Exception as error:  # the database driver's own error types
            raise DumpLoadError(
                f"{path}:{statement.line}: the database refused the statement: {_database_message(error)}",
                "fix or remove that statement in the dump and run again",
            ) from error
        name = table_name(text)
        if name is not None:
            tables.append(name)
        rows += count_rows(text)
    return DumpStats(tables=len(tables), rows=rows, table_names=tuple(tables), rewrites=_labelled(counts))
