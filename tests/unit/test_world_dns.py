"""The DNS records model, its zone lines (parsed back with dnspython) and the DNS image's file."""

from __future__ import annotations

import dns.rdatatype
import dns.zone
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mailstack.world import dns as wd

DKIM = "v=DKIM1; k=rsa; p=" + "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" * 12  # > 255: split in two strings


def parse_zone(lines: list[str]) -> dns.zone.Zone:
    return dns.zone.from_text("\n".join(lines) + "\n", origin=".", relativize=False, check_origin=False)


def rrset(zone: dns.zone.Zone, name: str, kind: str):
    return zone.find_rdataset(name + ".", dns.rdatatype.from_text(kind))


def test_domain_records_publish_mx_a_spf_dkim_dmarc_and_ptr() -> None:
    records = wd.domain_records("Example.TEST.", "mail.example.test", "10.213.7.4", ("s2026", DKIM))
    by = {(r.name, r.type): r.value for r in records}
    assert by[("example.test", "MX")] == "10 mail.example.test"
    assert by[("mail.example.test", "A")] == "10.213.7.4"
    assert by[("example.test", "TXT")] == "v=spf1 ip4:10.213.7.4 -all"
    assert by[("s2026._domainkey.example.test", "TXT")] == DKIM
    assert by[("_dmarc.example.test", "TXT")] == "v=DMARC1; p=none"
    assert by[("4.7.213.10.in-addr.arpa", "PTR")] == "mail.example.test"


def test_domain_records_options() -> None:
    records = wd.domain_records("example.test", "mx.example.test", "10.0.0.9", None, spf="v=spf1 mx -all",
                                dmarc=None, ptr=False, ttl=5)
    assert [(r.type, r.value) for r in records] == [
        ("MX", "10 mx.example.test"), ("A", "10.0.0.9"), ("TXT", "v=spf1 mx -all")]
    assert {r.ttl for r in records} == {5}


def test_zone_lines_parse_and_keep_values() -> None:
    records = wd.domain_records("example.test", "mail.example.test", "10.213.7.4", ("s1", DKIM))
    records += wd.outside_records("10.213.7.3")
    zone = parse_zone(wd.as_zone_lines(records))
    dkim = rrset(zone, "s1._domainkey.example.test", "TXT")[0]
    assert len(dkim.strings) == 3 and all(len(s) <= 255 for s in dkim.strings)
    assert b"".join(dkim.strings).decode() == DKIM
    assert rrset(zone, "outside.test", "MX")[0].exchange.to_text() == "mx.outside.test."
    assert rrset(zone, "mx.outside.test", "A")[0].address == "10.213.7.3"
    assert rrset(zone, "3.7.213.10.in-addr.arpa", "PTR")[0].target.to_text() == "mx.outside.test."
    assert rrset(zone, "_dmarc.dmarc-reject.test", "TXT")[0].strings == (b"v=DMARC1; p=reject; adkim=s; aspf=s",)
    assert rrset(zone, "spf-fail.test", "TXT")[0].strings == (b"v=spf1 ip4:192.0.2.1 -all",)
    assert rrset(zone, "example.test", "MX").ttl == wd.DEFAULT_TTL


def test_outside_domains_spf_passes_only_for_outside_domain() -> None:
    txt = {(r.name, r.value) for r in wd.outside_records("10.1.2.3") if r.type == "TXT"}
    assert (wd.OUTSIDE_DOMAIN, "v=spf1 ip4:10.1.2.3 -all") in txt
    assert all("10.1.2.3" not in v for n, v in txt if n in (wd.SPF_FAIL_DOMAIN, wd.DMARC_REJECT_DOMAIN))
    assert not any(n == f"_dmarc.{wd.SPF_FAIL_DOMAIN}" for n, _ in txt)


@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), max_size=700))
def test_any_ascii_txt_round_trips_through_a_zone_line(text: str) -> None:
    record = wd.Record("t.example.test", "TXT", text)
    parsed = rrset(parse_zone([record.zone_line()]), "t.example.test", "TXT")[0]
    assert b"".join(parsed.strings).decode() == text
    assert "'" not in record.zone_line()  # the unbound file quotes each line with single quotes


def test_txt_strings_split_at_255() -> None:
    assert wd.txt_strings("") == [""]
    assert [len(s) for s in wd.txt_strings("x" * 600)] == [255, 255, 90]


@pytest.mark.parametrize(("name", "kind", "value"), [
    ("bad name.test", "A", "10.0.0.1"),
    ("-x.test", "A", "10.0.0.1"),
    ("a..test", "A", "10.0.0.1"),
    ("x.test", "A", "10.0.0.300"),
    ("x.test", "MX", "mail.x.test"),
    ("x.test", "MX", "70000 mail.x.test"),
    ("x.test", "CNAME", "y.test"),
    ("x.test", "TXT", "caf\u00e9"),
    ("x" * 64 + ".test", "A", "10.0.0.1"),
])
def test_invalid_records_are_refused(name: str, kind: str, value: str) -> None:
    with pytest.raises(wd.RecordError):
        wd.Record(name, kind, value)


def test_records_are_normalised_and_frozen() -> None:
    record = wd.Record("Mail.Example.Test.", "mx", "5 MX.Example.TEST.")
    assert (record.name, record.type, record.value) == ("mail.example.test", "MX", "5 mx.example.test")
    with pytest.raises(AttributeError):
        record.value = "x"  # type: ignore[misc]


def test_server_config_is_an_unbound_server_clause_without_duplicates() -> None:
    records = (wd.domain_records("a.test", "mail.a.test", "10.0.0.4")
               + wd.domain_records("b.test", "mail.a.test", "10.0.0.4"))
    text = wd.render_server_config(records, domains=["a.test", "b.test"])
    lines = text.splitlines()
    assert lines[1] == "server:"
    zones = [line for line in lines if line.startswith("  local-zone: ")]
    data = [line for line in lines if line.startswith("  local-data: '")]
    assert len(data) + len(zones) == len(lines) - 2 and all(line.endswith("'") for line in data)
    # "." first, then each domain's zone (the mail host is under a.test) and the reverse tree
    assert zones == ['  local-zone: "." static', '  local-zone: "a.test." static', '  local-zone: "b.test." static',
                     '  local-zone: "in-addr.arpa." static']
    assert sum("mail.a.test. 60 IN A 10.0.0.4" in line for line in data) == 1
    assert sum("IN PTR" in line for line in data) == 1
    assert "  local-data: 'b.test. 60 IN MX 10 mail.a.test.'" in data
    assert wd.render_server_config([]).splitlines()[1:] == [
        "server:", '  local-zone: "." static', '  local-zone: "in-addr.arpa." static']


def test_every_other_domain_can_have_the_outside_mx() -> None:
    records = wd.domain_records("a.test", "mail.stack.test", "10.0.0.4") + wd.outside_records("10.0.0.3")
    lines = wd.render_server_config(records, domains=["a.test"], every_other_domain_mx=wd.OUTSIDE_HOST).splitlines()
    assert lines[2:4] == ['  local-zone: "." redirect', "  local-data: '. 60 IN MX 10 mx.outside.test.'"]
    # names that are not under a served domain get a zone of their own: unknown names there stay NXDOMAIN
    for zone in ("mail.stack.test", "mx.outside.test", "outside.test", "spf-fail.test", "dmarc-reject.test"):
        assert f'  local-zone: "{zone}." static' in lines, zone
    assert '  local-zone: "_dmarc.outside.test." static' not in lines
