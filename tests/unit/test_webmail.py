"""The webmail's files: the des_key secret and the autoconfiguration documents rendered from the ports."""

from __future__ import annotations

import stat
import xml.etree.ElementTree as ET
from pathlib import Path

from mailstack import webmail
from mailstack.settings import Settings, load_settings
from mailstack.stack import adopt_started

AUTODISCOVER = "{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}"


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    return load_settings(state_dir=tmp_path / "state", project="webmail-unit", submission_port=40587,
                         imaps_port=40993, pop3s_port=40995, smtps_port=40465, **overrides)


def test_thunderbird_document_names_the_published_ports_and_the_full_address(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    webmail.render(settings, ["Example.test", "other.test"])
    root = ET.parse(webmail.directory(settings) / "config-v1.1.xml").getroot()  # noqa: S314 - our own file
    provider = root.find("emailProvider")
    assert provider is not None and provider.get("id") == "example.test"
    assert [d.text for d in provider.findall("domain")] == ["example.test", "other.test"]
    servers = {(s.get("type"), s.findtext("port"), s.findtext("socketType"))
               for s in [*provider.findall("incomingServer"), *provider.findall("outgoingServer")]}
    assert servers == {("imap", "40993", "SSL"), ("pop3", "40995", "SSL"), ("smtp", "40587", "STARTTLS"),
                       ("smtp", "40465", "SSL")}
    assert {s.findtext("hostname") for s in provider.iter() if s.find("hostname") is not None} == {"127.0.0.1"}
    assert {s.findtext("username") for s in provider.iter() if s.find("username") is not None} == {"%EMAILADDRESS%"}


def test_outlook_document_gives_imap_over_ssl_and_smtp_with_starttls(tmp_path: Path) -> None:
    settings = _settings(tmp_path, bind_address="0.0.0.0")  # noqa: S104 - other devices: the host name
    webmail.render(settings, [])
    root = ET.parse(webmail.directory(settings) / "autodiscover.xml").getroot()  # noqa: S314 - our own file
    protocols = {p.findtext(f"{AUTODISCOVER}Type"): p for p in root.iter(f"{AUTODISCOVER}Protocol")}
    assert set(protocols) == {"IMAP", "SMTP"}
    assert (protocols["IMAP"].findtext(f"{AUTODISCOVER}Port"), protocols["IMAP"].findtext(f"{AUTODISCOVER}Encryption")
            ) == ("40993", "SSL")
    assert (protocols["SMTP"].findtext(f"{AUTODISCOVER}Port"), protocols["SMTP"].findtext(f"{AUTODISCOVER}Encryption")
            ) == ("40587", "TLS")
    assert protocols["SMTP"].findtext(f"{AUTODISCOVER}Server") == settings.hostname


def test_the_des_key_is_generated_once_owner_only_and_24_characters(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    webmail.render(settings, [])
    key_file = settings.state_dir / "secrets" / webmail.DES_KEY
    key = key_file.read_text()
    assert len(key) == 24 and key.isalnum()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert webmail.render(settings, []) is False  # nothing changed: nothing rewritten
    assert key_file.read_text() == key


def test_domains_are_remembered_for_the_next_start_and_forgotten_without_webmail(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert webmail.render(settings, ["b.test", "a.test"]) is True
    assert webmail.remembered_domains(settings) == ["a.test", "b.test"]
    assert webmail.has_webmail(settings)
    webmail.forget(settings)
    assert not webmail.has_webmail(settings)
    assert (settings.state_dir / "secrets" / webmail.DES_KEY).exists()  # Roundcube's data stays readable


def test_other_commands_see_the_parts_the_stack_was_started_with(tmp_path: Path) -> None:
    plain = _settings(tmp_path)
    assert adopt_started(plain).webmail is False  # never started with it: `status` must not look for it
    webmail.render(plain, [])
    assert adopt_started(_settings(tmp_path, webmail=False)).webmail is False  # said: kept
    assert adopt_started(load_settings(state_dir=tmp_path / "state")).webmail is True
