"""Snapshots without Docker: names, manifests, listing, and the refusals that must come before anything
touches the stack (a stand-in stack fails the test if a container is asked anything)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from mailstack import snapshots
from mailstack.errors import MailstackError


class NoDocker:
    """A Stack whose every container call fails the test: refusals must not reach the containers."""

    def __init__(self, state_dir: Path) -> None:
        self.settings = SimpleNamespace(state_dir=state_dir, project="unit", schema_flavour="default")

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the stack was asked {name!r}")


def make_snapshot(root: Path, name: str, flavour: str = "default", created: str = "2026-01-01T00:00:00+00:00"
                  ) -> Path:
    directory = root / "snapshots" / name
    directory.mkdir(parents=True)
    parts = {}
    for part in snapshots.PARTS.values():
        (directory / part.file).write_bytes(part.name.encode())
        digest = snapshots._sha256(directory / part.file)
        parts[part.name] = {"file": part.file, "bytes": len(part.name), "sha256": digest}
    manifest = {"format": snapshots.FORMAT, "name": name, "created": created, "flavour": flavour, "parts": parts}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


@pytest.mark.parametrize("name", ["a", "before-migration", "v1.2_x", "0"])
def test_valid_names(name: str) -> None:
    assert snapshots.check_name(name) == name


@pytest.mark.parametrize("name", ["", "Upper", "-dash", ".hidden", "a/b", "../x", "a b", "x" * 65])
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(MailstackError, match="invalid snapshot name"):
        snapshots.check_name(name)


def test_list_reads_manifests_oldest_first(tmp_path: Path) -> None:
    make_snapshot(tmp_path, "newer", created="2026-02-01T00:00:00+00:00")
    make_snapshot(tmp_path, "older", flavour="postfixadmin")
    (tmp_path / "snapshots" / ".older.partial-1234").mkdir()  # an interrupted save: not a snapshot
    found = snapshots.list_snapshots(NoDocker(tmp_path))  # type: ignore[arg-type]
    assert [(i.name, i.flavour) for i in found] == [("older", "postfixadmin"), ("newer", "default")]
    assert found[0].size == sum(len(p) for p in snapshots.PARTS)
    assert set(found[0].as_dict()) == {"name", "created", "size", "flavour", "parts"}


def test_restore_of_an_unknown_name_lists_the_snapshots_and_asks_nothing(tmp_path: Path) -> None:
    make_snapshot(tmp_path, "one")
    make_snapshot(tmp_path, "two")
    with pytest.raises(MailstackError) as refused:
        snapshots.restore(NoDocker(tmp_path), "three")  # type: ignore[arg-type]
    assert "(snapshots: one, two)" in refused.value.message and "\n" not in refused.value.message
    assert "nothing was changed" in (refused.value.hint or "")


def test_a_damaged_part_is_refused_before_anything_runs(tmp_path: Path) -> None:
    directory = make_snapshot(tmp_path, "one")
    (directory / "mail.tar").write_bytes(b"lisa")  # same size, other content
    with pytest.raises(MailstackError, match="damaged"):
        snapshots.restore(NoDocker(tmp_path), "one")  # type: ignore[arg-type]


def test_unknown_parts_and_formats_are_refused(tmp_path: Path) -> None:
    directory = make_snapshot(tmp_path, "one")
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["parts"]["dkim"] = {"file": "dkim.tar", "bytes": 0, "sha256": ""}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MailstackError, match="cannot restore: dkim"):
        snapshots.restore(NoDocker(tmp_path), "one")  # type: ignore[arg-type]
    (directory / "manifest.json").write_text(json.dumps({**manifest, "format": 99}))
    with pytest.raises(MailstackError, match="format"):
        snapshots.restore(NoDocker(tmp_path), "one")  # type: ignore[arg-type]


class Stopped(NoDocker):
    def is_running(self) -> bool:
        return False


def test_delete_removes_and_refuses_unknown_names(tmp_path: Path) -> None:
    make_snapshot(tmp_path, "one")
    stack = Stopped(tmp_path)
    snapshots.delete(stack, "one")  # type: ignore[arg-type]
    assert snapshots.list_snapshots(stack) == [] and list((tmp_path / "snapshots").iterdir()) == []  # type: ignore[arg-type]
    with pytest.raises(MailstackError, match="no snapshot 'one'"):
        snapshots.delete(stack, "one")  # type: ignore[arg-type]


def test_the_table_swap_moves_the_live_tables_out_before_the_staged_ones_in() -> None:
    sql = snapshots._db_swap_sql("mailstack", 10)
    assert "GROUP_CONCAT(m ORDER BY k" in sql
    assert "SELECT 0 AS k, CONCAT('`mailstack`.`', TABLE_NAME, '` TO `mailstack_old`" in sql
    assert "SELECT 1 AS k, CONCAT('`mailstack_restore`.`', TABLE_NAME, '` TO `mailstack`" in sql
    assert "no_staged_copy" in sql  # an empty staging database fails the swap instead of emptying the live one
