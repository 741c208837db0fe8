"""Deployments beyond one Docker engine: `mailstack deploy kubernetes` renders the Kubernetes overlay."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mailstack import kubernetes
from mailstack.cli.common import report

deploy_app = typer.Typer(help="Deploy beyond one Docker engine: kubernetes (rendered here, applied elsewhere).",
                         no_args_is_help=True)


@deploy_app.command("kubernetes")
def deploy_kubernetes(
    ctx: typer.Context,
    render: Annotated[Path | None, typer.Option(
        "--render", help="the directory to render the overlay into, which git must ignore "
                         "(default: the state directory's kubernetes/)")] = None,
    registry: Annotated[str | None, typer.Option(
        help="where the cluster pulls the images from (e.g. registry.example.test/mail); default: the local "
             "names, for a cluster that has them loaded")] = None,
    namespace: Annotated[str | None, typer.Option(help="the namespace of every resource")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="also build it with `kubectl kustomize` into this file ('-': standard output)")] = None,
) -> None:
    """Render the Kubernetes deployment (deploy/kubernetes plus this deployment's generated secrets and SQL
    configs) as a kustomize overlay; `kubectl apply -k DIR` applies it. Nothing here talks to a cluster."""
    settings = ctx.obj.settings
    rendered = kubernetes.render(settings, render or kubernetes.default_dir(settings), registry=registry,
                                 namespace=namespace)
    report(f"rendered {rendered.kustomization} (flavour {settings.schema_flavour}, host {settings.hostname}, "
           f"images mailstack-*:{rendered.tag})")
    if output is not None:
        manifests = kubernetes.build(rendered)
        if str(output) == "-":
            sys.stdout.write(manifests)
        else:
            output.write_text(manifests)
            output.chmod(0o600)  # it holds the Secrets
            report(f"built {output}")
    report(f"next: push the images (`mailstack build`, then tag and push mailstack-*:{rendered.tag}"
           f"{' to ' + registry if registry else ''}), then `kubectl apply -k {rendered.directory}`")
