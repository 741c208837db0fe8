"""The orchestrator's connection to the stack's MariaDB (PyMySQL), one transaction at a time.

Retries cover connection errors only (the server is still starting); a failing statement is never retried.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import pymysql
import pymysql.err

from mailstack import schema
from mailstack.errors import MailstackError
from mailstack.secrets import ensure_secret

# PyMySQL / MariaDB codes meaning "could not reach or talk to the server": worth another try.
CONNECTION_ERRORS = {2002, 2003, 2006, 2013, 1040}


def _is_connection_error(exc: pymysql.err.OperationalError) -> bool:
    return bool(exc.args) and exc.args[0] in CONNECTION_ERRORS


class Database:
    """Where and how to reach the mail database as its admin user."""

    def __init__(self, host: str, port: int, password: str, schema_flavour: str = "default",
                 keep_open: bool = False, locate: Callable[[], tuple[str, int]] | None = None) -> None:
        """keep_open: keep one connection between transactions (a test stack's add_user then costs a
        round trip, not a connect); close() closes it. Otherwise each transaction connects anew.
        locate: where the server is now, asked again when a connection fails (a restarted container
        may come back with another address)."""
        self.host, self.port, self.password = host, port, password
        self._locate = locate
        self.schema = schema.flavour(schema_flavour)
        self.keep_open = keep_open
        self._kept: pymysql.connections.Connection | None = None
        self._kept_lock = threading.Lock()  # one transaction at a time on the kept connection

    @classmethod
    def for_stack(cls, stack, keep_open: bool = False) -> Database:  # noqa: ANN001 - a Stack (import cycle)
        """The stack's database, spoken to in its flavour: the one the settings name when they name one
        (MAILSTACK_SCHEMA, --schema), else the one the database records (a `mailstack user list` on a
        postfixadmin stack needs no --schema)."""
        host, port = stack.db_address()
        password = ensure_secret(stack.settings.state_dir / "secrets", "db_admin_password")
        database = cls(host, port, password, stack.settings.schema_flavour, keep_open=keep_open,
                       locate=stack.db_address)
        if "schema_flavour" not in stack.settings.model_fields_set:
            with suppress(MailstackError, pymysql.err.MySQLError):  # unreachable: the settings' flavour
                recorded = database.recorded_flavour(timeout=5)
                if recorded in schema.FLAVOURS and recorded != database.schema.name:
                    database.schema = schema.flavour(recorded)
        return database

    def close(self) -> None:
        kept, self._kept = self._kept, None
        if kept is not None:
            with suppress(pymysql.err.Error, OSError):
                kept.close()

    def connect(self, timeout: float = 30.0) -> pymysql.connections.Connection:
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            try:
                return pymysql.connect(
                    host=self.host, port=self.port, user=schema.ADMIN_USER, password=self.password,
                    database=schema.DB_NAME, charset="utf8mb4", autocommit=False, connect_timeout=5,
                    # MariaDB here serves no TLS; PyMySQL >= 1.2 would otherwise build a TLS context for every
                    # connection in case it did (the system's CA bundle parsed: ~50 ms of CPU each).
                    ssl_disabled=True,
                )
            except pymysql.err.OperationalError as exc:
                if not _is_connection_error(exc) or time.monotonic() > deadline:
                    raise MailstackError(
                        f"cannot connect to MariaDB at {self.host}:{self.port}: {exc.args[-1]}",
                        "is the stack running? `mailstack status`; on Docker Desktop set MAILSTACK_DB_PORT",
                    ) from exc
                if self._locate is not None:
                    with suppress(MailstackError):  # e.g. the container is not running (yet): same address
                        self.host, self.port = self._locate()
                time.sleep(delay)  # poll interval while the server starts, bounded by the deadline
                delay = min(delay * 2, 0.5)

    def _kept_connection(self) -> pymysql.connections.Connection:
        if self._kept is not None:
            try:
                self._kept.ping(reconnect=False)  # the server may have restarted or dropped it while idle
                return self._kept
            except (pymysql.err.Error, OSError):
                self.close()
        self._kept = self.connect()
        return self._kept

    @contextmanager
    def transaction(self) -> Iterator[schema.Store]:
        """One transaction: committed when the block succeeds, rolled back (nothing changed) when it fails."""
        # The kept connection when it is free; a nested or concurrent transaction gets its own.
        kept = self.keep_open and self._kept_lock.acquire(blocking=False)
        try:
            connection = self._kept_connection() if kept else self.connect()
            try:
                with connection.cursor() as cursor:
                    yield self.schema.store(cursor)
                connection.commit()
            except BaseException:
                try:
                    connection.rollback()
                finally:
                    if kept:
                        self.close()  # after a failure (or an interrupt mid-reply) start afresh
                raise
            finally:
                if not kept:
                    connection.close()
        finally:
            if kept:
                self._kept_lock.release()

    def create_tables(self) -> None:
        """The flavour's tables and its record (idempotent); refused when the database holds another flavour
        (its tables would sit unseen next to the ones this flavour reads)."""
        with self.transaction() as store:
            recorded = store.recorded_flavour()
            if recorded not in (None, self.schema.name):
                raise schema.mismatch_error(recorded, self.schema.name)
            store.create_tables()
            recorded = store.recorded_flavour()
        if recorded != self.schema.name:
            raise schema.mismatch_error(str(recorded), self.schema.name)

    def check_flavour(self) -> None:
        """Refuse to work on a database that holds another flavour than the settings say."""
        with self.transaction() as store:
            recorded = store.recorded_flavour()
        if recorded not in (None, self.schema.name):
            raise schema.mismatch_error(recorded, self.schema.name)

    def dump(self) -> bytes:
        """A logical dump of the mail database (every table, whatever the flavour calls them): one consistent
        read (a REPEATABLE READ snapshot), as SQL that recreates the tables in an empty database. The
        stack's MariaDB image has no mariadb-dump (client-core only); this needs no more than SELECT."""
        connection = self.connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                cursor.execute("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
                               "AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME")
                tables = [row[0] for row in cursor.fetchall()]
                lines = ["SET NAMES utf8mb4;", "SET FOREIGN_KEY_CHECKS = 0;", "SET UNIQUE_CHECKS = 0;"]
                for table in tables:
                    quoted = "`" + table.replace("`", "``") + "`"
                    cursor.execute(f"SHOW CREATE TABLE {quoted}")
                    lines.append(cursor.fetchone()[1] + ";")
                    cursor.execute(f"SELECT * FROM {quoted}")  # noqa: S608 - a name the server listed
                    rows = cursor.fetchall()
                    for start in range(0, len(rows), 500):
                        values = ",\n".join("(" + ",".join(connection.escape(value) for value in row) + ")"
                                            for row in rows[start:start + 500])
                        lines.append(f"INSERT INTO {quoted} VALUES\n{values};")
                connection.rollback()
        finally:
            connection.close()
        return ("\n".join(lines) + "\n").encode()

    def recorded_flavour(self, timeout: float = 30.0) -> str | None:
        """The flavour the database records it holds (None: no tables yet)."""
        connection = self.connect(timeout=timeout)
        try:
            with connection.cursor() as cursor:
                return self.schema.store(cursor).recorded_flavour()
        finally:
            connection.close()
