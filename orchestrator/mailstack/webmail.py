"""The webmail's files in the state directory: Roundcube's des_key (a secret) and the client autoconfiguration
documents (Thunderbird's config-v1.1.xml, Outlook's POX autodiscover), rendered from the stack's published
ports into config/webmail, which the webmail's nginx serves. Templates: images/webmail/autoconfig/."""

from __future__ import annotations

import secrets
import shutil
import string
from collections.abc import Iterable
from pathlib import Path
from xml.sax.saxutils import escape

from mailstack.secrets import write_private
from mailstack.settings import Settings, stack_files_dir

DES_KEY = "webmail_des_key"  # in the secrets dir: compose's secret of the same name
DES_KEY_LENGTH = 24  # Roundcube's DES-EDE3-CBC key: exactly 24 characters
DOCUMENTS = ("config-v1.1.xml", "autodiscover.xml")
DOMAINS_FILE = "domains"  # the domains the documents were rendered for, one per line


def directory(settings: Settings) -> Path:
    return settings.config_dir / "webmail"


def has_webmail(settings: Settings) -> bool:
    """Whether the stack in this state directory was last started with its webmail."""
    return (directory(settings) / DOCUMENTS[0]).is_file()


def ensure_des_key(settings: Settings) -> None:
    path = settings.state_dir / "secrets" / DES_KEY
    if not path.exists() or len(path.read_text().strip()) != DES_KEY_LENGTH:
        alphabet = string.ascii_letters + string.digits
        write_private(path, "".join(secrets.choice(alphabet) for _ in range(DES_KEY_LENGTH)).encode())


def client_host(settings: Settings) -> str:
    """The server name the documents give clients: the address the ports are published on; a wildcard
    bind (other devices too) gives the stack's host name, which the certificate names."""
    return settings.hostname if settings.bind_address in ("0.0.0.0", "") else settings.bind_address  # noqa: S104


def remembered_domains(settings: Settings) -> list[str]:
    path = directory(settings) / DOMAINS_FILE
    return path.read_text().split() if path.is_file() else []


def render(settings: Settings, domains: Iterable[str]) -> bool:
    """Write the documents (and the des_key on first use). Returns True when a document changed."""
    ensure_des_key(settings)
    target = directory(settings)
    target.mkdir(parents=True, exist_ok=True)
    names = sorted({domain.lower() for domain in domains})
    ports = settings.ports()
    values = {
        "project": escape(settings.project),
        "provider_id": escape(names[0] if names else settings.hostname),
        "domains": "".join(f"    <domain>{escape(name)}</domain>\n" for name in names),
        "host": escape(client_host(settings)),
        "ca_cert": escape(str(settings.ca_cert)),
        **{f"{name}_port": str(ports[name]) for name in ("imaps", "pop3s", "submission", "smtps")},
    }
    templates = stack_files_dir() / "images" / "webmail" / "autoconfig"
    changed = False
    for name in DOCUMENTS:
        text = string.Template((templates / name).read_text()).substitute(values)
        changed |= _replace(target / name, text)
    _replace(target / DOMAINS_FILE, "".join(f"{name}\n" for name in names))
    return changed


def forget(settings: Settings) -> None:
    """Started without its webmail: the other commands see it so (has_webmail)."""
    shutil.rmtree(directory(settings), ignore_errors=True)


def _replace(path: Path, text: str) -> bool:
    """Atomically (nginx may be reading it), and only when it changes."""
    if path.is_file() and path.read_text() == text:
        return False
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    partial.chmod(0o644)
    partial.replace(path)
    return True
