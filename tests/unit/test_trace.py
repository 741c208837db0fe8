"""trace.py on real log lines (samples/*.log: `docker compose logs --no-log-prefix postfix|dovecot` of a
stack that delivered, rejected, bounced and deferred a few messages)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mailstack import trace

SAMPLES = Path(__file__).parent / "samples"
POSTFIX = (SAMPLES / "postfix.log").read_text()
DOVECOT = (SAMPLES / "dovecot.log").read_text()


def follow(query: str) -> trace.Trace:
    return trace.trace(query, POSTFIX, DOVECOT)


def test_parses_postfix_and_dovecot_lines() -> None:
    postfix = trace.parse_postfix(POSTFIX)
    assert postfix[0].program == "postfix/postfix-script" and postfix[0].time == "Nov 26 10:47:52"
    submission = [line for line in postfix if line.program == "postfix/submission/smtpd"]
    assert submission and all(line.pid == "338" for line in submission)
    saved = [line for line in trace.parse_dovecot(DOVECOT) if "saved mail to" in line.text]
    assert saved[0].program == "lmtp" and saved[0].who == "bob@example.test"
    assert saved[0].session == "rTJuF2EOCGsNAAAAzlXquA" and saved[0].level == "Info"


def test_garbage_and_prefixes_are_ignored() -> None:
    assert trace.parse_postfix("mailstack-postfix: MariaDB is back\n\nnot a log line") == []
    assert trace.trace("4F1C2174658", "junk", "junk").found is False


def test_fields_strip_angle_brackets_and_keep_the_first() -> None:
    values = trace.fields("to=<bob@example.test>, orig_to=<team@example.test>, relay=none, delay=1, dsn=4.4.1, "
                          "status=deferred (connect to x: to=<other>)")
    assert values["to"] == "bob@example.test" and values["orig_to"] == "team@example.test"
    assert values["dsn"] == "4.4.1" and values["status"] == "deferred"


@pytest.mark.parametrize(("value", "expected"), [
    ("5CF111781C2", True), ("4F1C2", False), ("3Y5kZq0mzWz9tF", True), ("<a@b>", False), ("alice@example.test", False),
])
def test_queue_id_shapes(value: str, expected: bool) -> None:
    assert trace.is_queue_id(value) is expected


def test_submission_by_message_id_accepted_queued_delivered_saved() -> None:
    found = follow("<179569008134.17874.6532100152461713522@mailstack.test>")
    assert found.queue_ids == ["5CF111781C2"]
    assert found.sasl_user == "alice@example.test" and found.client == "unknown[172.29.0.1]"
    assert found.sender == "alice@example.test" and found.size == 598
    assert [(d.recipient, d.status) for d in found.deliveries] == [("bob@example.test", "sent")]
    assert found.saved == {"bob@example.test": "INBOX"}
    assert found.removed
    assert found.outcome() == ["delivered to bob@example.test, saved to INBOX"]
    sources = [event.source for event in found.events]
    assert sources == ["postfix/submission/smtpd", "postfix/cleanup", "postfix/qmgr", "postfix/lmtp", "postfix/qmgr",
                       "dovecot/lmtp"]


def test_message_id_without_brackets_works_too() -> None:
    assert follow("179569008134.17874.6532100152461713522@mailstack.test").queue_ids == ["5CF111781C2"]


def test_alias_expansion_by_queue_id_names_each_mailbox() -> None:
    found = follow("61050178224")
    assert found.message_id == "179569008138.17874.5608422632067860869@mailstack.test"
    assert {d.recipient: d.orig_to for d in found.deliveries} == {
        "alice@example.test": "team@example.test", "bob@example.test": "team@example.test"}
    assert found.saved == {"alice@example.test": "INBOX", "bob@example.test": "INBOX"}  # incl. the :R2 session
    assert found.outcome() == [
        "delivered to alice@example.test (sent to team@example.test), saved to INBOX",
        "delivered to bob@example.test (sent to team@example.test), saved to INBOX",
    ]


def test_a_recipient_refused_in_the_same_session_is_reported_with_the_delivered_one() -> None:
    found = follow("6C887178224")
    assert found.outcome() == [
        "delivered to bob@example.test, saved to INBOX",
        "rejected: RCPT to <nobody2@example.test>: 550 5.1.1 <nobody2@example.test>: Recipient address rejected: "
        "User unknown in virtual mailbox table",
    ]


def test_a_message_refused_at_rcpt_is_found_by_its_address() -> None:
    found = follow("nobody@example.test")
    assert found.queue_ids == [] and found.found
    assert found.rejections == ["RCPT to <nobody@example.test>: 550 5.1.1 <nobody@example.test>: Recipient address "
                                "rejected: User unknown in virtual mailbox table"]
    assert found.events[0].source == "postfix/smtpd"


def test_a_sender_login_mismatch_is_found_by_the_sender() -> None:
    found = follow("bob@example.test")  # also a recipient of queued mail: only the reject line matches here
    assert found.outcome() == ["rejected: MAIL from <bob@example.test>: 553 5.7.1 <bob@example.test>: Sender address "
                               "rejected: not owned by user alice@example.test"]


def test_bounce_names_the_reason_and_the_notice() -> None:
    found = follow("723AA178224")
    (delivery,) = found.deliveries
    assert delivery.status == "bounced" and delivery.dsn == "5.1.1"
    assert "User doesn't exist: ghost@example.test" in delivery.reason
    assert any("non-delivery notice to the sender queued as 780BF178133" in e.what for e in found.events)
    assert found.outcome()[0].startswith("bounced for ghost@example.test (sent to ghost-alias@example.test): host")


def test_deferred_then_delivered_keeps_every_attempt_and_ends_delivered() -> None:
    found = follow("<deferred-1@outside.test>")
    assert [d.status for d in found.deliveries] == ["deferred"] * 4 + ["sent"]
    assert found.deliveries[0].reason == "connect to mail.mailstack.test[private/dovecot-lmtp]: Connection refused"
    assert found.outcome() == ["delivered to bob@example.test, saved to INBOX"]
    assert sum("another attempt" in e.what for e in found.events) == 4


def test_dovecot_errors_are_linked_by_message_id_and_session() -> None:
    found = follow("CB41017860E")
    assert found.dovecot_errors and all("Permission denied" in error for error in found.dovecot_errors)
    assert any(e.source == "dovecot/lmtp" and "save failed" in e.what for e in found.events)
    # the events are in time order, Postfix's line before Dovecot's within a second
    times = [e.time for e in found.events]
    assert times == sorted(times)


def test_still_deferred_says_why_and_that_postfix_retries() -> None:
    lines = "\n".join(line for line in POSTFIX.splitlines() if "CB41017860E" in line and "status=sent" not in line
                      and "removed" not in line)
    dovecot = "\n".join(line for line in DOVECOT.splitlines() if "saved mail" not in line)
    found = trace.trace("CB41017860E", lines, dovecot)
    outcome = found.outcome()
    assert outcome[0].startswith("deferred for bob@example.test: host mail.mailstack.test[private/dovecot-lmtp] said: "
                                 "451 4.2.0")
    assert outcome[0].endswith("still in the queue, Postfix retries")
    assert any(line.startswith("dovecot: bob@example.test: ") and "Permission denied" in line for line in outcome)


def test_unknown_ids_find_nothing() -> None:
    assert not follow("ABCDEF12345").found
    assert follow("ABCDEF12345").outcome() == []
    assert not follow("<never@seen>").found
    assert not follow("nobody-at-all@example.test").found


def test_as_dict_is_json_ready() -> None:
    import json

    data = follow("61050178224").as_dict()
    assert json.loads(json.dumps(data))["outcome"][0].startswith("delivered to alice@example.test")
    assert set(data["events"][0]) == {"time", "source", "what"}


@settings(max_examples=200, deadline=None)
@given(query=st.text(max_size=40), noise=st.lists(st.sampled_from(POSTFIX.splitlines() + DOVECOT.splitlines()
                                                                   + ["", "garbage", "Nov 26 10:48:01 x: y"]),
                                                  max_size=30))
def test_any_query_over_any_mix_of_lines_never_crashes(query: str, noise: list[str]) -> None:
    found = trace.trace(query, "\n".join(noise), "\n".join(reversed(noise)))
    assert isinstance(found.outcome(), list)
    assert found.found == bool(found.events)
