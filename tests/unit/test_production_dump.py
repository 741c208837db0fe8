"""The dump iterator, the MySQL 8 rewrites and their counts, streaming, and load errors with file:line."""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import pytest
from mailstack.production import dump
from mailstack.production.model import ProductionInputError

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "production"


def write(tmp_path: Path, text: str, name: str = "d.sql") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def statements(path: Path) -> list[tuple[int, str]]:
    return [(s.line, s.text) for s in dump.iter_statements(path)]


def test_quotes_escapes_and_comments(tmp_path: Path) -> None:
    path = write(tmp_path, "-- header ; not a statement\n# hash comment;\nINSERT INTO t VALUES ('a;b'),('it\\'s'),"
                           "('x''y');\n/* block ; */ SELECT \"q;\";\nSELECT 1 -- trailing;\n;\n")
    assert statements(path) == [
        (3, "INSERT INTO t VALUES ('a;b'),('it\\'s'),('x''y')"),
        (4, 'SELECT "q;"'),
        (5, "SELECT 1"),
    ]


def test_multiline_statement_keeps_its_first_line(tmp_path: Path) -> None:
    path = write(tmp_path, "\n\nCREATE TABLE t (\n  a TEXT DEFAULT 'x\ny;z'\n);\nSELECT 2;\n")
    assert statements(path) == [(3, "CREATE TABLE t (\n  a TEXT DEFAULT 'x\ny;z'\n)"), (7, "SELECT 2")]


def test_delimiter_changes(tmp_path: Path) -> None:
    path = write(tmp_path, "DELIMITER ;;\nCREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW BEGIN SET @a = 1; END ;;\n"
                           "DELIMITER ;\nSELECT 3;\n")
    assert statements(path) == [(2, "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW BEGIN SET @a = 1; END"),
                                (4, "SELECT 3")]


def test_gzip_detected_by_magic_bytes(tmp_path: Path) -> None:
    path = tmp_path / "backup.bin"
    path.write_bytes(gzip.compress(b"SELECT 1;\nSELECT 2;\n"))
    assert statements(path) == [(1, "SELECT 1"), (2, "SELECT 2")]


def test_unterminated_quote_names_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(ProductionInputError, match=r"dump.sql:3: unterminated ' quote"):
        list(dump.iter_statements(SAMPLES / "bad" / "dump-unterminated" / "dump.sql"))


def test_mysql8_rewrites() -> None:
    counts: Counter[str] = Counter()
    assert dump.rewrite("SET @@GLOBAL.GTID_PURGED=/*!80000 '+'*/ 'x:1-2'", counts) is None
    assert dump.rewrite("SET @@SESSION.SQL_LOG_BIN= 0", counts) is None
    assert dump.rewrite("SET @MYSQLDUMP_TEMP_LOG_BIN = @@SESSION.SQL_LOG_BIN", counts) is None
    assert dump.rewrite("USE `mailserver`", counts) is None
    assert dump.rewrite("CREATE DATABASE /*!32312 IF NOT EXISTS*/ `m`", counts) is None
    assert dump.rewrite("CREATE TABLE t (a INT) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_0900_ai_ci "
                        "/*!80016 DEFAULT ENCRYPTION='N' */", counts) == \
        "CREATE TABLE t (a INT) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"
    assert dump.rewrite("CREATE DEFINER=`root`@`localhost` FUNCTION f() RETURNS INT RETURN 1", counts) == \
        "CREATE FUNCTION f() RETURNS INT RETURN 1"
    assert dump.rewrite("/*!50013 DEFINER=`root`@`%` SQL SECURITY DEFINER */", counts) == \
        "/*!50013 SQL SECURITY DEFINER */"
    assert counts == Counter(binlog_set=3, use=1, create_database=1, collation=1, mysql8_comment=1, definer=2)


def test_row_data_is_never_rewritten() -> None:
    statement = "INSERT INTO t VALUES ('utf8mb4_0900_ai_ci DEFINER=`x`@`y` /*!80016 z */')"
    assert dump.rewrite(statement) == statement


def test_ispmail_dump_stats_and_counts() -> None:
    stats = dump.stats(SAMPLES / "ispmail" / "backup-2024-02-01.gz")
    assert (stats.tables, stats.rows) == (3, 7)
    assert stats.table_names == ("virtual_domains", "virtual_users", "virtual_aliases")
    assert stats.rewrites == {
        "GTID/binary-log SET statement skipped": 4,
        "utf8mb4_0900_* collation -> utf8mb4_unicode_ci": 8,
        "CREATE DATABASE skipped (the stack's database is used)": 1,
        "DEFINER= clause removed": 1,
        "USE skipped (loaded into `mailstack`)": 1,
    }


def test_count_rows_ignores_parentheses_in_strings() -> None:
    assert dump.count_rows("INSERT INTO t VALUES (1,'a (b'),(2,'c)'),(3,CONCAT('x','y'))") == 3
    assert dump.count_rows("INSERT INTO t SELECT * FROM u") == 0
    assert dump.count_rows("CREATE TABLE t (a INT)") == 0


def test_load_dump_executes_in_order_and_reports_failures() -> None:
    executed: list[str] = []

    def execute(statement: str) -> None:
        if statement.endswith(",)"):
            raise RuntimeError(1064, "You have an error in your SQL syntax")
        executed.append(statement)

    path = SAMPLES / "bad" / "dump-bad-statement" / "dump.sql"
    with pytest.raises(dump.DumpLoadError) as caught:
        dump.load_dump(execute, path)
    assert caught.value.message == (f"{path}:3: the database refused the statement: "
                                    "(1064) You have an error in your SQL syntax")
    assert executed == ["CREATE TABLE domains (id INT PRIMARY KEY, name VARCHAR(50))",
                        "INSERT INTO domains VALUES (1,'a.test')"]


def test_load_dump_skips_what_mariadb_must_not_run() -> None:
    executed: list[str] = []
    stats = dump.load_dump(executed.append, SAMPLES / "ispmail" / "backup-2024-02-01.gz")
    assert stats.rows == 7
    assert not [s for s in executed if "0900" in s or "DEFINER=" in s or "GTID" in s or s.startswith("USE")]


def test_a_large_dump_streams_with_progress(tmp_path: Path) -> None:
    path = tmp_path / "big.sql"
    with path.open("w") as handle:
        handle.write("CREATE TABLE t (id INT, v VARCHAR(20));\n")
        for block in range(1000):
            rows = ",".join(f"({block * 100 + i},'v;{i}')" for i in range(100))
            handle.write("INSERT INTO t VALUES " + rows + ";\n")  # noqa: S608 (writes a test dump, runs nothing)
    seen: list[tuple[int, int]] = []
    stats = dump.stats(path, progress=lambda done, total: seen.append((done, total)))
    assert (stats.tables, stats.rows) == (1, 100_000)
    size = path.stat().st_size
    assert seen[-1] == (size, size)
    assert all(total == size for _, total in seen)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
