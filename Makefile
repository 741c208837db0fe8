# mailstack: `make up` for a local mail server, `make test` for the whole suite. `make help` lists all.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules --warn-undefined-variables

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
MAILSTACK := $(BIN)/mailstack
SEED ?= examples/seed.yaml
PYTEST_ARGS ?=

.PHONY: help up down clean status logs provision build swarm swarm-remove kubernetes test test-unit test-integration lint bench bench-startup bench-mail bench-fixtures bench-clients bench-snapshots bench-production bench-world bench-webmail bench-lmtp-tcp

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-17s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || { echo "error: '$(PYTHON) -m venv' is unavailable; hint: install python3-venv (Debian/Ubuntu)" >&2; exit 1; }
	@echo "• creating the Python environment in $(VENV) (pinned dependencies)"
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	@$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

up: $(VENV)/.installed ## start the stack (installs Docker, Compose, base image if missing), seed the example users
	@$(MAILSTACK) up --seed $(SEED)

down: $(VENV)/.installed ## stop the stack, keep mail, queue and database
	@$(MAILSTACK) down

clean: $(VENV)/.installed ## stop the stack and delete its data (volumes)
	@$(MAILSTACK) down --volumes

status: $(VENV)/.installed ## services, health and endpoints
	@$(MAILSTACK) status

logs: $(VENV)/.installed ## follow the stack's logs
	@$(MAILSTACK) logs --follow

provision: $(VENV)/.installed ## install only what is missing: Docker engine, Compose v2, debian:bookworm-slim
	@$(MAILSTACK) provision

build: provision ## build the images (cached by content hash)
	@$(MAILSTACK) build

swarm: build ## deploy (or update) the stack on the Docker Swarm this Docker CLI manages (DOCKER_HOST); swarm-remove takes it down
	@$(MAILSTACK) deploy swarm

swarm-remove: $(VENV)/.installed ## take the swarm stack down (volumes kept on each node)
	@$(MAILSTACK) deploy swarm --remove

kubernetes: $(VENV)/.installed ## render the Kubernetes deployment (secrets generated, git-ignored) into .mailstack/kubernetes and build it
	@$(MAILSTACK) deploy kubernetes --output .mailstack/kubernetes.yaml

lint: $(VENV)/.installed ## ruff
	@$(BIN)/ruff check .

test-unit: $(VENV)/.installed ## unit tests only (no Docker)
	@$(BIN)/pytest tests/unit -q $(PYTEST_ARGS)

test-integration: build ## integration tests against a disposable stack (random ports)
	@$(BIN)/pytest tests/integration -q $(PYTEST_ARGS)

test: lint build ## everything: lint, unit and integration tests
	@$(BIN)/pytest tests -q $(PYTEST_ARGS)

bench: bench-startup bench-mail bench-fixtures bench-clients bench-snapshots bench-production bench-world bench-webmail bench-lmtp-tcp ## all benchmarks (print figures)

bench-startup: build ## cold build, first/warm up, idle RAM, image sizes
	@$(BIN)/python bench/startup.py

bench-mail: build ## delivery latency and throughput
	@$(BIN)/python bench/mail.py

bench-fixtures: build ## disposable test stacks: fresh start, reuse attach, mail_user per call
	@$(BIN)/python bench/fixtures.py

bench-clients: build ## refused logins and 600 submissions from the host, disposable vs make up's refusals
	@$(BIN)/python bench/clients.py

bench-snapshots: build ## snapshots of 1,000 messages in 50 mailboxes: save, restore (aim <= 1 s), size
	@$(BIN)/python bench/snapshots.py

bench-production: build ## up --from a generated 100k-mailbox PostfixAdmin copy: start, postmap, IMAP login vs the sample
	@$(BIN)/python bench/production.py

bench-world: build ## the outside world on vs off: fresh stack ready, idle RAM, CPU per message, throughput
	@$(BIN)/python bench/world.py

bench-webmail: build ## the webmail: its idle RAM and image size, login to message list in Chromium
	@$(BIN)/python bench/webmail.py

bench-lmtp-tcp: build ## LMTP/auth/quota-status over TCP vs unix sockets: CPU per message (whole machine, per container)
	@$(BIN)/python bench/lmtp_tcp.py
