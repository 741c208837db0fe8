"""The schema flavour is rendered into Postfix's maps, Dovecot's SQL config and MariaDB's DDL."""

from __future__ import annotations

import stat
from pathlib import Path

from mailstack import schema
from mailstack.settings import image_tag, stack_files_dir


def test_every_postfix_map_and_the_dovecot_config_come_from_the_flavour(tmp_path: Path) -> None:
    schema.render_configs(tmp_path, schema.DEFAULT, "s3cret-password", "ARGON2ID")
    for name, query in schema.DEFAULT.postfix_maps.items():
        text = (tmp_path / "postfix" / f"{name}.cf").read_text()
        assert f"query = {query}\n" in text
        assert "hosts = mysql\n" in text and "password = s3cret-password\n" in text
    dovecot = (tmp_path / "dovecot" / "dovecot-sql.conf.ext").read_text()
    assert f"password_query = {schema.DEFAULT.password_query}\n" in dovecot
    assert "default_pass_scheme = ARGON2ID" in dovecot
    ddl = (tmp_path / "mysql" / "schema.sql").read_text()
    # the tables, the flavour record, and the migrations' table (alias_domains) and column (users.quota)
    assert ddl.count("CREATE TABLE IF NOT EXISTS") == len(schema.DEFAULT.ddl) + 2
    assert ddl.index("CREATE TABLE IF NOT EXISTS users") < ddl.index(
        "ALTER TABLE users ADD COLUMN IF NOT EXISTS quota BIGINT UNSIGNED NULL DEFAULT NULL;\n")


def test_rendered_files_hold_the_password_so_only_the_owner_reads_them(tmp_path: Path) -> None:
    schema.render_configs(tmp_path, schema.DEFAULT, "pw-pw-pw-pw", "BLF-CRYPT")
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_main_cf_uses_exactly_the_rendered_maps() -> None:
    main_cf = (stack_files_dir() / "images" / "postfix" / "main.cf").read_text()
    for name in schema.DEFAULT.postfix_maps:
        assert f"mysql:/etc/postfix/sql/{name}.cf" in main_cf


def test_mynetworks_never_contains_a_docker_network() -> None:
    main_cf = (stack_files_dir() / "images" / "postfix" / "main.cf").read_text()
    line = next(line for line in main_cf.splitlines() if line.startswith("mynetworks"))
    assert line.split("=", 1)[1].split() == ["127.0.0.0/8"]


def test_image_tag_changes_with_image_content(tmp_path: Path) -> None:
    (tmp_path / "images" / "postfix").mkdir(parents=True)
    dockerfile = tmp_path / "images" / "postfix" / "Dockerfile"
    dockerfile.write_text("FROM debian:bookworm-slim\n")
    first = image_tag(tmp_path)
    assert image_tag(tmp_path) == first
    dockerfile.write_text("FROM debian:bookworm-slim\nRUN true\n")
    assert image_tag(tmp_path) != first
