"""Issue 13: the outside world in a box. Mail for other domains reaches the outside MX by a real MX lookup in
the stack's DNS over verified TLS, signed with the domain's DKIM key (checked with dkimpy against the key in
the stack's DNS, asked over the network); mail from outside gets one Authentication-Results header with
rspamd's SPF/DKIM/DMARC verdicts; DMARC p=reject and GTUBE are refused; the DNS follows the domains."""

from __future__ import annotations

import base64
import email.policy
import json
import smtplib
import uuid
from collections.abc import Iterator

import dkim
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.zone
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from mailstack import cli
from mailstack.api import MailStack, User
from mailstack.errors import NotReady
from mailstack.stack import netns
from typer.testing import CliRunner, Result

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


@pytest.fixture(scope="module")
def world() -> Iterator[MailStack]:
    with MailStack(world=True) as stack:
        yield stack


def ask(stack: MailStack, name: str, kind: str) -> dns.message.Message:
    """A query to the stack's DNS server itself, over the network (UDP, then TCP when truncated)."""
    assert stack.stack.network is not None
    query = dns.message.make_query(name, kind)
    answer, _ = dns.query.udp_with_fallback(query, stack.stack.network.dns, timeout=3)
    return answer


def txt(stack: MailStack, name: str) -> list[bytes]:
    answer = ask(stack, name, "TXT")
    return [b"".join(rdata.strings) for rrset in answer.answer for rdata in rrset]


def dns_of(stack: MailStack):  # dkimpy's dnsfunc: TXT lookups in the stack's DNS
    def lookup(name: bytes, timeout: int = 5) -> bytes:
        found = txt(stack, name.decode().rstrip("."))
        return found[0] if found else b""
    return lookup


def run(stack: MailStack, *args: str) -> Result:
    return CliRunner().invoke(cli.app, ["--project", stack.settings.project,
                                        "--state-dir", str(stack.settings.state_dir), *args])


def submit(stack: MailStack, user: User, to: str, subject: str, body: str = "hello\n") -> None:
    stack.send(user, to=to, subject=subject, body=body)


def test_mail_to_any_other_domain_reaches_the_outside_mx_signed_and_over_verified_tls(world: MailStack) -> None:
    user = world.add_user()
    subject = f"out-{uuid.uuid4().hex[:8]}"
    submit(world, user, "customer@gmail.com", subject)
    message = world.wait_for_outbound(to="customer@gmail.com", subject=subject)
    stored = next(m for m in world.outbound_messages() if m.subject == subject)
    assert stored.tls is True and stored.mail_from == user.address  # STARTTLS to the outside MX
    # Postfix verifies the outside MX's certificate against the stack's CA (a mismatch would defer the mail)
    level = world.stack.exec("postfix", ["postconf", "-h", "smtp_tls_security_level"]).stdout.strip()
    assert level == b"verify"
    raw = world.world.outbound_raw(stored.id)
    signature = message["DKIM-Signature"]
    assert signature is not None and "d=example.test" in signature.replace("\t", " ").replace(" ", "")
    assert dkim.verify(raw, dnsfunc=dns_of(world)) is True
    # tampered with on the way: the signature no longer verifies
    assert dkim.verify(raw.replace(b"hello", b"HELLO"), dnsfunc=dns_of(world)) is False


def test_a_signature_does_not_verify_against_another_key(world: MailStack) -> None:
    user = world.add_user()
    subject = f"badkey-{uuid.uuid4().hex[:8]}"
    submit(world, user, "someone@example.org", subject)
    world.wait_for_outbound(to="someone@example.org", subject=subject)
    raw = world.world.outbound_raw(next(m.id for m in world.outbound_messages() if m.subject == subject))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    public = other.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    wrong = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: wrong) is False
    assert dkim.verify(raw, dnsfunc=dns_of(world)) is True


def test_inbound_spf_pass_and_fail_in_one_authentication_results_header(world: MailStack) -> None:
    user = world.add_user()
    for verdict in ("pass", "fail"):
        subject = f"spf-{verdict}-{uuid.uuid4().hex[:6]}"
        reply = world.send_from_outside(user.address, spf=verdict, subject=subject)
        assert reply.accepted, reply
        message = world.wait_for_message(user, subject=subject)
        results = message.get_all("Authentication-Results")
        assert len(results) == 1, results
        header = " ".join(results[0].split())
        assert header.startswith(f"{world.hostname};"), header
        assert f"spf={verdict}" in header and "dkim=none" in header and "dmarc=" in header, header
        assert message["X-Spam-Status"] is not None and message["X-Spamd-Result"] is not None


def test_dmarc_reject_is_refused_with_5xx(world: MailStack) -> None:
    user = world.add_user()
    reply = world.send_from_outside(user.address, from_="ceo@dmarc-reject.test", spf="fail", subject="forged")
    assert reply.code == 554 and reply.text.startswith("5.7.1"), reply
    with pytest.raises(NotReady):  # refused, so never delivered
        world.wait_for_message(user, subject="forged", timeout=1)


