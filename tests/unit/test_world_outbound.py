"""Reading the outside MX's stored messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mailstack.errors import MailstackError
from mailstack.world import outbound

RAW = (b"From: Alice <alice@example.test>\r\nTo: someone@outside.test\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n"
       b"Date: Tue, 01 Dec 2026 20:05:55 +0000\r\nMessage-ID: <t1@example.test>\r\n\r\nbody\r\n.dot\r\n")


def store(directory: Path, message_id: str, raw: bytes = RAW, meta: dict | None = None) -> None:
    (directory / f"{message_id}.eml").write_bytes(raw)
    if meta is not None:
        (directory / f"{message_id}.json").write_text(json.dumps({"id": message_id, **meta}))


def test_lists_complete_messages_from_their_json(tmp_path: Path) -> None:
    store(tmp_path, "20261201T200555.1Z-aa", meta={
        "mail_from": "bounce@example.test", "rcpt_tos": ["someone@outside.test", "x@spf-fail.test"],
        "peer": ["10.213.7.4", 50206], "helo": "mail.example.test", "tls": True,
        "received": "2026-12-01T20:05:55.1+00:00"})
    [m] = outbound.list_messages(tmp_path)
    assert (m.id, m.mail_from, m.rcpt_tos) == ("20261201T200555.1Z-aa", "bounce@example.test",
                                               ("someone@outside.test", "x@spf-fail.test"))
    assert (m.subject, m.date, m.tls, m.peer, m.helo, m.complete) == (
        "café", "Tue, 01 Dec 2026 20:05:55 +0000", True, "10.213.7.4", "mail.example.test", True)
    assert m.to_dict()["to"] == ["someone@outside.test", "x@spf-fail.test"]


def test_eml_without_json_yet_is_listed_from_headers(tmp_path: Path) -> None:
    store(tmp_path, "20261201T200556.0Z-bb")
    (tmp_path / ".20261201T200557.0Z-cc.eml.tmp").write_bytes(b"half a mess")
    [m] = outbound.list_messages(tmp_path)
    assert (m.complete, m.mail_from, m.rcpt_tos, m.tls, m.received) == (
        False, "alice@example.test", ("someone@outside.test",), None, None)


def test_order_raw_parse_find_and_clear(tmp_path: Path) -> None:
    store(tmp_path, "20261201T000002.0Z-b", meta={"mail_from": "a@x.test", "rcpt_tos": ["B@outside.test"],
                                                  "received": "2026-12-01T00:00:02+00:00"})
    store(tmp_path, "20261201T000001.0Z-a", meta={"mail_from": "a@x.test", "rcpt_tos": ["c@outside.test"],
                                                  "received": "2026-12-01T00:00:01+00:00"})
    assert [m.id for m in outbound.list_messages(tmp_path)] == ["20261201T000001.0Z-a", "20261201T000002.0Z-b"]
    assert outbound.raw(tmp_path, "20261201T000001.0Z-a") == RAW
    parsed = outbound.parse(tmp_path, "20261201T000001.0Z-a")
    assert parsed["Message-ID"] == "<t1@example.test>" and parsed.get_content().splitlines() == ["body", ".dot"]
    assert [m.id for m in outbound.find(tmp_path, rcpt="b@OUTSIDE.test")] == ["20261201T000002.0Z-b"]
    assert [m.id for m in outbound.find(tmp_path, subject="caf")] == ["20261201T000001.0Z-a",
                                                                       "20261201T000002.0Z-b"]
    assert outbound.find(tmp_path, mail_from="nobody@x.test") == []
    (tmp_path / ".x.json.tmp").write_text("{")
    assert outbound.clear(tmp_path) == 2
    assert list(tmp_path.iterdir()) == []


def test_bad_ids_and_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(MailstackError):
        outbound.raw(tmp_path, "../etc/passwd")
    with pytest.raises(MailstackError, match="no message"):
        outbound.raw(tmp_path, "nope")
    assert outbound.list_messages(tmp_path / "absent") == []
    assert outbound.clear(tmp_path / "absent") == 0


def test_broken_json_counts_as_incomplete(tmp_path: Path) -> None:
    store(tmp_path, "m1")
    (tmp_path / "m1.json").write_text("{not json")
    [m] = outbound.list_messages(tmp_path)
    assert not m.complete and m.mail_from == "alice@example.test"
