"""DKIM keys for the rspamd image: layout, permissions, rotation and the DNS record."""

from __future__ import annotations

import base64
import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from mailstack.world import dkim

DAY = dt.date(2026, 12, 1)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_key_is_private_rsa_2048_and_becomes_current(tmp_path: Path) -> None:
    keys = tmp_path / "dkim"
    selector = dkim.ensure_key(keys, "Example.TEST.", today=DAY)
    assert selector == "ms2026120101"
    path = keys / "example.test.ms2026120101.key"
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert _mode(keys) == 0o700
    assert _mode(path) == 0o600
    assert _mode(keys / dkim.SELECTORS_MAP) == 0o600
    assert (keys / dkim.SELECTORS_MAP).read_text() == "example.test ms2026120101\n"


def test_ensure_key_makes_a_key_only_once(tmp_path: Path) -> None:
    first = dkim.ensure_key(tmp_path, "example.test", today=DAY)
    pem = (tmp_path / f"example.test.{first}.key").read_bytes()
    assert dkim.ensure_key(tmp_path, "example.test", today=DAY + dt.timedelta(days=3)) == first
    assert (tmp_path / f"example.test.{first}.key").read_bytes() == pem


def test_rotation_switches_selector_and_keeps_only_the_previous_key(tmp_path: Path) -> None:
    s1 = dkim.ensure_key(tmp_path, "example.test", today=DAY)
    s2 = dkim.rotate(tmp_path, "example.test", today=DAY)
    s3 = dkim.rotate(tmp_path, "example.test", today=DAY + dt.timedelta(days=1))
    assert (s1, s2, s3) == ("ms2026120101", "ms2026120102", "ms2026120201")
    assert dkim.current_selector(tmp_path, "example.test") == s3
    assert dkim.selectors(tmp_path, "example.test") == [s2, s3]
    assert [r.name for r in dkim.records(tmp_path, "example.test")] == [
        f"{s2}._domainkey.example.test",
        f"{s3}._domainkey.example.test",
    ]
    assert dkim.record(tmp_path, "example.test").value != dkim.record(tmp_path, "example.test", s2).value


def test_selectors_keep_growing_when_the_clock_goes_back(tmp_path: Path) -> None:
    dkim.ensure_key(tmp_path, "example.test", today=DAY)
    assert dkim.rotate(tmp_path, "example.test", today=DAY - dt.timedelta(days=30)) == "ms2026120102"


def test_domains_are_independent_and_a_domain_without_key_has_no_record(tmp_path: Path) -> None:
    dkim.ensure_key(tmp_path, "b.test", today=DAY)
    dkim.ensure_key(tmp_path, "a.test", today=DAY)
    dkim.rotate(tmp_path, "b.test", today=DAY)
    assert (tmp_path / dkim.SELECTORS_MAP).read_text() == "a.test ms2026120101\nb.test ms2026120102\n"
    with pytest.raises(FileNotFoundError):
        dkim.record(tmp_path, "c.test")
    dkim.remove(tmp_path, "b.test")
    assert dkim.read_selectors(tmp_path) == {"a.test": "ms2026120101"}
    assert sorted(p.name for p in tmp_path.glob("*.key")) == ["a.test.ms2026120101.key"]


def test_record_publishes_the_public_key(tmp_path: Path) -> None:
    selector = dkim.ensure_key(tmp_path, "example.test", today=DAY)
    rec = dkim.record(tmp_path, "example.test")
    assert rec.name == f"{selector}._domainkey.example.test"
    assert rec.value.startswith("v=DKIM1; k=rsa; p=")
    key = serialization.load_pem_private_key((tmp_path / f"example.test.{selector}.key").read_bytes(), password=None)
    public = serialization.load_der_public_key(base64.b64decode(rec.value.split("p=", 1)[1]))
    assert public.public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]


def test_txt_value_splits_into_255_byte_strings_that_join_back(tmp_path: Path) -> None:
    dkim.ensure_key(tmp_path, "example.test", today=DAY)
    rec = dkim.record(tmp_path, "example.test")
    parts = rec.strings()
    assert len(rec.value) > 255 and len(parts) == 2
    assert all(len(part) <= 255 for part in parts) and "".join(parts) == rec.value
    assert rec.zone_value() == f'"{parts[0]}" "{parts[1]}"'
    assert dkim.split_txt("abcde", 2) == ["ab", "cd", "e"]
    assert dkim.split_txt("") == [""]
    with pytest.raises(ValueError):
        dkim.split_txt("x", 256)
    with pytest.raises(ValueError):
        dkim.split_txt('a"b')


@pytest.mark.parametrize("bad", ["", "../etc", "a/b.test", "-a.test", "a..test", "a b.test"])
def test_names_that_could_escape_the_directory_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        dkim.ensure_key(tmp_path, bad)
