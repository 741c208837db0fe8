"""One frozen, validated settings object, resolved once at the edge (CLI flags > environment > .env)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mailstack.errors import MailstackError
from mailstack.passwords import DOVECOT_SCHEMES

PACKAGE_DIR = Path(__file__).resolve().parent
MAIL_PORT_NAMES = ("smtp", "submission", "smtps", "imaps", "pop3s", "managesieve")
PORT_NAMES = (*MAIL_PORT_NAMES, "webmail")  # webmail's is published only when the stack has it


def stack_files_dir() -> Path:
    """Where compose.yaml and images/ live: inside the wheel, or the source checkout."""
    for candidate in (PACKAGE_DIR / "stack_files", PACKAGE_DIR.parent.parent):
        if (candidate / "compose.yaml").is_file():
            return candidate
    raise MailstackError("compose.yaml not found next to the mailstack package", "reinstall mailstack")


class Settings(BaseSettings):
    """Everything the orchestrator needs to know, validated; nothing else reads the environment."""

    model_config = SettingsConfigDict(
        env_prefix="MAILSTACK_", env_file=".env", env_file_encoding="utf-8", frozen=True, extra="ignore"
    )

    project: str = Field("mailstack", description="compose project name; isolates containers and volumes")
    hostname: str = "mail.mailstack.test"
    bind_address: str = "127.0.0.1"
    smtp_port: int = Field(25, ge=0, le=65535)
    submission_port: int = Field(587, ge=0, le=65535)
    smtps_port: int = Field(465, ge=0, le=65535)
    imaps_port: int = Field(993, ge=0, le=65535)
    pop3s_port: int = Field(995, ge=0, le=65535)
    managesieve_port: int = Field(4190, ge=0, le=65535)
    webmail_port: int = Field(8080, ge=0, le=65535, description="webmail and client autoconfiguration (HTTP)")
    db_port: int | None = Field(None, ge=0, le=65535, description="publish MariaDB on the host (off by default)")
    state_dir: Path = Path(".mailstack")
    seed_file: Path | None = None
    password_scheme: Literal["ARGON2ID", "BLF-CRYPT"] = "ARGON2ID"
    default_pass_scheme: str | None = Field(
        None, description="Dovecot's scheme for unprefixed hashes (e.g. SHA512-CRYPT); default: the flavour's")
    hash_cost: Literal["production", "fast"] = "production"
    schema_flavour: str = Field(
        "default", validation_alias=AliasChoices("MAILSTACK_SCHEMA", "schema_flavour", "schema"),
        description="the schema flavour: default, virtual or postfixadmin [env: MAILSTACK_SCHEMA]")
    mail_fsync: Literal["optimized", "always", "never"] = Field(
        "optimized", description="Dovecot's fsync after delivery; test stacks use never")
    queue_in_memory: bool = Field(
        False, description="Postfix's queue on tmpfs (load tests): faster, lost when Postfix stops")
    fast_retry: bool = Field(False, description="short Postfix queue/backoff timings, for fault tests")
    mailbox_features: bool = Field(
        True, description="quotas (refused at RCPT) and Sieve at delivery; off: plain delivery (A/B benchmarks)")
    fast_refusals: bool = Field(
        False, description="answer failed logins at once (no auth delay or penalty): disposable test stacks")
    world: bool = Field(
        True, description="the outside world: the stack's DNS, rspamd (DKIM, SPF/DMARC, spam) and an outside MX "
                          "catching mail for every other domain; disposable stacks opt in")
    world_subnet: str | None = Field(
        None, description="the stack network's subnet with a world (/24 to /27); default: a free one, chosen once")
    dmarc_reject: bool = Field(True, description="with a world: refuse inbound mail failing a p=reject DMARC policy")
    webmail: bool = Field(
        True, description="Roundcube webmail and client autoconfiguration over HTTP; disposable stacks opt in")
    lmtp_auth_tcp: bool = Field(
        False, description="Postfix reaches Dovecot's LMTP, SASL auth and quota-status over TCP on an internal network "
                           "only they share (as across machines) instead of unix sockets in a shared volume")
    wait_timeout: float = Field(90.0, gt=0)
    health_interval: int = Field(
        30, ge=1, le=3600, description="seconds between Docker's own health checks (each ~50 ms of CPU)")
    ephemeral: bool = Field(False, description="a disposable stack (tests): labelled for pruning")

    @field_validator("project")
    @classmethod
    def _project_name(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", value):
            raise ValueError("must be lowercase letters, digits, '-' or '_' (a compose project name)")
        return value

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        if not re.fullmatch(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}", value.lower()):
            raise ValueError("must be a fully qualified host name like mail.example.test")
        return value.lower()

    @field_validator("default_pass_scheme")
    @classmethod
    def _dovecot_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.upper() not in DOVECOT_SCHEMES:
            raise ValueError(f"Dovecot knows no password scheme {value!r} (e.g. SHA512-CRYPT, MD5-CRYPT, CRYPT)")
        return value.upper()

    @field_validator("schema_flavour")
    @classmethod
    def _known_flavour(cls, value: str) -> str:
        from mailstack.schema import FLAVOURS  # noqa: PLC0415 - settings stay importable on their own

        if value not in FLAVOURS:
            raise ValueError(f"must be one of {', '.join(FLAVOURS)}")
        return value

    @field_validator("state_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    def ports(self) -> dict[str, int]:
        names = PORT_NAMES if self.webmail else MAIL_PORT_NAMES
        return {name: getattr(self, f"{name}_port") for name in names}

    @property
    def config_dir(self) -> Path:
        return self.state_dir / "config"

    @property
    def ca_cert(self) -> Path:
        return self.config_dir / "tls" / "ca.crt"

    def env_var(self, field: str) -> str:
        return f"MAILSTACK_{field.upper()}"


def load_settings(**overrides: object) -> Settings:
    """Resolve settings once; CLI flags arrive as overrides (None means 'not given')."""
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**given)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "settings"
        if field in ("MAILSTACK_SCHEMA", "schema", "schema_flavour"):
            field = "schema"
        raise MailstackError(
            f"invalid setting {field}: {first['msg'].removeprefix('Value error, ')}",
            f"check MAILSTACK_{field.upper()} in your environment or .env, or the matching flag",
        ) from exc


def image_tag(root: Path) -> str:
    """A content hash of the image build contexts: images are rebuilt only when their inputs change."""
    digest = hashlib.sha256()
    for path in sorted((root / "images").rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]
