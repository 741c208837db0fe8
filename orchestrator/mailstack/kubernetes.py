"""The generated half of the Kubernetes deployment: a kustomize overlay over deploy/kubernetes/ (the base, kept in
git), written into a directory git ignores (by default the state directory's kubernetes/).

The base names Secrets and a ConfigMap it does not contain. The overlay's secretGenerator and configMapGenerator
make them from files rendered here the way `mailstack up` renders them into the state directory
(schema.render_configs: Postfix's SQL maps and postconf overrides, Dovecot's SQL config, MariaDB's schema; the
passwords; the TLS certificate from the deployment's own CA), and its `images:` names the images. `kubectl
kustomize DIR` builds the manifests; nothing here talks to a cluster.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from mailstack import deployment, process, secrets
from mailstack.deployment import TLS_FILES
from mailstack.settings import Settings, image_tag, stack_files_dir

IMAGES = ("mysql", "dovecot", "postfix")
# The names deploy/kubernetes/*.yaml use (kustomize appends a content hash and rewrites the references).
DB_SECRET = "mailstack-db"
TLS_SECRET = "mailstack-tls"
POSTFIX_SECRET = "mailstack-postfix"  # the SQL maps hold the mail reader's password: a Secret, not a ConfigMap
DOVECOT_SECRET = "mailstack-dovecot"
SCHEMA_CONFIGMAP = "mailstack-mysql-schema"


def base_dir() -> Path:
    """deploy/kubernetes/ of the source checkout (or of the installed package's stack files)."""
    return stack_files_dir() / "deploy" / "kubernetes"


def default_dir(settings: Settings) -> Path:
    return settings.state_dir / "kubernetes"


@dataclass(frozen=True)
class Rendered:
    directory: Path
    kustomization: Path
    tag: str


def render(settings: Settings, directory: Path, *, registry: str | None = None, namespace: str | None = None,
           tag: str | None = None) -> Rendered:
    """Write (or bring up to date) the overlay in `directory`. Passwords, the CA and the server certificate are
    made once and kept; the SQL configs are rendered again for the settings' flavour and host name."""
    directory = directory.resolve()
    deployment.render_files(settings, directory, "mailstack deploy kubernetes")
    tag = tag or image_tag(stack_files_dir())
    kustomization = directory / "kustomization.yaml"
    kustomization.write_text(_HEADER + yaml.safe_dump(overlay(directory, registry, namespace, tag), sort_keys=False))
    return Rendered(directory, kustomization, tag)


_HEADER = ("# Rendered by `mailstack deploy kubernetes`: the base (deploy/kubernetes) with this deployment's secrets\n"
           "# and configs. Never commit this directory. Build: kubectl kustomize .   Apply: kubectl apply -k .\n")


def overlay(directory: Path, registry: str | None, namespace: str | None, tag: str) -> dict[str, object]:
    """The overlay's kustomization (its generators read the files render() wrote, relative to `directory`)."""
    postfix_files = sorted(p.name for p in (directory / "config" / "postfix").iterdir() if p.is_file())
    prefix = f"{registry.rstrip('/')}/" if registry else ""
    data: dict[str, object] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(base_dir(), directory)],
    }
    if namespace:
        data["namespace"] = namespace
    data["images"] = [{"name": f"mailstack-{name}", "newName": f"{prefix}mailstack-{name}", "newTag": tag}
                      for name in IMAGES]
    data["secretGenerator"] = [
        {"name": DB_SECRET, "files": [f"secrets/{name}" for name in secrets.SECRET_NAMES]},
        {"name": TLS_SECRET, "files": [f"tls/{name}" for name in TLS_FILES]},
        {"name": POSTFIX_SECRET, "files": [f"config/postfix/{name}" for name in postfix_files]},
        {"name": DOVECOT_SECRET, "files": ["config/dovecot/dovecot-sql.conf.ext", "config/dovecot/overrides.conf"]},
    ]
    data["configMapGenerator"] = [{"name": SCHEMA_CONFIGMAP, "files": ["config/mysql/schema.sql"]}]
    return data


def build(rendered: Rendered, kubectl: str = "kubectl") -> str:
    """`kubectl kustomize DIR`: the whole deployment as one YAML stream."""
    result = process.run([kubectl, "kustomize", rendered.directory], timeout=120,
                         hint="kubectl (with its built-in kustomize) must be on PATH; or use kustomize build DIR")
    return result.stdout.decode()
