"""Settings resolved once from flags > environment > .env, validated, with clear errors."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from mailstack.errors import MailstackError
from mailstack.settings import load_settings
from mailstack.stack import port_problem


def test_defaults_are_the_standard_ports_on_loopback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.ports() == {"smtp": 25, "submission": 587, "smtps": 465, "imaps": 993, "pop3s": 995,
                                "managesieve": 4190, "webmail": 8080}
    assert "webmail" not in load_settings(webmail=False).ports()  # not published without it
    assert settings.bind_address == "127.0.0.1"
    assert settings.db_port is None


def test_environment_and_dotenv_and_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("MAILSTACK_SMTP_PORT=2525\nMAILSTACK_IMAPS_PORT=1993\n")
    monkeypatch.setenv("MAILSTACK_IMAPS_PORT", "2993")
    settings = load_settings(project="other", imaps_port=None)
    assert settings.smtp_port == 2525  # .env
    assert settings.imaps_port == 2993  # environment beats .env
    assert settings.project == "other"  # flag
    assert load_settings(smtp_port=3525).smtp_port == 3525  # flag beats both


def test_settings_are_frozen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    with pytest.raises(Exception, match="frozen"):
        settings.smtp_port = 1  # type: ignore[misc]


@pytest.mark.parametrize(("field", "value", "message"), [
    ("smtp_port", "70000", "MAILSTACK_SMTP_PORT"),
    ("project", "Bad Name!", "MAILSTACK_PROJECT"),
    ("hostname", "localhost", "MAILSTACK_HOSTNAME"),
])
def test_invalid_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, field: str, value: str,
                                          message: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(f"MAILSTACK_{field.upper()}", value)
    with pytest.raises(MailstackError) as failure:
        load_settings()
    assert message in str(failure.value)


def test_busy_port_is_detected_and_free_port_is_not() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert port_problem("127.0.0.1", port) == "in use"
    assert port_problem("127.0.0.1", 0) is None
    assert port_problem("127.0.0.1", port) is None
