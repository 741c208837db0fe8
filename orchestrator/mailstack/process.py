"""The one choke point for host subprocesses that are not Docker/Compose (those go through stack.py)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from mailstack.errors import CommandError


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
    check: bool = True,
    hint: str | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run argv (a list, never a shell string); raise CommandError with stderr's tail on failure."""
    args = [os.fspath(a) for a in argv]
    full_env = {**os.environ, **env} if env else None
    try:
        result = subprocess.run(
            args, input=input, capture_output=True, env=full_env, cwd=cwd, timeout=timeout, check=False
        )
    except FileNotFoundError as exc:
        raise CommandError(args, 127, f"{args[0]}: command not found", hint) from exc
    except subprocess.TimeoutExpired as exc:
        stderr = (exc.stderr or b"").decode(errors="replace")
        raise CommandError(args, -1, f"timed out after {timeout}s\n{stderr}", hint) from exc
    if check and result.returncode != 0:
        stderr = result.stderr.decode(errors="replace") or result.stdout.decode(errors="replace")
        raise CommandError(args, result.returncode, stderr, hint)
    return result


def start_background(argv: Sequence[str], log_file: Path) -> int:
    """Start a long-lived daemon detached from us (own session), its output appended to log_file."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(  # noqa: S603 - argv list, no shell
            list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    return proc.pid
