"""Deployments beyond one Docker engine: `mailstack deploy swarm` deploys on a Docker Swarm, `mailstack deploy
kubernetes` renders the Kubernetes overlay."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mailstack import kubernetes, swarm
from mailstack import seed as seed_module
from mailstack.cli.common import JsonOpt, out, print_json, report
from mailstack.stack import swarm as swarm_stack

deploy_app = typer.Typer(help="Deploy beyond one Docker engine: swarm (deployed on the swarm the Docker CLI talks "
                              "to), kubernetes (rendered here, applied elsewhere).",
                         no_args_is_help=True)


@deploy_app.command("swarm")
def deploy_swarm(
    ctx: typer.Context,
    remove: Annotated[bool, typer.Option("--remove", help="take the stack down again (every node's volumes are "
                                                           "kept for the next deploy)")] = False,
    storage_node: Annotated[str | None, typer.Option(
        "--storage-node", help="the node (hostname or id) that keeps MariaDB's and Dovecot's volumes; default: the "
                               "one labelled io.mailstack.storage=true, else this manager")] = None,
    build: Annotated[bool, typer.Option("--build/--no-build", help="build the images on this engine first (the "
                                                                   "other nodes need them too)")] = True,
    seed: Annotated[Path | None, typer.Option(
        help="seed file to apply once it runs (needs MAILSTACK_DB_PORT: MariaDB published on its node)")] = None,
    render: Annotated[Path | None, typer.Option(
        "--render", help="where the secrets are rendered, which git must ignore (default: the state directory's "
                         "swarm/)")] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for every task to run healthy")] = 300.0,
    as_json: JsonOpt = False,
) -> None:
    """Deploy (or update) the stack on the Docker Swarm this Docker CLI talks to (DOCKER_HOST or the current
    context: a manager), wait until every task runs healthy and print the endpoints. Ports, host name and name come
    from the same settings as `up` (MAILSTACK_SMTP_PORT, MAILSTACK_HOSTNAME, -p). Postfix runs on every node."""
    settings = ctx.obj.settings
    if remove:
        swarm_stack.SwarmStack(settings).remove(report)
        report(f"stack {settings.project!r} removed; its volumes stay on each node")
        return
    seed_file = seed_module.load(seed) if seed is not None else None
    status = swarm_stack.deploy(settings, report, directory=render, storage_node=storage_node, build=build,
                                seed=seed_file, timeout=timeout)
    if as_json:
        print_json(status)
        return
    every = status["swarm"]["endpoints"]  # type: ignore[index]
    for name, addresses in every.items():
        out.print(f"{name:<11} {' '.join(addresses) or '-'}")
    out.print(f"ca_cert     {status['ca_cert'] or '-'}")
    report(f"TLS names {settings.hostname}; `mailstack status` shows it again, `mailstack deploy swarm --remove` "
           f"takes it down (its secrets are in {render or swarm.default_dir(settings)})")


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
