"""Snapshots of a running stack: its database, maildirs and Postfix queue, saved into the state directory
(<state_dir>/snapshots/NAME/, owner-only) and restored while the services run.

A snapshot is a directory holding one file per part and a manifest (manifest.json) listing the parts with
their sizes and SHA-256 sums, the schema flavour the database recorded, and when it was made. A part is
one entry of PARTS: what to save and how to restore it; sieve scripts or DKIM keys become parts by adding
entries, and a snapshot restores only the parts its manifest lists (the others are left as they are).

Restore is two-phase, so that a failure leaves the stack as it was: first every part is checked (names,
flavour, checksums) and staged next to the live data (a `<db>_restore` database; `.mailstack-restore`
directories in the mail and queue volumes), all parts at once; only when all are staged are they swapped
in (one atomic RENAME TABLE; directory renames), then Dovecot's auth cache is flushed, its IMAP/POP3
sessions are closed and Postfix is reloaded (its queue manager restarts and reads the restored queue).

The file-tree parts keep a ready copy of the snapshot last saved or restored in their volume (READY, made
in the background): restoring that snapshot again moves the tree into place instead of unpacking it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mailstack import schema
from mailstack.db import Database
from mailstack.errors import CommandError, MailstackError
from mailstack.stack import Stack

Report = Callable[[str], None]

FORMAT = 1
MANIFEST = "manifest.json"
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
STAGE = ".mailstack-restore"  # staging directories and database suffix: never a domain or a queue name
OLD = ".mailstack-old"
READY = ".mailstack-ready"  # a ready copy of the last saved or restored snapshot, in each volume (see _REBUILD)
MAIL_ROOT = "/var/mail/vmail"
QUEUE_ROOT = "/var/spool/postfix"
# Postfix's queue directories (not private/ and public/: sockets; not pid/, etc/, lib/, dev/, usr/: the chroot).
QUEUE_DIRS = ("incoming", "active", "deferred", "hold", "corrupt", "defer", "bounce", "trace", "flush", "saved",
              "maildrop")
LOCK_WAIT = 10  # seconds the table swap waits for a client's open transaction before giving up


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class SnapshotInfo:
    name: str
    created: str  # ISO 8601, UTC
    size: int  # bytes on disk, all parts
    flavour: str
    parts: tuple[str, ...]
    path: Path

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "created": self.created, "size": self.size, "flavour": self.flavour,
                "parts": list(self.parts)}


# --- container-side scripts (run with `bash -c SCRIPT mailstack ARGS...`) ------------------------------

# Every tar part keeps one ready copy of the snapshot last saved or restored in its volume (READY: the
# tar, and the tree unpacked from it in the background, with a marker naming the tar's SHA-256), so that a
# restore of that snapshot moves the tree into place instead of unpacking ~1,000 files (1.5-4 s measured
# on a busy 2-core machine, against a rename). Rebuilt in the background after every save and restore.
_REBUILD = r"""
set -euo pipefail
cd "$1"; ready=$2
exec 9>"$ready/lock"
flock 9
[[ -f "$ready/part.tar" ]] || exit 0
ln -f "$ready/part.tar" "$ready/job.tar"
sha=$(sha256sum < "$ready/job.tar"); sha=${sha%% *}
if [[ -d "$ready/tree" && "$(cat "$ready/marker" 2>/dev/null)" == "$sha" ]]; then rm -f "$ready/job.tar"; exit 0; fi
rm -rf "$ready/tree" "$ready/next" "$ready/marker"
mkdir -m 0700 "$ready/next"
tar -C "$ready/next" --numeric-owner -xpf "$ready/job.tar"
if [[ -n "$3" ]]; then perl -e "$3" "$ready/next"; fi
mv "$ready/next" "$ready/tree"
echo "$sha" > "$ready/marker"
rm -f "$ready/job.tar"
"""

# Save: the tar to stdout (the host's snapshot file) and into READY; a delivery or an IMAP session may
# change a file while tar reads it: tar says so with exit code 1. Args: root ready rebuild perl dirs...
_TAR_SAVE = r"""
set -uo pipefail
cd "$1"; ready=$2; rebuild=$3; perl=$4; shift 4
mkdir -p -m 0700 "$ready"
present=(); for entry in "$@"; do [[ ! -e "$entry" ]] || present+=("$entry"); done
tar --numeric-owner --exclude="./.mailstack-*" --warning=no-file-changed --warning=no-file-removed \
    --ignore-failed-read -cf - "${present[@]}" | tee "$ready/incoming.tar"
