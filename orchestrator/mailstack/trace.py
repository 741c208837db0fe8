"""Follow one message through Postfix's and Dovecot's logs (pure: log text in, a Trace out).

Postfix ties a message's lines together by its queue id: smtpd (`client=`, the SASL user), cleanup
(`message-id=`), qmgr (`from=`, size), the delivery agent (`to=`, `status=`), bounce, `removed`. A
recipient refused at RCPT never gets that far: smtpd logs `NOQUEUE: reject: RCPT from ...` in the same
session. Dovecot's LMTP lines carry the session id Postfix's lmtp client logs in the `250 ... Saved`
reply, and the Message-ID (`msgid=<...>`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

_TIME = r"(?P<time>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d)"
_POSTFIX_LINE = re.compile(
    _TIME + r" (?P<host>\S+) (?P<program>postfix[\w/.-]*)\[(?P<pid>\d+)\]: (?P<text>.*)$")
_DOVECOT_LINE = re.compile(
    _TIME + r" (?P<program>[a-z][\w-]*)(?:\((?P<who>[^)]*)\))?(?:<(?P<pid>\d+)>)?(?:<(?P<session>[^>]+)>)?"
    r": (?P<level>[A-Z][a-z]+): (?P<text>.*)$")
# Short (hex) queue ids, and long ones (enable_long_queue_ids: base-52 without vowels).
QUEUE_ID = r"(?:[0-9A-F]{6,12}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{12,20})"
_QUEUE_ID_RE = re.compile(QUEUE_ID)
_QUEUED = re.compile(rf"^(?P<qid>{QUEUE_ID}): (?P<rest>.*)$")
_FIELD = re.compile(r"\b(?P<key>[a-z_]+)=(?P<value><[^>]*>|[^,\s]+)")
_STATUS = re.compile(r"\bstatus=(?P<status>[a-z]+)(?: \((?P<reason>.*)\))?")
_LMTP_SAVED = re.compile(r"^2\d\d [\d.]+ <[^>]*> (?P<session>\S+) Saved")
_REJECT = re.compile(r"^(?:(?P<qid>" + QUEUE_ID + r")|NOQUEUE): (?P<kind>(?:milter-)?reject|discard|hold): "
                     r"(?P<rest>.*)$")
_MSGID_PREFIX = re.compile(r"^msgid=(?:<[^>]*>|\S+): ")
_MONTHS = {name: number for number, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"))}


@dataclass(frozen=True)
class LogLine:
    time: str
    service: str  # "postfix" or "dovecot"
    program: str  # "postfix/submission/smtpd", "lmtp", ...
    pid: str | None
    text: str
    session: str | None = None  # Dovecot's session id
    who: str | None = None  # Dovecot's user / pid in parentheses
    level: str | None = None  # Dovecot's Info / Error / ...
    seq: int = 0  # position in its log


def parse_postfix(text: str) -> list[LogLine]:
    lines = []
    for raw in text.splitlines():
        match = _POSTFIX_LINE.match(raw.strip())
        if match:
            lines.append(LogLine(match["time"], "postfix", match["program"], match["pid"], match["text"],
                                 seq=len(lines)))
    return lines


def parse_dovecot(text: str) -> list[LogLine]:
    lines = []
    for raw in text.splitlines():
        match = _DOVECOT_LINE.match(raw.strip())
        if match:
            lines.append(LogLine(match["time"], "dovecot", match["program"], match["pid"], match["text"],
                                 match["session"], match["who"], match["level"], seq=len(lines)))
    return lines


def fields(text: str) -> dict[str, str]:
    """`key=value` pairs of a Postfix line (first occurrence wins; <...> kept without brackets)."""
    found: dict[str, str] = {}
    for match in _FIELD.finditer(text):
        found.setdefault(match["key"], match["value"].strip("<>"))
    return found


def is_queue_id(value: str) -> bool:
    return _QUEUE_ID_RE.fullmatch(value) is not None


@dataclass(frozen=True)
class Event:
    time: str
    source: str
    what: str
    order: tuple[tuple[int, int, str], int, int] = field(default=((0, 0, ""), 0, 0), compare=False, repr=False)

    @classmethod
    def at(cls, line: LogLine, source: str, what: str) -> Event:
        """An event from a log line, ordered by time, then Postfix before Dovecot, then log position."""
        return cls(line.time, source, what, (_sort_key(line.time), 0 if line.service == "postfix" else 1, line.seq))

    def as_dict(self) -> dict[str, str]:
        return {"time": self.time, "source": self.source, "what": self.what}


@dataclass(frozen=True)
class Delivery:
    time: str
    queue_id: str
    recipient: str
    orig_to: str | None
    status: str  # sent, deferred, bounced, expired, ...
    dsn: str | None
    relay: str | None
    reason: str


@dataclass
class Trace:
    query: str
    queue_ids: list[str] = field(default_factory=list)
    message_id: str | None = None
    client: str | None = None
    sasl_user: str | None = None
    sender: str | None = None
    size: int | None = None
    deliveries: list[Delivery] = field(default_factory=list)
    saved: dict[str, str] = field(default_factory=dict)  # recipient -> mailbox
    rejections: list[str] = field(default_factory=list)
    dovecot_errors: list[str] = field(default_factory=list)
    removed: bool = False
    events: list[Event] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return bool(self.events)

    def final(self) -> dict[str, Delivery]:
        """The last delivery attempt per recipient."""
        last: dict[str, Delivery] = {}
        for delivery in self.deliveries:
            last[delivery.recipient] = delivery
        return last

    def outcome(self) -> list[str]:
        """One line per recipient (or for the whole message): where it got to, or why it did not."""
        lines = []
        for recipient, delivery in self.final().items():
            via = f" (sent to {delivery.orig_to})" if delivery.orig_to and delivery.orig_to != recipient else ""
            if delivery.status == "sent":
                where = self.saved.get(recipient)
                lines.append(f"delivered to {recipient}{via}" + (f", saved to {where}" if where else ""))
            elif delivery.status == "deferred":
                still = "" if self.removed else "; still in the queue, Postfix retries"
                lines.append(f"deferred for {recipient}{via}: {delivery.reason}{still}")
            else:
                lines.append(f"{delivery.status} for {recipient}{via}: {delivery.reason}")
        lines.extend(f"rejected: {rejection}" for rejection in self.rejections)
        if not lines and self.queue_ids and self.events:
            lines.append("in the queue; no delivery attempt logged yet" if not self.removed
                         else "left the queue without a logged delivery")
        lines.extend(f"dovecot: {error}" for error in self.dovecot_errors if not self._delivered_all())
        return lines

    def _delivered_all(self) -> bool:
        final = self.final()
        return bool(final) and all(d.status == "sent" for d in final.values())

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["events"] = [event.as_dict() for event in self.events]
        data["outcome"] = self.outcome()
        return data


def trace(query: str, postfix_log: str, dovecot_log: str = "") -> Trace:
    """Everything the logs say about one message, found by queue id or Message-ID. When neither matches,
    rejections involving `query` as an address (from=<...> or to=<...>) are reported instead."""
    query = query.strip()
    postfix = parse_postfix(postfix_log)
    dovecot = parse_dovecot(dovecot_log)
    result = Trace(query)
    wanted_id = query.strip("<>")
    if is_queue_id(query):
        result.queue_ids = [query]
    else:
        result.queue_ids = _queue_ids_for_message_id(postfix, wanted_id)
        if result.queue_ids:
            result.message_id = wanted_id
    if result.queue_ids:
        _follow_queue_ids(result, postfix)
        _follow_sessions(result, postfix)
        _follow_dovecot(result, dovecot)
    else:
        _rejections_for_address(result, postfix, wanted_id.lower())
    result.events.sort(key=lambda event: event.order)
    return result


def _sort_key(time: str) -> tuple[int, int, str]:
    month, day, clock = time.split()
    return _MONTHS.get(month, 0), int(day), clock


def _queue_ids_for_message_id(lines: list[LogLine], message_id: str) -> list[str]:
    found: list[str] = []
    for line in lines:
        match = _QUEUED.match(line.text)
        if match and match["rest"].startswith("message-id=") and match["rest"][len("message-id="):].strip(
                "<>") == message_id and match["qid"] not in found:
            found.append(match["qid"])
    return found


def _follow_queue_ids(result: Trace, lines: list[LogLine]) -> None:
    for line in lines:
        match = _QUEUED.match(line.text)
        if not match or match["qid"] not in result.queue_ids:
            continue
        qid, rest = match["qid"], match["rest"]
        what = _describe(result, line, qid, rest)
        result.events.append(Event.at(line, line.program, what))


def _describe(result: Trace, line: LogLine, qid: str, rest: str) -> str:
    """Record what a queue-id line tells, and say it in a few words."""
    values = fields(rest)
    daemon = line.program.rsplit("/", 1)[-1]
    reject = _REJECT.match(f"{qid}: {rest}")
    if reject:
        reason = _reject_reason(reject["rest"])
        result.rejections.append(reason)
        return f"{reject['kind']}: {reason}"
    if rest.startswith("client="):
        result.client = values.get("client")
        result.sasl_user = values.get("sasl_username") or result.sasl_user
        port = line.program.split("/")[1] if line.program.count("/") == 2 else "smtp"
        who = f", authenticated as {result.sasl_user}" if values.get("sasl_username") else ""
        return f"accepted by smtpd ({port}) from {result.client}{who}"
    if rest.startswith("message-id="):
        message_id = rest[len("message-id="):].strip().strip("<>")
        result.message_id = result.message_id or message_id or None
        return f"cleanup: message-id <{message_id}>" if message_id else "cleanup: no Message-ID header"
    if daemon == "qmgr" and rest.strip() == "removed":
        result.removed = True
        return "removed from the queue"
    if "status=" in rest and "to=" in rest:
        status = _STATUS.search(rest)
        delivery = Delivery(
            time=line.time, queue_id=qid, recipient=values.get("to", ""), orig_to=values.get("orig_to"),
            status=status["status"] if status else values.get("status", "?"), dsn=values.get("dsn"),
            relay=values.get("relay"), reason=(status["reason"] or "") if status else "",
        )
        result.deliveries.append(delivery)
        via = f" (orig_to {delivery.orig_to})" if delivery.orig_to else ""
        return f"{daemon}: to {delivery.recipient}{via}: {delivery.status} ({delivery.reason})"
    if daemon == "qmgr" and rest.startswith("from="):
        retry = result.sender is not None
        result.sender = values.get("from", "")
        if "size" in values and values["size"].isdigit():
            result.size = int(values["size"])
        if "status" in values:  # e.g. status=expired, returned to sender
            return f"qmgr: from <{result.sender}>: {rest.split('status=', 1)[1]}"
        if retry:
            return "qmgr: back in the active queue for another attempt"
        return f"qmgr: queued from <{result.sender}>, {values.get('size', '?')} bytes, " \
               f"{values.get('nrcpt', '?')} recipient(s)"
    if "sender non-delivery notification:" in rest:
        return f"bounce: non-delivery notice to the sender queued as {rest.rsplit(':', 1)[1].strip()}"
    return f"{daemon}: {rest}"


def _reject_reason(rest: str) -> str:
    """'RCPT from host[ip]: 550 5.1.1 <x>: Recipient address rejected: ...; from=<a> to=<b> ...' ->
    'RCPT to <b>: 550 5.1.1 <x>: Recipient address rejected: ...'."""
    head, _, tail = rest.partition("; from=")
    values = fields("from=" + tail) if tail else {}
    stage, _, reply = head.partition(": ")
    stage_word = stage.split(" from ")[0]
    target = f" to <{values['to']}>" if "to" in values else (f" from <{values['from']}>" if "from" in values
                                                              else "")
    return f"{stage_word}{target}: {reply or head}"


def _follow_sessions(result: Trace, lines: list[LogLine]) -> None:
    """Rejections in the smtpd session that queued the message (other recipients refused at RCPT)."""
    for index, line in enumerate(lines):
        match = _QUEUED.match(line.text)
        if not (match and match["qid"] in result.queue_ids and match["rest"].startswith("client=")):
            continue
        for other in _session(lines, index):
            reject = _REJECT.match(other.text)
            if reject and reject.group("qid") is None:
                reason = _reject_reason(reject["rest"])
                result.rejections.append(reason)
                result.events.append(Event.at(other, other.program, f"{reject['kind']}: {reason}"))


def _session(lines: list[LogLine], index: int) -> list[LogLine]:
    """The lines of the smtpd session (same program and pid) around lines[index]."""
    anchor = lines[index]
    same = [i for i, line in enumerate(lines) if line.program == anchor.program and line.pid == anchor.pid]
    position = same.index(index)
    start = position
    while start > 0 and not lines[same[start]].text.startswith("connect from "):
        start -= 1
    end = position
    while end < len(same) - 1 and not lines[same[end]].text.startswith("disconnect from "):
        end += 1
    return [lines[i] for i in same[start:end + 1]]


def _follow_dovecot(result: Trace, lines: list[LogLine]) -> None:
    """Dovecot's LMTP lines for this message: by the session ids Postfix logged, or by Message-ID."""
    sessions = set()
    for delivery in result.deliveries:
        match = _LMTP_SAVED.match(delivery.reason)
        if match:
            sessions.add(match["session"])
    if result.message_id:
        marker = f"msgid=<{result.message_id}>"
        sessions.update(line.session for line in lines if line.session and marker in line.text)
    for line in lines:
        if line.session is None or line.session not in sessions:
            continue
        text = _MSGID_PREFIX.sub("", line.text)
        recipient = line.who or "?"
        saved = re.match(r"saved mail to (?P<mailbox>.+)$", text)
        if saved:
            result.saved[recipient] = saved["mailbox"]
        elif line.level in ("Error", "Fatal", "Panic", "Warning"):
            result.dovecot_errors.append(f"{recipient}: {text}")
        result.events.append(Event.at(line, f"dovecot/{line.program}", f"{recipient}: {text}"))


def _rejections_for_address(result: Trace, lines: list[LogLine], address: str) -> None:
    if "@" not in address:
        return
    for line in lines:
        reject = _REJECT.match(line.text)
        if not reject:
            continue
        values = fields("from=" + reject["rest"].partition("; from=")[2])
        if address in (values.get("to", "").lower(), values.get("from", "").lower()):
            reason = _reject_reason(reject["rest"])
            result.rejections.append(reason)
            result.events.append(Event.at(line, line.program, f"{reject['kind']}: {reason}"))
