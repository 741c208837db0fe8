"""Sieve's own messages, as doveadm and sievec print them, become one line naming the user's file."""

from __future__ import annotations

import pytest
from mailstack.errors import MailstackError
from mailstack.seed import parse, sieve_scripts
from mailstack.sieve import check_name, check_text, sieve_messages

DOVEADM = (b"doveadm(alice@example.test): Error: sieve: mailstack: line 3: unknown command 'fileintoo' "
           b"(only reported once at first occurrence)\n"
           b"doveadm(alice@example.test): Error: sieve: mailstack: validation failed\n")
SIEVEC = (b"script: line 3: error: unknown command 'fileintoo' (only reported once at first occurrence).\n"
          b"script: error: validation failed.\n"
          b"sievec: Fatal: failed to compile sieve script '/tmp/tmp.MrnfRafkn1/script.sieve'\n")
EXPECTED = ("rules.sieve: line 3: unknown command 'fileintoo' (only reported once at first occurrence); "
            "validation failed")


@pytest.mark.parametrize(("stderr", "name"), [(DOVEADM, "mailstack"), (SIEVEC, "script")], ids=["doveadm", "sievec"])
def test_sieves_messages_keep_the_line_and_name_the_file(stderr: bytes, name: str) -> None:
    assert sieve_messages(stderr, name, "rules.sieve") == EXPECTED


def test_scripts_must_be_utf8_and_names_plain() -> None:
    assert check_text("keep;\n") == b"keep;\n"
    with pytest.raises(MailstackError, match="not UTF-8"):
        check_text(b"keep; # \xff\n")
    with pytest.raises(MailstackError, match="invalid Sieve script name"):
        check_name("../other")
    assert check_name("vacation") == "vacation"


def test_seed_users_carry_their_script() -> None:
    seed = parse("domains: [example.test]\nusers:\n  - address: a@example.test\n    password: a-password-1\n"
                 "    sieve: |\n      keep;\n")
    assert sieve_scripts(seed) == [("a@example.test", "keep;\n")]