codes=("${PIPESTATUS[@]}")
(( codes[0] <= 1 && codes[1] == 0 )) || exit 2
mv -f "$ready/incoming.tar" "$ready/part.tar"
setsid bash -c "$rebuild" mailstack "$PWD" "$ready" "$perl" </dev/null >/dev/null 2>&1 &
exit "${codes[0]}"
"""

# Stage from the ready copy when it is this snapshot's (exit 3: it is not, or is being rebuilt).
# Args: root stage ready sha256
_TAKE_READY = r"""
set -euo pipefail
cd "$1"; stage=$2; ready=$3
mkdir -p -m 0700 "$ready"
exec 9>"$ready/lock"
flock -n 9 || exit 3
[[ -d "$ready/tree" && "$(cat "$ready/marker" 2>/dev/null)" == "$4" ]] || exit 3
rm -rf "$stage"
rm -f "$ready/marker"
mv "$ready/tree" "$stage"
"""

# Stage from the snapshot's tar (stdin), kept in READY for the next time. Args: root stage ready perl
_STAGE_TAR = r"""
set -euo pipefail
cd "$1"; stage=$2; ready=$3
rm -rf "$stage"
mkdir -m 0700 "$stage"
mkdir -p -m 0700 "$ready"
tee "$ready/incoming.tar" | tar -C "$stage" --numeric-owner -xpf -
mv -f "$ready/incoming.tar" "$ready/part.tar"
if [[ -n "$4" ]]; then perl -e "$4" "$stage"; fi
"""

# Postfix names a queue file after its inode (enable_long_queue_ids = no, the default): unpacked files
# have new inodes, so they are renamed as `postsuper -s` would (which must run before Postfix starts), with
# their defer/bounce/trace logs. Active messages go back to incoming, as qmgr does with them at its start.
_QUEUE_FIX_IDS = r"""
use strict; use warnings;
my $stage = shift;
chdir $stage or die "$stage: $!";
sub files { my ($dir) = @_; opendir(my $h, $dir) or return (); my @all = map { "$dir/$_" } grep { !/^\./ } readdir $h;
            closedir $h; return (grep({ -f } @all), map { files($_) } grep { -d } @all) }  # perl-base: no File::Find
