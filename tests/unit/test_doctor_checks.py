"""The pure parts of doctor.py and chroot.py: reading stat, postconf, postmap and sha256sum output."""

from __future__ import annotations

from mailstack import chroot, doctor, schema


def test_sockets_with_the_right_owner_and_mode_pass() -> None:
    output = ("/var/spool/postfix/private/auth|200|200|660|socket\n"
              "/var/spool/postfix/private/dovecot-lmtp|200|200|600|socket\n"
              "/var/spool/postfix/private/quota-status|200|200|660|socket\n")
    assert doctor.socket_problems(output) == []


def test_socket_problems_are_named() -> None:
    output = ("/var/spool/postfix/private/auth|0|0|660|socket\n"
              "/var/spool/postfix/private/dovecot-lmtp|200|200|666|regular empty file\n"
              "/var/spool/postfix/private/quota-status|200|200|660|socket\n")
    assert doctor.socket_problems(output) == [
        "private/auth is owned by 0:0, want postfix 200:200",
        "private/dovecot-lmtp is a regular empty file, not a socket",
        "private/dovecot-lmtp has mode 0666, want 0600",
    ]
    assert doctor.socket_problems("") == ["private/auth is missing", "private/dovecot-lmtp is missing",
                                          "private/quota-status is missing"]


def test_tcp_listeners_that_answer_pass_and_the_others_are_named() -> None:
    """LMTP and auth over TCP (doctor's TCP_PROBE from Postfix's container: PORT|state|first line)."""
    good = "24|connected|220 mail.mailstack.test Dovecot ready.\n12345|connected|VERSION\t1\t2\n12340|connected|\n"
    assert doctor.tcp_listener_problems(good, "dovecot-internal") == []
    bad = "24|connected|421 go away\n12345|refused|\n"
    assert doctor.tcp_listener_problems(bad, "dovecot-internal") == [
        "lmtp (dovecot-internal:24) said '421 go away', not '220'...",
        "auth (dovecot-internal:12345) refuses connections",
        "quota-status (dovecot-internal:12340) refuses connections",
    ]


def test_postconf_and_map_tables() -> None:
    values = doctor.parse_postconf(
        "virtual_mailbox_domains = proxy:mysql:/etc/postfix/sql/virtual_domains.cf\n"
        "virtual_alias_maps = hash:/etc/postfix/virtual, mysql:/etc/postfix/sql/virtual_aliases.cf\n"
        "smtpd_sender_login_maps =\n")
    assert values["smtpd_sender_login_maps"] == ""
    tables = doctor.map_tables(values, ["virtual_domains", "virtual_aliases", "sender_logins"])
    assert tables == {
        "virtual_domains": ("virtual_mailbox_domains", "proxy:mysql:/etc/postfix/sql/virtual_domains.cf"),
        "virtual_aliases": ("virtual_alias_maps", "mysql:/etc/postfix/sql/virtual_aliases.cf"),
        "sender_logins": None,
    }


def test_every_flavour_map_is_served_by_a_parameter_doctor_knows() -> None:
    for flavour in schema.FLAVOURS.values():
        main_cf = "\n".join(argument for _, argument in flavour.postconf_commands())
        assert set(flavour.postfix_parameters) <= set(doctor.MAP_PARAMETERS)
        assert None not in doctor.map_tables(doctor.parse_postconf(main_cf), flavour.postfix_maps).values()


def test_postmap_outcomes() -> None:
    assert doctor.classify_postmap(0, "1\n", "") == ("found", "1")
    assert doctor.classify_postmap(1, "", "") == ("missing", "")
    outcome, message = doctor.classify_postmap(
        1, "", "postmap: warning: mysql:/etc/postfix/sql/virtual_domains.cf: mysql query failed: Access denied for "
               "user 'mailreader'@'172.20.0.4'\npostmap: fatal: table lookup problem\n")
    assert outcome == "error" and "Access denied" in message
    assert "password" in doctor.postmap_hint(message)
    assert "cannot query MariaDB" in doctor.postmap_hint("connect to mysql server mysql: Can't connect")


def test_chroot_copies_compared_with_etc() -> None:
    output = "\n".join([
        "aaa  /etc/resolv.conf", "bbb  /var/spool/postfix/etc/resolv.conf",
        "ccc  /etc/hosts",
        "ddd  /etc/services", "ddd  /var/spool/postfix/etc/services",
    ])
    problems = chroot.compare(chroot.parse_hashes(output))
    assert [str(p) for p in problems] == [
        "/var/spool/postfix/etc/resolv.conf differs from /etc/resolv.conf",
        "/var/spool/postfix/etc/hosts is missing",
    ]
    # a file /etc does not have (nss_mdns.config) is not expected in the chroot either
    assert all(p.file != "etc/nss_mdns.config" for p in problems)


def test_chroot_hash_command_covers_debians_list_in_both_places() -> None:
    command = chroot.hash_command()
    assert command[0] == "sha256sum"
    for name in ("etc/resolv.conf", "etc/hosts", "etc/services", "etc/nsswitch.conf", "etc/localtime", "etc/host.conf"):
        assert f"/{name}" in command and f"/var/spool/postfix/{name}" in command