def test_gtube_is_refused_on_25_and_587(world: MailStack) -> None:
    user = world.add_user()
    reply = world.send_from_outside(user.address, spf="pass", subject="spam", body=f"{GTUBE}\n")
    assert reply.code == 554 and "Gtube" in reply.text, reply
    endpoint = world.endpoints.submission
    with smtplib.SMTP(endpoint.host, endpoint.port, local_hostname="client.test", timeout=30) as smtp:
        smtp.starttls(context=world.ssl_context())
        smtp.login(user.address, user.password)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail(user.address, ["friend@example.org"],
                          f"From: {user.address}\r\nTo: friend@example.org\r\nSubject: spam\r\n\r\n{GTUBE}\r\n")
    assert refused.value.smtp_code == 554


def test_the_stack_dns_follows_the_domains_and_knows_nothing_else(world: MailStack) -> None:
    domain = f"d{uuid.uuid4().hex[:6]}.test"
    assert ask(world, domain, "MX").rcode() == dns.rcode.NXDOMAIN or not ask(world, domain, "A").answer
    world.add_domain(domain)
    answer = ask(world, domain, "MX")
    assert [rdata.exchange.to_text() for rrset in answer.answer for rdata in rrset] == [f"{world.hostname}."]
    assert txt(world, domain) == [f"v=spf1 ip4:{world.stack.network.postfix} -all".encode()]
    assert txt(world, f"_dmarc.{domain}") == [b"v=DMARC1; p=none"]
    record = world.dkim_record(domain)
    assert txt(world, record.name) == [record.value.encode()]  # 400 bytes in 255-byte strings: joined back
    # a name under a served domain that has no record: NXDOMAIN at once (no timeout anywhere)
    assert ask(world, f"nothing.{domain}", "A").rcode() == dns.rcode.NXDOMAIN
    assert ask(world, "4.3.2.1.in-addr.arpa", "PTR").rcode() == dns.rcode.NXDOMAIN


def test_dns_records_prints_zone_lines_that_parse(world: MailStack) -> None:
    result = run(world, "dns", "records", world.domain)
    assert result.exit_code == 0, result.output
    zone = dns.zone.from_text(result.stdout, origin=".", relativize=False, check_origin=False)
    kinds = {(name.to_text(), dns.rdatatype.to_text(rdataset.rdtype)) for name, rdataset in zone.iterate_rdatasets()}
    record = world.dkim_record()
    assert {(f"{world.domain}.", "MX"), (f"{world.domain}.", "TXT"), (f"{world.hostname}.", "A"),
            (f"{record.name}.", "TXT"), (f"_dmarc.{world.domain}.", "TXT")} <= kinds
    as_json = json.loads(run(world, "dns", "records", world.domain, "--json").stdout)
    assert {"MX", "A", "TXT", "PTR"} == {entry["type"] for entry in as_json}
    shown = json.loads(run(world, "dkim", "show", world.domain, "--json").stdout)
    assert shown == {"name": record.name, "value": record.value}


def test_dkim_rotate_signs_with_the_new_key_and_keeps_the_old_record(world: MailStack) -> None:
    domain = f"r{uuid.uuid4().hex[:6]}.test"
    world.add_domain(domain)
    before = world.dkim_record(domain)
    result = run(world, "dkim", "rotate", domain, "--json")
    assert result.exit_code == 0, result.output
    after = json.loads(result.stdout)
    assert after["name"] != before.name
    assert txt(world, after["name"]) == [after["value"].encode()] and txt(world, before.name) == [before.value.encode()]
    user = world.add_user(f"rot@{domain}")
    subject = f"rotated-{uuid.uuid4().hex[:6]}"
    submit(world, user, "rotation@example.net", subject)
    message = world.wait_for_outbound(to="rotation@example.net", subject=subject)
    selector = after["name"].split(".", 1)[0]
    assert f"s={selector}" in message["DKIM-Signature"].replace(" ", "").replace("\t", "")
    raw = message.as_bytes(policy=email.policy.SMTP)
    assert dkim.verify(raw, dnsfunc=dns_of(world)) is True


def test_outbound_cli_lists_shows_and_clears(world: MailStack) -> None:
    user = world.add_user()
    subject = f"cli-{uuid.uuid4().hex[:6]}"
    submit(world, user, "cli@example.com", subject)
    world.wait_for_outbound(to="cli@example.com", subject=subject)
    entries = json.loads(run(world, "outbound", "list", "--json").stdout)
    entry = next(e for e in entries if e["subject"] == subject)
    assert set(entry) >= {"id", "from", "to", "subject", "date"} and entry["to"] == ["cli@example.com"]
    shown = run(world, "outbound", "show", entry["id"])
    assert shown.exit_code == 0 and f"Subject: {subject}" in shown.stdout
    assert run(world, "outbound", "show", "no-such-id").exit_code == 1
    assert run(world, "outbound", "clear").exit_code == 0
    assert world.outbound_messages() == []