if (-d "active") {
  mkdir "incoming", 0700 unless -d "incoming";
  for my $f (files("active")) { my ($id) = $f =~ m{([^/]+)$}; rename $f, "incoming/$id" or die "$f: $!" }
}
my @renames;
for my $queue (qw(incoming deferred hold corrupt)) {
  for my $f (files($queue)) {
    next unless $f =~ m{/([0-9A-F]{6,})$};
    my $id = $1;
    my $new = substr($id, 0, 5) . sprintf("%lX", (stat $f)[1]);
    push @renames, [$f, $id, $new] if $new ne $id;
  }
}
for my $pass (0, 1) {  # via a temporary name: a new name may be another file's old one
  for my $r (@renames) {
    my ($path, $id, $new) = @$r;
    (my $dir = $path) =~ s{/[^/]+$}{};
    my ($from, $to) = $pass ? ("$new.new", $new) : ($id, "$new.new");
    rename "$dir/$from", "$dir/$to" or die "$dir/$from: $!";
    for my $log (qw(defer bounce trace)) {
      for my $d ("$log/" . substr($id, 0, 1), $log) {
        if (-e "$d/$from") { rename "$d/$from", "$d/$to" or die "$d/$from: $!" }
      }
    }
  }
}
"""

# Args: root stage old ready rebuild
_MAIL_SWAP = r"""
set -euo pipefail
cd "$1"; stage=$2; old="$3.$$"; ready=$4
[[ -d "$stage" ]] || { echo "no staged copy in $PWD/$stage" >&2; exit 1; }
mkdir -m 0700 "$old"
shopt -s nullglob dotglob
for entry in *; do [[ "$entry" == .mailstack-* ]] || mv -- "$entry" "$old/"; done
for entry in "$stage"/*; do mv -- "$entry" .; done
rmdir "$stage"
# Sessions still open read the old files (now in $old): close them all. New logins read the restored ones.
doveadm kick '*' >/dev/null 2>&1 &
flushed=0
doveadm auth cache flush >/dev/null || flushed=$?  # reported after the cleanup below is under way
wait $! || true  # kick fails when nobody is logged in
# The old files go in the background, and the ready copy is made again: restore is done when the new
# files are in place.
setsid bash -c 'rm -rf "$1"; bash -c "$2" mailstack "$3" "$4" ""' mailstack "$old" "$5" "$PWD" "$ready" \
  </dev/null >/dev/null 2>&1 &
(( flushed == 0 )) || { echo "doveadm auth cache flush failed ($flushed): run it again" >&2; exit "$flushed"; }
"""

# Args: root stage old ready rebuild perl dirs...
_QUEUE_SWAP = r"""
set -euo pipefail
cd "$1"; stage=$2; old="$3.$$"; ready=$4; rebuild=$5; perl=$6; shift 6
[[ -d "$stage" ]] || { echo "no staged copy in $PWD/$stage" >&2; exit 1; }
mkdir -m 0700 "$old"
for dir in "$@"; do
  [[ ! -e "$dir" ]] || mv -- "$dir" "$old/"
  [[ ! -e "$stage/$dir" ]] || mv -- "$stage/$dir" "$dir"
done
rm -rf "$stage"
# The queue manager keeps the active queue in memory: a reload (SIGHUP to master, as `postfix reload`
# sends after its checks) restarts it, and the new one reads the restored queue. Every other daemon
# restarts at its earliest convenience: SMTP sessions in progress finish.
kill -HUP "$(tr -d ' ' < pid/master.pid)"
setsid bash -c 'rm -rf "$1"; bash -c "$2" mailstack "$3" "$4" "$5"' mailstack "$old" "$rebuild" "$PWD" "$ready" \
  "$perl" </dev/null >/dev/null 2>&1 &
"""

# Drop the ready copy if it is of this snapshot (snapshot delete). Args: root ready sha256
_DROP_READY = r"""
cd "$1" && [[ "$(cat "$2/marker" 2>/dev/null)" == "$3" ]] && rm -rf "$2"
"""

def _db_stage_header(db: str) -> bytes:
    stage = f"{db}_restore"
    return (f"DROP DATABASE IF EXISTS `{stage}`;\n"
            f"CREATE DATABASE `{stage}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;\nUSE `{stage}`;\n").encode()


# A client with a transaction open on the mail tables would make the RENAME wait (then fail after
# LOCK_WAIT, while the other parts are swapped): refused while staging instead, when nothing is changed.
# Statements of autocommit clients (Postfix, Dovecot) are transactions for milliseconds: not counted.
_DB_STAGE_CHECK = b"""
SELECT COUNT(*) INTO @busy FROM information_schema.INNODB_TRX
 WHERE trx_mysql_thread_id <> CONNECTION_ID() AND trx_started < NOW() - INTERVAL 1 SECOND;
SET @check = IF(@busy > 0, 'SELECT 1 FROM a_client_has_a_transaction_open_on_the_mail_database', 'DO 0');
PREPARE busy_check FROM @check;
EXECUTE busy_check;
"""


def _db_swap_sql(db: str, lock_wait: int) -> str:
    """One RENAME TABLE moves the live tables out and the staged ones in: atomic, clients see the one or the
    other. Built in the server (it knows the table lists) and run in one client session."""
    stage, old = f"{db}_restore", f"{db}_old"
    select = "SELECT {order} AS k, CONCAT('`{source}`.`', TABLE_NAME, '` TO `{target}`.`', TABLE_NAME, '`') AS m " \
             "FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{source}'"
    moves = " UNION ALL ".join(
        select.format(order=order, source=source, target=target)
        for order, source, target in ((0, db, old), (1, stage, db)))
    return f"""
SET SESSION group_concat_max_len = 1048576, SESSION lock_wait_timeout = {lock_wait}, FOREIGN_KEY_CHECKS = 0;
SELECT COUNT(*) INTO @staged FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{stage}';
SELECT GROUP_CONCAT(m ORDER BY k SEPARATOR ', ') INTO @moves FROM ({moves}) AS t;
DROP DATABASE IF EXISTS `{old}`;
CREATE DATABASE `{old}`;
SET @swap = IF(@staged > 0, CONCAT('RENAME TABLE ', @moves), 'SELECT 1 FROM no_staged_copy_of_the_database');
PREPARE swap FROM @swap;
EXECUTE swap;
DEALLOCATE PREPARE swap;
DROP DATABASE `{old}`;
DROP DATABASE `{stage}`;
"""  # noqa: S608 - the names are ours (schema.DB_NAME), not input


def _db_discard_sql(db: str) -> str:
    return f"SET FOREIGN_KEY_CHECKS = 0; DROP DATABASE IF EXISTS `{db}_restore`;"


_DIR_DISCARD = r"""
cd "$1" && rm -rf "$2"
"""


def _bash(script: str, *args: str) -> list[str]:
    return ["bash", "-c", script, "mailstack", *args]


# --- parts ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One piece of a snapshot: saved into `file`, staged next to the live data, then swapped in."""

    name: str
    file: str
    service: str
    save: Callable[[Stack, Database, Path], None]
    stage: Callable[[Stack, Path, str], None]  # (stack, the part's file, its SHA-256)
    swap: Callable[[Stack], None]
    discard: Callable[[Stack], None]  # remove what stage left (after a failure elsewhere)
    forget: Callable[[Stack, str], None] = lambda stack, sha256: None  # drop what the stack keeps of it


def _save_database(stack: Stack, database: Database, target: Path) -> None:
    _write_private(target, database.dump())


def _stage_database(stack: Stack, source: Path, sha256: str) -> None:
    # MariaDB's root, through its socket: the stack's admin user may use the mail database only.
    try:
        stack.exec("mysql", ["mariadb", "--batch"],
                   input=_db_stage_header(schema.DB_NAME) + source.read_bytes() + _DB_STAGE_CHECK)
    except CommandError as exc:
        if "a_client_has_a_transaction_open" not in str(exc):
            raise
        raise MailstackError("a client has a transaction open on the mail database: the restore would wait for it",
                             "commit or close that session (`SHOW PROCESSLIST` in MariaDB names it) and restore "
                             "again; nothing was changed") from exc


def _swap_database(stack: Stack) -> None:
    stack.exec("mysql", ["mariadb", "--batch"], input=_db_swap_sql(schema.DB_NAME, LOCK_WAIT).encode())


def _discard_database(stack: Stack) -> None:
    stack.exec("mysql", ["mariadb", "--batch"], input=_db_discard_sql(schema.DB_NAME).encode(), check=False)


def _tar_part(name: str, file: str, service: str, root: str, entries: Sequence[str], fix: str) -> Part:
    """A part that is a tree of files in a service's volume: saved and staged as a tar stream through
    docker exec; fix: a perl script run over a staged tree (or "")."""

    def save_part(stack: Stack, database: Database, target: Path) -> None:
        stack.exec_stream(service, _bash(_TAR_SAVE, root, READY, _REBUILD, fix, *entries), stdout=target,
                          ok_codes=(0, 1), describe=f"tar the {name}")

    def stage(stack: Stack, source: Path, sha256: str) -> None:
        taken = stack.exec(service, _bash(_TAKE_READY, root, STAGE, READY, sha256), check=False)
        if taken.returncode == 0:
            return
        if taken.returncode != 3:
            raise CommandError([f"{service}$", f"take the ready copy of the {name}"], taken.returncode,
                               taken.stderr.decode(errors="replace"))
        stack.exec_stream(service, _bash(_STAGE_TAR, root, STAGE, READY, fix), stdin=source,
                          describe=f"stage the {name}")

    def swap(stack: Stack) -> None:
        if name == "mail":
            stack.exec(service, _bash(_MAIL_SWAP, root, STAGE, OLD, READY, _REBUILD))
        else:
            stack.exec(service, _bash(_QUEUE_SWAP, root, STAGE, OLD, READY, _REBUILD, fix, *entries))

    def discard(stack: Stack) -> None:
        stack.exec(service, _bash(_DIR_DISCARD, root, STAGE), check=False)

    def forget(stack: Stack, sha256: str) -> None:
        stack.exec(service, _bash(_DROP_READY, root, READY, sha256), check=False)

    return Part(name, file, service, save_part, stage, swap, discard, forget)


PARTS: dict[str, Part] = {part.name: part for part in (
    Part("database", "database.sql", "mysql", _save_database, _stage_database, _swap_database, _discard_database),
    _tar_part("mail", "mail.tar", "dovecot", MAIL_ROOT, ["."], ""),
    _tar_part("queue", "queue.tar", "postfix", QUEUE_ROOT, QUEUE_DIRS, _QUEUE_FIX_IDS),
)}


# --- the snapshot directory ---------------------------------------------------------------------------


def snapshots_dir(stack: Stack) -> Path:
    return stack.settings.state_dir / "snapshots"


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name or ""):
        raise MailstackError(f"invalid snapshot name {name!r}",
                             "use lowercase letters, digits, '.', '_' and '-' (at most 64), starting with a "
                             "letter or digit, e.g. `before-migration`")
    return name


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_manifest(directory: Path) -> dict:
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise MailstackError(f"snapshot {directory.name!r} has no readable {MANIFEST} ({exc})",
                             f"delete it with `mailstack snapshot delete {directory.name}`") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT \
            or not isinstance(manifest.get("parts"), dict):
        raise MailstackError(f"snapshot {directory.name!r} is in a format this mailstack does not know",
                             "restore it with the mailstack version that saved it, or delete it")
    unknown = sorted(set(manifest["parts"]) - set(PARTS))
    if unknown:
        raise MailstackError(f"snapshot {directory.name!r} has parts this mailstack cannot restore: "
                             f"{', '.join(unknown)}", "restore it with a newer mailstack")
    return manifest


def _info(directory: Path, manifest: dict) -> SnapshotInfo:
    size = sum(int(part.get("bytes", 0)) for part in manifest["parts"].values())
    return SnapshotInfo(name=directory.name, created=str(manifest.get("created", "")), size=size,
                        flavour=str(manifest.get("flavour", "")), parts=tuple(manifest["parts"]), path=directory)


def list_snapshots(stack: Stack) -> list[SnapshotInfo]:
    """The stack's snapshots, oldest first (unreadable ones are left out: `delete` removes them)."""
    found: list[SnapshotInfo] = []
    with suppress(FileNotFoundError):
        for directory in snapshots_dir(stack).iterdir():
            if directory.is_dir() and NAME_PATTERN.fullmatch(directory.name):
                with suppress(MailstackError):
                    found.append(_info(directory, _read_manifest(directory)))
    return sorted(found, key=lambda info: (info.created, info.name))


def _unknown(stack: Stack, name: str) -> MailstackError:
    names = [info.name for info in list_snapshots(stack)]
    listing = ", ".join(names) if names else "none"
    return MailstackError(f"no snapshot {name!r} in {snapshots_dir(stack)} (snapshots: {listing})",
                          "`mailstack snapshot list` shows them; `mailstack snapshot save NAME` makes one; "
                          "nothing was changed")


def _database(stack: Stack) -> Database:
    return Database.for_stack(stack)


def _timed(report: Report, what: str, action: Callable[[], None]) -> None:
    started = time.monotonic()
    action()
    report(f"{what} ({time.monotonic() - started:.2f}s)")


def _all(calls: Sequence[Callable[[], None]]) -> None:
    """Run the calls at once (one per container); raise the first failure after all have ended."""
    with ThreadPoolExecutor(max_workers=len(calls) or 1) as pool:
        futures = [pool.submit(call) for call in calls]
        errors = [future.exception() for future in futures]
    for error in errors:
        if error is not None:
            raise error


def save(stack: Stack, name: str, force: bool = False, report: Report = _quiet) -> SnapshotInfo:
    """Save the running stack's parts as snapshot `name`. It is written into a hidden directory and renamed
    into place when complete: a failed save leaves no snapshot (and, with force, the old one)."""
    check_name(name)
    stack.require_running()
    root = snapshots_dir(stack)
    target = root / name
    if target.exists() and not force:
        created = ""
        with suppress(MailstackError):
            created = f" (saved {_read_manifest(target).get('created')})"
        raise MailstackError(f"snapshot {name!r} exists{created}",
                             "--force replaces it (force=True in the API), or choose another name")
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    database = _database(stack)
    flavour = database.recorded_flavour() or stack.settings.schema_flavour
    partial = root / f".{name}.partial-{secrets.token_hex(4)}"
    partial.mkdir(mode=0o700)
    started = time.monotonic()
    try:
        report(f"saving snapshot {name!r}: {', '.join(PARTS)}")
        _all([lambda part=part: part.save(stack, database, partial / part.file) for part in PARTS.values()])
        parts = {part.name: {"file": part.file, "service": part.service,
                             "bytes": (partial / part.file).stat().st_size, "sha256": _sha256(partial / part.file)}
                 for part in PARTS.values()}
        for part in PARTS.values():
            os.chmod(partial / part.file, 0o600)
        manifest = {"format": FORMAT, "name": name, "created": datetime.now(UTC).isoformat(timespec="seconds"),
                    "flavour": flavour, "project": stack.settings.project, "parts": parts}
        _write_private(partial / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
        if target.exists():  # force: the old one goes only once the new one is complete
            old = root / f".{name}.old-{secrets.token_hex(4)}"
            target.rename(old)
            partial.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            partial.rename(target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    info = _info(target, manifest)
    report(f"saved snapshot {name!r}: {info.size / 1e6:.1f} MB in {time.monotonic() - started:.2f}s")
    return info


def restore(stack: Stack, name: str, report: Report = _quiet, database: Database | None = None) -> SnapshotInfo:
    """Make the running stack's parts what they were at `save`: files, rows and queue entries added since
    are gone. Everything is checked and staged before anything live changes; a failure until then leaves
    the stack as it was. database: a connection to reuse (the API's), else one is made."""
    check_name(name)
    directory = snapshots_dir(stack) / name
    if not (directory / MANIFEST).exists():
        raise _unknown(stack, name)
    manifest = _read_manifest(directory)
    info = _info(directory, manifest)
    parts = [PARTS[part] for part in manifest["parts"]]
    for part in parts:
        entry = manifest["parts"][part.name]
        path = directory / part.file
        if not path.is_file() or path.stat().st_size != entry.get("bytes") or _sha256(path) != entry.get("sha256"):
            raise MailstackError(f"snapshot {name!r}: {part.file} is missing or damaged (its checksum differs)",
                                 f"save it again, or delete it with `mailstack snapshot delete {name}`; "
                                 "nothing was changed")
    started = time.monotonic()
    recorded: list[str | None] = []

    def check_flavour() -> None:
        recorded.append((database or _database(stack)).recorded_flavour())

    report(f"restoring snapshot {name!r} ({info.created}): staging {', '.join(p.name for p in parts)}")
    check_flavour()  # before staging: its transaction must be over when the staging looks for open ones
    if recorded[0] is not None and recorded[0] != info.flavour:
        raise MailstackError(
            f"snapshot {name!r} holds the {info.flavour} schema flavour, this stack's database the "
            f"{recorded[0]} one", f"restore it into a stack of the {info.flavour} flavour (e.g. "
            f"`mailstack -p OTHER up --schema {info.flavour}`); nothing was changed")
    try:
        _all([lambda part=part: part.stage(stack, directory / part.file, manifest["parts"][part.name]["sha256"])
              for part in parts])
    except BaseException:
        with suppress(Exception):  # the staging's own error is the one to see
            _all([lambda part=part: part.discard(stack) for part in parts])
        raise
    staged = time.monotonic()
    # All parts at once: one RENAME TABLE; the maildirs (then Dovecot's sessions closed, its auth cache
    # flushed); the queue (then Postfix reloaded).
    _all([lambda part=part: part.swap(stack) for part in parts])
    report(f"restored snapshot {name!r} in {time.monotonic() - started:.2f}s "
           f"(staged in {staged - started:.2f}s, swapped in {time.monotonic() - staged:.2f}s)")
    return info


def is_ready(stack: Stack, name: str) -> bool:
    """Whether every file-tree part of snapshot `name` has its ready copy in the stack's volumes (made in the
    background after a save or restore): restoring it then moves trees instead of unpacking them."""
    manifest = _read_manifest(snapshots_dir(stack) / check_name(name))
    for part_name, entry in manifest["parts"].items():
        part = PARTS[part_name]
        if part.name == "database":
            continue
        root = MAIL_ROOT if part.name == "mail" else QUEUE_ROOT
        marker = stack.exec(part.service, ["cat", f"{root}/{READY}/marker"], check=False).stdout.decode().strip()
        if marker != entry["sha256"]:
            return False
    return True


def delete(stack: Stack, name: str) -> None:
    check_name(name)
    directory = snapshots_dir(stack) / name
    if not directory.is_dir():
        raise _unknown(stack, name)
    with suppress(MailstackError, OSError):  # the stack may be down: its ready copies then stay until replaced
        manifest = _read_manifest(directory)
        if stack.is_running():
            _all([lambda part=PARTS[part]: part.forget(stack, manifest["parts"][part.name]["sha256"])
                  for part in manifest["parts"]])
    trash = directory.with_name(f".{name}.deleted-{secrets.token_hex(4)}")
    directory.rename(trash)  # gone from the listing at once, even if the removal is interrupted
    shutil.rmtree(trash, ignore_errors=True)
