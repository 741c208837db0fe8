"""Detection by content, parsing, the Postfix and Dovecot rules, masking and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from mailstack.production import ProductionInputError, make_plan, read_dir
from mailstack.production.detect import classify
from mailstack.production.dovecot import static_root
from mailstack.production.maps import parse_dovecot_sql, parse_map
from mailstack.production.model import Dropped, Kept, Rewritten

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "production"
ROOT = Path(__file__).resolve().parents[2]
STACK_MASTER = ROOT / "images" / "postfix" / "master.cf"
SECRETS = ("pfa-Secret-8812", "x893dNj4stkHy1MKQq0USWs4", "dflt-Pw-5531")


def plan_of(name: str):
    return make_plan(read_dir(SAMPLES / name), STACK_MASTER)


@pytest.fixture(scope="module")
def pfa():
    return plan_of("postfixadmin")


@pytest.fixture(scope="module")
def isp():
    return plan_of("ispmail")


def test_detection_by_content_whatever_the_names(tmp_path: Path) -> None:
    shutil.copy(SAMPLES / "postfixadmin" / "postconf-n.txt", tmp_path / "a")
    shutil.copy(SAMPLES / "postfixadmin" / "master.cf", tmp_path / "b.txt")
    shutil.copy(SAMPLES / "postfixadmin" / "doveconf-n.out", tmp_path / "c")
    shutil.copy(SAMPLES / "postfixadmin" / "sql" / "mysql_virtual_alias_maps.cf", tmp_path / "d.conf")
    shutil.copy(SAMPLES / "postfixadmin" / "dovecot-sql.conf", tmp_path / "e")
    shutil.copy(SAMPLES / "ispmail" / "backup-2024-02-01.gz", tmp_path / "f")
    assert {p.name: classify(p) for p in sorted(tmp_path.iterdir())} == {
        "a": "postfix-main", "b.txt": "master", "c": "dovecot", "d.conf": "map", "e": "dovecot-sql", "f": "dump"}
    assert classify(SAMPLES / "postfixadmin" / "README.txt") is None


def test_flavours() -> None:
    assert [plan_of(n).flavour for n in ("postfixadmin", "ispmail", "default")] == ["postfixadmin", "virtual",
                                                                                   "default"]


def test_maps_keep_queries_verbatim(pfa) -> None:
    names = [m.name for m in pfa.maps]
    assert names == ["mysql_mailbox_maps", "mysql_virtual_alias_domain_catchall_maps",
                     "mysql_virtual_alias_domain_mailbox_maps", "mysql_virtual_alias_domain_maps",
                     "mysql_virtual_alias_maps", "mysql_virtual_domains_maps", "mysql_virtual_mailbox_maps"]
    domains = next(m for m in pfa.maps if m.name == "mysql_virtual_domains_maps")
    assert domains.query == "SELECT domain FROM domain WHERE domain='%s' AND active = '1'"
    assert domains.connection == {"user": "postfix", "password": "pfa-Secret-8812", "hosts": "localhost",
                                  "dbname": "postfix"}


def test_legacy_map_form_becomes_a_query() -> None:
    parsed, warnings = parse_map(SAMPLES / "default" / "virtual_mailboxes.cf")
    assert parsed.query == "SELECT 1 FROM users WHERE email = '%s'"
    assert warnings == []


def test_dovecot_sql_continuations_and_connect() -> None:
    sql, _ = parse_dovecot_sql(SAMPLES / "ispmail" / "dovecot" / "dovecot-sql.conf.ext")
    assert sql.user_query == ("SELECT email as user, concat('*:bytes=', quota) AS quota_rule, '/var/vmail/%d/%n' "
                              "AS home, 5000 AS uid, 5000 AS gid FROM virtual_users WHERE email='%u'")
    assert sql.connection == {"host": "127.0.0.1", "dbname": "mailserver", "user": "mailserver",
                              "password": "x893dNj4stkHy1MKQq0USWs4"}


def test_postfix_rules(pfa) -> None:
    p = pfa.postfix
    assert p.find("myhostname") == Kept("myhostname", "mail.example.org")
    assert p.find("smtpd_tls_cert_file") == Rewritten(
        "smtpd_tls_cert_file", "/etc/letsencrypt/live/mail.example.org/fullchain.pem",
        "/run/mailstack/tls/server.crt", "the stack's CA-signed certificate, key and CA")
    assert isinstance(p.find("mynetworks"), Dropped)
    assert "open relay" in p.find("mynetworks").why
    assert p.find("virtual_transport").new == "lmtp:unix:private/dovecot-lmtp"
    assert p.find("inet_protocols").new == "ipv4"
    assert isinstance(p.find("relayhost"), Dropped)
    assert isinstance(p.find("content_filter"), Dropped)
    assert isinstance(p.find("smtpd_milters"), Dropped)
    assert p.find("smtpd_recipient_restrictions").new == \
        "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination"
    assert p.find("virtual_mailbox_domains").new == "mysql:/etc/postfix/sql/mysql_virtual_domains_maps.cf"
    assert p.find("relay_domains").why.startswith("proxy:mysql:/etc/postfix/sql/mysql_relay_domains.cf removed: "
                                                  "the map file mysql_relay_domains.cf was not provided")
    assert p.find("alias_maps") == Kept("alias_maps", "hash:/etc/aliases")
    assert p.find("dovecot_destination_recipient_limit") == Kept("dovecot_destination_recipient_limit", "1")
    assert p.find("submission_sender_checks") == Kept("submission_sender_checks", "reject_sender_login_mismatch")
    assert ("-e", "virtual_transport=lmtp:unix:private/dovecot-lmtp") in pfa.postconf_commands
    assert not [c for c in pfa.postconf_commands if c[1].startswith(("mynetworks=", "relayhost="))]


def test_debian_paths_and_log(tmp_path: Path) -> None:
    p = plan_of("default").postfix
    assert p.find("queue_directory").new == "/var/spool/postfix"
    assert p.find("maillog_file").new == "/dev/stdout"


def test_unknown_parameter_is_a_warning_never_applied(isp) -> None:
    assert isinstance(isp.postfix.find("smtpd_recipient_restrictionz"), Dropped)
    assert "unknown Postfix parameter `smtpd_recipient_restrictionz` = reject_unauth_destination: not applied" \
        in isp.warnings
    assert not [c for c in isp.postconf_commands if "restrictionz" in c[1]]


def test_master_cf_rules(pfa) -> None:
    p = pfa.postfix
    assert p.find("submission/inet/smtpd_tls_security_level") == Rewritten(
        "submission/inet/smtpd_tls_security_level", "may", "encrypt",
        "the stack's submission port keeps its security settings")
    for name in ("dovecot/unix", "maildrop/unix", "smtp-amavis/unix", "127.0.0.1:10025/inet"):
        assert isinstance(p.find(name), Dropped), name
    assert ("-P", "submission/inet/smtpd_recipient_restrictions=$submission_recipient_checks") in \
        pfa.postconf_commands
    assert not [c for c in pfa.postconf_commands if "submission/inet/smtpd_tls_security_level=may" in c[1]]
    assert not [c for c in pfa.postconf_commands if c[0] == "-M" and "amavis" in c[1]]


def test_dovecot_rules(pfa, isp) -> None:
    d = pfa.dovecot
    assert d.find("mail_location") == Kept("mail_location", "maildir:/var/mail/vmail/%u/")
    assert d.find("first_valid_uid").new == "5000"
    assert d.find("ssl_cert").new == "</run/mailstack/tls/server.crt"
    assert d.find("protocols").new == "imap pop3 lmtp sieve"
    assert d.find("passdb[1]").why == "the stack's own sql passdb/userdb on the rendered SQL file"
    assert isinstance(d.find("service/auth"), Dropped)
    assert pfa.mail_root == "/var/mail/vmail"
    assert "passdb" not in pfa.dovecot_config and "service" not in pfa.dovecot_config
    # the quota dict's proxy service is not in the stack: the stack's Maildir++ quota, limits from quota_rule
    assert "plugin {\n  quota = maildir:User quota\n}" in pfa.dovecot_config
    quota = pfa.dovecot.find("plugin/quota")
    assert isinstance(quota, Rewritten) and quota.old == "dict:storage=200000 proxy::quota"
    assert isp.mail_root == "/var/vmail"
    assert isp.dovecot.find("ssl_dh").why == "the DH parameter file is not in the stack (ECDHE ciphers are used)"
    assert not [w for w in isp.warnings if "protocol sieve" in w]  # Pigeonhole is in the stack
    assert isinstance(isp.dovecot.find("protocol/lmtp/mail_plugins"), Kept)  # $mail_plugins sieve, as it was
    assert "auth_mechanisms = plain login" in isp.dovecot_config  # from conf.d/10-auth.conf
    assert isinstance(isp.dovecot.find("service/managesieve-login"), Dropped)


def test_static_root() -> None:
    assert static_root("maildir:/var/vmail/%d/%n/Maildir:LAYOUT=fs") == "/var/vmail"
    assert static_root("maildir:/var/mail/vmail/%u/") == "/var/mail/vmail"
    assert static_root("maildir:~/Maildir") is None


def test_no_secret_in_the_report(pfa, isp) -> None:
    for plan in (pfa, isp, plan_of("default")):
        text = json.dumps(plan.as_json()) + "\n".join(plan.report_lines())
        for secret in SECRETS:
            assert secret not in text
    assert pfa.as_json()["postfix"]["dropped"][4] == {
        "name": "smtp_sasl_password_maps", "value": "***", "why": "relay credentials are not used (the relayhost "
                                                                  "is dropped)"}


def test_report_shape(pfa) -> None:
    report = pfa.as_json()
    assert set(report) >= {"flavour", "postfix", "dovecot", "maps", "database", "warnings"}
    assert report["database"]["tables"] == 5 and report["database"]["rows"] == 15
    assert report["maps"][0] == {"name": "mysql_mailbox_maps", "file": str(SAMPLES / "postfixadmin" / "sql" /
                                                                          "mysql_mailbox_maps.cf"),
                                 "query": "SELECT username FROM mailbox WHERE username = '%s' AND active = '1'",
                                 "options": {}}


def test_bad_input_errors() -> None:
    with pytest.raises(ProductionInputError, match=r"main-unparsable/main.cf:3: not a `name = value` line"):
        read_dir(SAMPLES / "bad" / "main-unparsable")
    with pytest.raises(ProductionInputError, match="nothing recognisable") as caught:
        read_dir(SAMPLES / "bad" / "empty")
    assert "master.cf" in (caught.value.hint or "")


def test_conflicting_files_are_an_error(tmp_path: Path) -> None:
    shutil.copy(SAMPLES / "postfixadmin" / "postconf-n.txt", tmp_path / "one")
    shutil.copy(SAMPLES / "ispmail" / "postfix" / "main.cf", tmp_path / "two")
    with pytest.raises(ProductionInputError, match="two different main.cf / postconf -n files"):
        read_dir(tmp_path)


def test_identical_duplicates_are_fine(tmp_path: Path) -> None:
    shutil.copy(SAMPLES / "default" / "postconf.txt", tmp_path / "one")
    (tmp_path / "two").write_text("# a copy\n" + (SAMPLES / "default" / "postconf.txt").read_text())
    assert read_dir(tmp_path).postfix_main[0].name == "compatibility_level"


def test_missing_include_and_unparsable_dovecot_line(tmp_path: Path) -> None:
    (tmp_path / "dovecot.conf").write_text("protocols = imap\nmail_location = maildir:~/Maildir\n!include nope.conf\n"
                                           "ssl = yes\n")
    sources = read_dir(tmp_path)
    assert sources.warnings == (f"{tmp_path / 'dovecot.conf'}:3: !include nope.conf: not found next to it in DIR",)
    (tmp_path / "dovecot.conf").write_text("protocols = imap\nmail_location = x\nssl = yes\nwhat is this\n")
    with pytest.raises(ProductionInputError, match=r"dovecot.conf:4: not a Dovecot setting"):
        read_dir(tmp_path)


def test_a_mail_root_holding_the_stacks_mail_volume_is_warned_and_refused_before_anything_starts(
        tmp_path: Path) -> None:
    import dataclasses

    from mailstack.errors import MailstackError
    from mailstack.production.render import render_plan

    plan = dataclasses.replace(make_plan(read_dir(SAMPLES / "postfixadmin")), mail_root="/var/mail")
    with pytest.raises(MailstackError, match="holds the stack's mail volume"):
        render_plan(tmp_path, plan, "pw")
    assert not list(tmp_path.rglob("*"))  # nothing rendered