def test_outside_send_cli_reports_acceptance_and_refusal(world: MailStack) -> None:
    user = world.add_user()
    accepted = run(world, "outside", "send", "--to", user.address, "--spf", "pass", "--subject", "cli-in", "--json")
    assert accepted.exit_code == 0 and json.loads(accepted.stdout)["code"] == 250, accepted.output
    world.wait_for_message(user, subject="cli-in")
    refused = run(world, "outside", "send", "--to", user.address, "--from", "x@dmarc-reject.test", "--spf", "fail")
    assert refused.exit_code == 1 and refused.stdout.startswith("554"), refused.output


def test_a_vacation_reply_reaches_the_outside_sender(world: MailStack) -> None:
    user = world.add_user()
    world.set_sieve(user, 'require "vacation";\nvacation :days 1 :subject "away" "I am away.";\n')
    sender = f"friend-{uuid.uuid4().hex[:6]}@outside.test"
    reply = world.send_from_outside(user.address, from_=sender, spf="pass", subject="are you there?")
    assert reply.accepted, reply
    answer = world.wait_for_outbound(to=sender, subject="away")
    assert str(answer["Auto-Submitted"]).startswith("auto-replied")
    stored = next(m for m in world.outbound_messages() if m.rcpt_tos == (sender,))
    assert stored.mail_from in ("", "<>")  # a vacation reply's envelope sender is <> (RFC 5230)


def test_the_host_probes_agree_with_the_health_checks_and_fail_on_the_wrong_service(world: MailStack) -> None:
    """wait_ready asks each service's health check from the host (stack/netns.py) where the engine runs here:
    each probe passes where its script passes, and fails when pointed at a container that does not serve it
    (the same pid-and-namespace plumbing, another service behind it), so a probe that cannot fail would show."""
    stack = world.stack
    pids = {service: info.pid for service, info in stack.snapshot().items()}
    ids = {service: stack.container(service).id for service in stack.services}
    assert set(netns.HOST_PROBES) <= set(stack.services)
    for service in netns.HOST_PROBES:
        assert stack.probe(service) == (True, "ok"), service  # the script, by docker exec
        assert netns.host_probe(service, pids[service], ids[service]) == (True, "ok"), service
    wrong = {"postfix": "rspamd", "rspamd": "postfix", "dns": "outside"}
    for service, other in wrong.items():
        asked = netns.host_probe(service, pids[other], ids[other])
        assert asked is not None and asked[0] is False and asked[1], (service, other)
    # where there is nothing to ask with (no MariaDB client settings, no auth-userdb socket in that container;
    # not the container's process): None, and wait_ready asks the container itself
    assert netns.host_probe("mysql", pids["dns"], ids["dns"]) is None
    assert netns.host_probe("dovecot", pids["mysql"], ids["mysql"]) is None
    assert netns.host_probe("postfix", pids["postfix"], ids["mysql"]) is None
    # Dovecot's lookup through SQL fails while MariaDB is down, from the host as in the script (the last test of
    # the module: MariaDB and Dovecot are waited for again)
    stack.stop_service("mysql")
    try:
        # (SQL's connect to the stopped container hangs: the probe's 5 s timeout; the script's doveadm waits 60 s)
        asked = netns.host_probe("dovecot", pids["dovecot"], ids["dovecot"])
        assert asked is not None and asked[0] is False, asked
    finally:
        stack.start_service("mysql")
        stack.wait_ready(["mysql", "dovecot"])


def test_rspamd_starts_from_the_hyperscan_cache_built_into_its_image(world: MailStack) -> None:
    """Rspamd 3.4 writes every multipattern database back to its cache after loading it (40 MB for the
    public-suffix list, every start) unless hs-cache-pin.sh's placeholders stop it, and deserializes them into
    new .unser files unless the image has them: the image's databases (pinned when it was built) are as built.
    (Maps that change while the stack runs, a domain or a DKIM selector, compile and save new ones: not these.)"""
    container = world.stack.container("rspamd")
    container.reload()
    started = container.state.started_at.timestamp()
    stat = world.stack.exec("rspamd", ["find", "/var/lib/rspamd", "-maxdepth", "1", "-name", "*.hsmp*",
                                       "-printf", "%f %T@\\n"]).stdout.decode().split("\n")
    mtimes = {name: float(when) for name, when in (line.split() for line in stat if line.strip())}
    built = [name.removesuffix(".tmp") for name, when in mtimes.items()
             if name.endswith(".hsmp.tmp") and when < started]
    assert built, f"no multipattern database pinned in the image's cache: {sorted(mtimes)}"
    for name in built:
        assert name in mtimes and f"{name}.unser" in mtimes, f"{name} or its deserialized copy missing"
        written = [part for part in (name, f"{name}.unser") if mtimes[part] >= started]
        assert written == [], f"written at this start: {written}"
