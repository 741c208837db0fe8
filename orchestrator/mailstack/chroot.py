"""What Postfix's chroot needs, and checking it.

Debian runs most Postfix daemons chrooted in the queue directory (master.cf's chroot column `y`). There
they cannot see /etc, so Debian's /usr/lib/postfix/configure-instance.sh copies the files name lookups
need into /var/spool/postfix/etc at every start. Docker writes /etc/resolv.conf and /etc/hosts per
container (and may rewrite them later), so a copy can go stale: the chrooted smtpd then resolves the
database host with old data while every command run outside the chroot works.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mailstack.stack import Stack

SERVICE = "postfix"
QUEUE_DIRECTORY = "/var/spool/postfix"
CONFIGURE_INSTANCE = "/usr/lib/postfix/configure-instance.sh"
# The list configure-instance.sh copies (its FILES), relative to / and to the chroot. It copies a file
# only when /etc has it (nss_mdns.config usually does not exist).
FILES = (
    "etc/localtime", "etc/services", "etc/resolv.conf", "etc/hosts",
    "etc/host.conf", "etc/nsswitch.conf", "etc/nss_mdns.config",
)


@dataclass(frozen=True)
class Problem:
    file: str  # relative, e.g. "etc/resolv.conf"
    what: str  # "missing" or "differs"

    def __str__(self) -> str:
        if self.what == "missing":
            return f"{QUEUE_DIRECTORY}/{self.file} is missing"
        return f"{QUEUE_DIRECTORY}/{self.file} differs from /{self.file}"


def hash_command() -> list[str]:
    """One command printing the SHA-256 of every file and of its chroot copy (missing ones are skipped)."""
    return ["sha256sum", *(f"/{name}" for name in FILES), *(f"{QUEUE_DIRECTORY}/{name}" for name in FILES)]


def parse_hashes(output: str) -> dict[str, str]:
    """`sha256sum` output -> {path: digest}."""
    digests: dict[str, str] = {}
    for line in output.splitlines():
        digest, _, path = line.partition("  ")
        if digest and path:
            digests[path.strip()] = digest.strip()
    return digests


def compare(digests: Mapping[str, str]) -> list[Problem]:
    """Which chroot copies are missing or differ from the container's current /etc files."""
    problems: list[Problem] = []
    for name in FILES:
        original = digests.get(f"/{name}")
        if original is None:
            continue  # configure-instance.sh copies only what exists
        copy = digests.get(f"{QUEUE_DIRECTORY}/{name}")
        if copy is None:
            problems.append(Problem(name, "missing"))
        elif copy != original:
            problems.append(Problem(name, "differs"))
    return problems


def problems(stack: Stack) -> list[Problem]:
    """Compare the chroot's copies with /etc in the running Postfix container."""
    result = stack.exec(SERVICE, hash_command(), check=False)
    return compare(parse_hashes(result.stdout.decode(errors="replace")))


def sync(stack: Stack) -> None:
    """Re-copy the files the way the container's start does (Debian's script), then reload Postfix so
    its chrooted daemons read them."""
    stack.exec(SERVICE, [CONFIGURE_INSTANCE, "-"])
    stack.exec(SERVICE, ["postfix", "reload"])
