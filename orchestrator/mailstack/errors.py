"""The project's errors: one line saying what failed, and a hint saying what to do."""

from __future__ import annotations

from collections.abc import Sequence


class MailstackError(Exception):
    """An error a user can act on: `message` says what failed, `hint` what to do."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class CommandError(MailstackError):
    """A subprocess failed: carries the command, its exit code and the tail of its stderr."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str, hint: str | None = None) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr_tail = tail(stderr)
        message = f"`{' '.join(self.argv)}` exited with {returncode}"
        if self.stderr_tail:
            message += f": {self.stderr_tail}"
        super().__init__(message, hint)


class StackNotRunning(MailstackError):
    def __init__(self, project: str) -> None:
        super().__init__(
            f"the mail stack '{project}' is not running",
            "start it with `make up` (or `mailstack up`)",
        )


class PortTaken(CommandError):
    """Docker could not publish a port: something else took it (e.g. between a free-port probe and the
    container's start)."""


class NotReady(MailstackError):
    """A wait ran out of time or a container died while we waited."""


def tail(text: str, lines: int = 12) -> str:
    kept = [line for line in (text or "").strip().splitlines() if line.strip()]
    return "\n".join(kept[-lines:])
