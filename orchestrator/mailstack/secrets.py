"""Generated secrets: random on first use, kept in the state directory (ignored by git), owner-only."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

SECRET_NAMES = ("db_admin_password", "db_mail_password")


def write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read, atomically (no window where it is world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(partial, 0o600)
    partial.replace(path)


def ensure_secret(directory: Path, name: str) -> str:
    path = directory / name
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(24)
    write_private(path, value.encode())
    return value


def ensure_secrets(directory: Path) -> dict[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    return {name: ensure_secret(directory, name) for name in SECRET_NAMES}
