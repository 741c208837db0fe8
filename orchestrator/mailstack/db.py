"""The orchestrator's connection to the stack's MariaDB (PyMySQL), one transaction at a time.

Retries cover connection errors only (the server is still starting); a failing statement is never retried.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

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

    def __init__(self, host: str, port: int, password: str, schema_flavour: str = "default") -> None:
        self.host, self.port, self.password = host, port, password
        self.schema = schema.flavour(schema_flavour)

    @classmethod
    def for_stack(cls, stack) -> Database:  # noqa: ANN001 - mailstack.stack.Stack, avoiding an import cycle
        host, port = stack.db_address()
        password = ensure_secret(stack.settings.state_dir / "secrets", "db_admin_password")
        return cls(host, port, password, stack.settings.schema_flavour)

    def connect(self, timeout: float = 30.0) -> pymysql.connections.Connection:
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            try:
                return pymysql.connect(
                    host=self.host, port=self.port, user=schema.ADMIN_USER, password=self.password,
                    database=schema.DB_NAME, charset="utf8mb4", autocommit=False, connect_timeout=5,
                )
            except pymysql.err.OperationalError as exc:
                if not _is_connection_error(exc) or time.monotonic() > deadline:
                    raise MailstackError(
                        f"cannot connect to MariaDB at {self.host}:{self.port}: {exc.args[-1]}",
                        "is the stack running? `mailstack status`; on Docker Desktop set MAILSTACK_DB_PORT",
                    ) from exc
                time.sleep(delay)  # poll interval while the server starts, bounded by the deadline
                delay = min(delay * 2, 0.5)

    @contextmanager
    def transaction(self) -> Iterator[schema.Store]:
        """One transaction: committed when the block succeeds, rolled back (nothing changed) when it fails."""
        connection = self.connect()
        try:
            with connection.cursor() as cursor:
                yield schema.Store(cursor, self.schema)
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
        finally:
            connection.close()

    def create_tables(self) -> None:
        with self.transaction() as store:
            store.create_tables()
