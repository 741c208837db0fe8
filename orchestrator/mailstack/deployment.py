"""The files a deployment beyond one compose project (Kubernetes, Docker Swarm) is made from, rendered into a
directory git ignores the way `mailstack up` renders them into the state directory: passwords, the deployment's
own CA and server certificate, the flavour's SQL configs (schema.render_configs) and the host name the daemons
announce (a pod's or task's own host name is not the mail host name everywhere)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from mailstack import certs, process, schema, secrets
from mailstack.errors import MailstackError
from mailstack.settings import Settings

TLS_FILES = ("server.crt", "server.key", "ca.crt")  # never ca.key: the CA stays in the rendered directory


def render_files(settings: Settings, directory: Path, tool: str) -> dict[str, str]:
    """secrets/, tls/ and config/{postfix,dovecot,mysql}/ in `directory` (made owner-only). Passwords, the CA
    and the server certificate are made once and kept; the SQL configs are rendered again for the settings'
    flavour and host name. Returns the passwords."""
    refuse_tracked(directory)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    creds = secrets.ensure_secrets(directory / "secrets")
    certs.ensure_tls(directory / "tls", settings.hostname)
    config = directory / "config"
    schema.render_configs(config, schema.flavour(settings.schema_flavour), creds["db_mail_password"],
                          settings.password_scheme, postconf_commands=[("-e", f"myhostname={settings.hostname}")],
                          default_pass_scheme=settings.default_pass_scheme)
    secrets.write_private(config / "dovecot" / "overrides.conf",
                          f"# rendered by {tool}\nhostname = {settings.hostname}\n".encode())
    return creds


def refuse_tracked(directory: Path) -> None:
    """Secrets must never reach git: a directory inside a git work tree that git does not ignore is refused."""
    git = shutil.which("git")
    if git is None:
        return
    probe = directory
    while not probe.exists():
        probe = probe.parent
    inside = process.run([git, "-C", probe, "rev-parse", "--is-inside-work-tree"], check=False)
    if inside.returncode != 0 or inside.stdout.strip() != b"true":
        return
    # a file in it: a pattern like `dir/` matches only a directory, which may not exist yet
    ignored = process.run([git, "-C", probe, "check-ignore", "-q", directory / "kustomization.yaml"], check=False)
    if ignored.returncode != 0:
        raise MailstackError(
            f"{directory} is inside a git work tree and not ignored: the rendered passwords and keys could be "
            "committed",
            "render into an ignored directory (the default is the state directory's kubernetes/ or swarm/), or "
            "add it to .gitignore")
