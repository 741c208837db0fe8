"""Users' Sieve filters (Pigeonhole), managed with Dovecot's own tools in the Dovecot container.

A script is stored with `doveadm sieve put -a` into the user's Sieve storage (~/sieve, the active one
linked from ~/.dovecot.sieve: the `sieve` setting in dovecot.conf): Pigeonhole compiles it first, so a
script with an error is refused with Sieve's own message (line number) and the active script stays as
it was. The same storage is what ManageSieve (port 4190) reads and writes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from mailstack.errors import MailstackError
from mailstack.stack import Stack

SCRIPT_NAME = "mailstack"  # the script `sieve set` and the seed store (ManageSieve clients choose their own)
MAX_SCRIPT_BYTES = 1024 * 1024  # Pigeonhole's sieve_max_script_size default
CHECK = ["/usr/local/bin/sieve-check.sh"]  # images/dovecot/sieve-check.sh: sievec on stdin, stores nothing

# doveadm's exit codes (sysexits): 65 data error (the script), 67 no such user, 68 no such script
_DATAERR, _NOUSER, _NOTFOUND = 65, 67, 68
_PREFIX = re.compile(r"^(?:doveadm\([^)]*\)|sievec): (?:Error|Fatal|Warning): (?:sieve: )?")
_SIEVEC_LEVEL = re.compile(r"^((?:line \d+: )?)(?:error|warning): ")
_NAME = re.compile(r"^[^/\x00-\x1f\x7f]{1,128}$")


@dataclass(frozen=True)
class SieveScript:
    name: str
    active: bool

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name) or name in (".", ".."):
        raise MailstackError(f"invalid Sieve script name {name!r}",
                             "use a short name without '/' or control characters, like vacation")
    return name


def check_text(script: str | bytes, source: str = "script") -> bytes:
    data = script.encode() if isinstance(script, str) else script
    if len(data) > MAX_SCRIPT_BYTES:
        raise MailstackError(f"{source}: {len(data)} bytes; Pigeonhole takes at most {MAX_SCRIPT_BYTES}",
                             "split the script; nothing was changed")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MailstackError(f"{source}: not UTF-8 (byte {exc.start})",
                             "Sieve scripts are UTF-8 text (RFC 5228); nothing was changed") from exc
    return data


def sieve_messages(stderr: bytes, name: str, source: str) -> str:
    """doveadm's/sievec's error lines as Sieve said them, with the script's name replaced by `source`:
    'FILE: line 3: unknown command 'fileintoo'; validation failed'."""
    said = []
    for line in stderr.decode(errors="replace").splitlines():
        text = _PREFIX.sub("", line.strip())
        if text.startswith("failed to compile sieve script"):
            continue  # sievec's last line names its temporary file; the lines before say why
        for prefix in (f"{name}: ", "script: "):
            text = text.removeprefix(prefix)
        text = _SIEVEC_LEVEL.sub(r"\1", text).removesuffix(".")  # sievec: 'line 3: error: ...'
        if text and text not in said:
            said.append(text)
    return f"{source}: " + "; ".join(said) if said else f"{source}: refused by Sieve"


def _refused(address: str, stderr: bytes, name: str, source: str, what: str) -> MailstackError:
    said = sieve_messages(stderr, name, source).removeprefix(f"{source}: ")
    return MailstackError(f"Sieve refused {source} for {address}: {said}", f"fix the script at that line; {what}")


def _no_user(address: str) -> MailstackError:
    return MailstackError(f"no user {address}", "`mailstack user list` shows the users; nothing was changed")


class Sieve:
    """The operations behind `mailstack sieve` and MailStack.set_sieve & co. Addresses are validated
    by the caller (full addresses: Dovecot's logins)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def _doveadm(self, address: str, *argv: str, input: bytes | None = None,
                 json_output: bool = False) -> tuple[int, bytes, bytes]:
        command = ["doveadm", *(["-f", "json"] if json_output else []), "sieve", argv[0], "-u", address, *argv[1:]]
        result = self.stack.exec("dovecot", command, input=input, check=False)
        if result.returncode == _NOUSER:
            raise _no_user(address)
        return result.returncode, result.stdout, result.stderr

    def check(self, script: str | bytes, source: str = "script") -> None:
        """Compile without storing (sievec): MailstackError with Sieve's messages when it does not compile."""
        data = check_text(script, source)
        result = self.stack.exec("dovecot", CHECK, input=data, check=False)
        if result.returncode != 0:
            raise MailstackError("Sieve refused " + sieve_messages(result.stderr, "script", source),
                                 "fix the script at that line; nothing was changed")

    def set(self, address: str, script: str | bytes, name: str = SCRIPT_NAME, source: str | None = None) -> None:
        """Store the script and make it the active one. Refused (nothing changed, the active script still
        active) when Sieve finds an error."""
        name = check_name(name)
        source = source or name
        data = check_text(script, source)
        code, _out, err = self._doveadm(address, "put", "-a", name, input=data)
        if code == _DATAERR:
            raise _refused(address, err, name, source, "the active script is unchanged")
        if code != 0:
            raise self._failed(address, "put", code, err)

    def scripts(self, address: str) -> list[SieveScript]:
        code, out, err = self._doveadm(address, "list", json_output=True)
        if code != 0:
            raise self._failed(address, "list", code, err)
        rows = json.loads(out or b"[]")
        return [SieveScript(str(row["script"]), row.get("active") == "ACTIVE") for row in rows]

    def active_name(self, address: str) -> str | None:
        return next((script.name for script in self.scripts(address) if script.active), None)

    def get(self, address: str, name: str | None = None) -> str:
        """A script's text: the active one unless a name is given."""
        name = self._named_or_active(address, name)
        code, out, err = self._doveadm(address, "get", name, json_output=True)
        if code == _NOTFOUND:
            raise self._not_found(address, name)
        if code != 0:
            raise self._failed(address, "get", code, err)
        rows = json.loads(out or b"[]")
        return "".join(str(value) for row in rows for value in row.values())

    def remove(self, address: str, name: str | None = None) -> str:
        """Delete a script (the active one unless a name is given; it is deactivated first: then mail is
        delivered to INBOX unfiltered). Returns its name."""
        name = self._named_or_active(address, name)
        code, _out, err = self._doveadm(address, "delete", "-a", name)
        if code == _NOTFOUND:
            raise self._not_found(address, name)
        if code != 0:
            raise self._failed(address, "delete", code, err)
        return name

    def _named_or_active(self, address: str, name: str | None) -> str:
        if name is not None:
            return check_name(name)
        active = self.active_name(address)
        if active is None:
            raise MailstackError(f"{address} has no active Sieve script",
                                 f"`mailstack sieve set {address} FILE` stores one; "
                                 f"`mailstack sieve list {address}` shows the inactive ones")
        return active

    @staticmethod
    def _not_found(address: str, name: str) -> MailstackError:
        return MailstackError(f"{address} has no Sieve script {name!r}",
                              f"`mailstack sieve list {address}` shows the scripts")

    @staticmethod
    def _failed(address: str, action: str, code: int, stderr: bytes) -> MailstackError:
        return MailstackError(f"`doveadm sieve {action}` for {address} exited with {code}: "
                              + sieve_messages(stderr, "", "doveadm").removeprefix("doveadm: "),
                              "`mailstack logs dovecot` shows what Dovecot said")


def set_many(stack: Stack, scripts: Iterable[tuple[str, str]]) -> list[str]:
    """Seed files: every script checked first (nothing stored if one is refused), then stored where it
    differs from the user's active one. Returns the addresses whose script changed."""
    sieve = Sieve(stack)
    wanted = list(scripts)
    for address, text in wanted:
        sieve.check(text, f"sieve of {address}")
    changed = []
    for address, text in wanted:
        current = sieve.scripts(address)
        if any(s.name == SCRIPT_NAME and s.active for s in current) and sieve.get(address, SCRIPT_NAME) == text:
            continue
        sieve.set(address, text, source=f"sieve of {address}")
        changed.append(address)
    return changed
