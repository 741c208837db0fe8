"""Asking a container's network namespace from the host, without `docker exec`.

wait_ready polls every 50 ms per service while a stack starts, so a poll must cost next to nothing, and the
final probe should not cost a `docker exec` (~0.1 s of CPU in the CLI, dockerd, runc and the shim, and its
latency while six containers start on two cores is the last thing a start waits for). Two tools, both working
from a socket made inside the container's network namespace (a short-lived thread enters it: setns(2) changes
only the calling thread's namespace; the socket stays in the namespace it was made in):

- listening(): which ports listen, by a sock_diag dump (netlink, what `ss -l` uses) of listening sockets
  only. Not /proc/<pid>/net/tcp: the kernel walks its whole established-connection hash to write that file,
  ~5.5 ms of CPU per read on this 24 GiB machine (the hash is sized by RAM and shared by every namespace);
  polling tcp and tcp6 for six services at 20 Hz kept one of the two cores busy during a start.
- HOST_PROBES: each service's healthcheck.sh as the same conversation from the host: over a socket connected
  to 127.0.0.1 in the container's namespace, or a unix socket reached through /proc/<pid>/root. Each one says
  which script it stands for; the scripts stay what Docker runs (`docker compose up`, `mailstack status`) and
  what a service without a host probe (webmail) is probed with.

Everything here returns None where this machine cannot look (the engine runs elsewhere: Docker Desktop,
DOCKER_HOST; no privilege to enter a namespace; the pid is not that container's): the caller then asks the
container itself.
"""

from __future__ import annotations

import configparser
import ctypes
import ctypes.util
import os
import secrets
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path

import pymysql

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
CLONE_NEWNET = 0x40000000
TCP_LISTEN, TCP_CLOSE = 10, 7  # a listening TCP socket; a bound, unconnected UDP socket
_HEADER = struct.Struct("=IHHII")  # struct nlmsghdr
_REQUEST = struct.Struct("=BBBBI48x")  # struct inet_diag_req_v2: family, protocol, ext, pad, states, sockid
_SPORT = struct.Struct("!H")  # inet_diag_msg.id.idiag_sport, network order, at offset 4
PROBE_TIMEOUT = 5.0  # as the health checks' own (`read -t 5`, `timeout 3` + connect)

_libc: list[ctypes.CDLL] = []


def listening(pid: int, container_id: str, protocol: str, ports: Sequence[int]) -> bool | None:
    """Whether every port listens in the container whose main process is `pid` (TCP: listening; UDP: bound)."""
    diag = namespace_socket(pid, container_id, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    if diag is None:
        return None
    with diag:
        try:
            found = _bound_ports(diag, socket.AF_INET, protocol) | _bound_ports(diag, socket.AF_INET6, protocol)
        except OSError:
            return None
    return all(port in found for port in ports)


def runs_in(pid: int, container_id: str) -> bool:
    """Whether `pid` is a live process of that container, as this machine's /proc tells (False where it cannot)."""
    try:
        return bool(pid and container_id) and container_id in Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False


def namespace_socket(pid: int, container_id: str, family: int, kind: int, protocol: int = 0) -> socket.socket | None:
    """A new socket in the network namespace of `pid`, which must be a process of that container."""
    if not runs_in(pid, container_id):
        return None
    made: list[socket.socket | None] = [None]

    def enter_and_open() -> None:  # this thread's namespace only; the thread ends right after
        with suppress(OSError), open(f"/proc/{pid}/ns/net", "rb") as namespace:
            if _setns(namespace.fileno(), CLONE_NEWNET) == 0:
                made[0] = socket.socket(family, kind, protocol)

    thread = threading.Thread(target=enter_and_open, name="netns-socket", daemon=True)
    thread.start()
    thread.join()
    return made[0]


def _setns(fd: int, nstype: int) -> int:
    if not _libc:
        _libc.append(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True))
    return _libc[0].setns(fd, nstype)


def _bound_ports(diag: socket.socket, family: int, protocol: str) -> set[int]:
    proto, state = (socket.IPPROTO_TCP, TCP_LISTEN) if protocol == "tcp" else (socket.IPPROTO_UDP, TCP_CLOSE)
    body = _REQUEST.pack(family, proto, 0, 0, 1 << state)
    diag.sendall(_HEADER.pack(_HEADER.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + body)
    ports: set[int] = set()
    while True:
        data = diag.recv(65536)
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, kind, _flags, _seq, _pid = _HEADER.unpack_from(data, offset)
            if kind == NLMSG_DONE:
                return ports
            if kind == NLMSG_ERROR:
                error = -struct.unpack_from("=i", data, offset + _HEADER.size)[0]
                raise OSError(error, os.strerror(error))
            if kind == SOCK_DIAG_BY_FAMILY:
                ports.add(_SPORT.unpack_from(data, offset + _HEADER.size + 4)[0])
            if length < _HEADER.size:
                raise OSError("malformed netlink reply")
            offset += (length + 3) & ~3


def _connected(pid: int, container_id: str, port: int, kind: int = socket.SOCK_STREAM) -> socket.socket | None:
    """A socket connected to 127.0.0.1:`port` inside the container (what its health check opens)."""
    sock = namespace_socket(pid, container_id, socket.AF_INET, kind)
    if sock is None:
        return None
    sock.settimeout(PROBE_TIMEOUT)
    sock.connect(("127.0.0.1", port))
    return sock


def smtp_greeting(pid: int, container_id: str) -> tuple[bool, str] | None:
    """images/postfix/healthcheck.sh (its ports come first: LISTEN_FIRST): smtpd's greeting on port 25."""
    sock = _connected(pid, container_id, 25)
    if sock is None:
        return None
    with sock, sock.makefile("rb") as replies:
        greeting = replies.readline(512).decode(errors="replace").strip()
        with suppress(OSError):
            sock.sendall(b"QUIT\r\n")
    return (True, "ok") if greeting.startswith("220") else (False, f"smtpd greeting: {greeting or 'none'}")


# SMFIC_OPTNEG for milter protocol 6 (length 13, 'O', version 6, actions 0x1ff, protocol steps 0x1fffff), then
# SMFIC_QUIT: the bytes images/rspamd/healthcheck.sh writes.
MILTER_OPTNEG = bytes.fromhex("0000000d4f00000006000001ff001fffff")
MILTER_QUIT = bytes.fromhex("0000000151")


def milter_negotiation(pid: int, container_id: str) -> tuple[bool, str] | None:
    """images/rspamd/healthcheck.sh (ports 11332 and 11334 first): the proxy answers an option negotiation."""
    sock = _connected(pid, container_id, 11332)
    if sock is None:
        return None
    with sock:
        sock.sendall(MILTER_OPTNEG)
        reply = b""
        while len(reply) < 5 and (chunk := sock.recv(5 - len(reply))):
            reply += chunk
        with suppress(OSError):
            sock.sendall(MILTER_QUIT)
    ok = reply == MILTER_OPTNEG[:5]
    return (True, "ok") if ok else (False, f"milter on 11332 answered '{reply.hex() or 'nothing'}'")


def dns_answer(pid: int, container_id: str) -> tuple[bool, str] | None:
    """In place of images/dns/healthcheck.sh (unbound-control status; UDP 53 bound first): unbound answers a
    query on port 53, which says more than its control socket does. Any reply to our id counts (the name is
    in no zone: NXDOMAIN, at once)."""
    sock = _connected(pid, container_id, 53, socket.SOCK_DGRAM)
    if sock is None:
        return None
    query_id = secrets.randbits(16)
    name = b"".join(bytes([len(label)]) + label for label in (b"health", b"mailstack", b"invalid")) + b"\0"
    with sock:
        sock.send(struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + name + struct.pack("!HH", 1, 1))
        reply = sock.recv(512)
    ok = len(reply) >= 12 and struct.unpack_from("!H", reply)[0] == query_id and reply[2] & 0x80
    return (True, "ok") if ok else (False, f"unbound's reply to a query: {reply[:12].hex() or 'none'}")


def sql_tables(pid: int, container_id: str) -> tuple[bool, str] | None:
    """images/mysql/healthcheck.sh (3306 first): the mail database has its tables, asked as the script asks
    (its client settings, /run/mysqld/health.cnf and health.db, read through the container's root)."""
    root = Path(f"/proc/{pid}/root/run/mysqld")
    try:
        client = configparser.ConfigParser(interpolation=None)
        client.read_string((root / "health.cnf").read_text())
        database = (root / "health.db").read_text().strip()
    except (OSError, configparser.Error):
        return None
    sock = _connected(pid, container_id, 3306)
    if sock is None:
        return None
    connection = pymysql.connect(user=client.get("client", "user", fallback=""), ssl_disabled=True,
                                 password=client.get("client", "password", fallback=""), defer_connect=True,
                                 read_timeout=PROBE_TIMEOUT, write_timeout=PROBE_TIMEOUT)
    try:
        connection.connect(sock)
        with connection.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", (database,))
            (tables,) = cursor.fetchone()
    except pymysql.err.MySQLError as exc:
        return False, f"MariaDB: {exc.args[-1]}"
    finally:
        with suppress(pymysql.err.Error, OSError):
            connection.close()
        sock.close()
    return (True, "ok") if tables else (False, f"database {database} has no tables")


def userdb_lookup(pid: int, container_id: str) -> tuple[bool, str] | None:
    """images/dovecot/healthcheck.sh (993, 995, 4190 first): a user lookup through SQL answers (found or not
    found; a failure is an SQL error), over the auth-userdb socket `doveadm user` uses, reached through the
    container's root."""
    base_dir = Path(f"/proc/{pid}/root/run/dovecot")
    userdb = base_dir / "auth-userdb"
    if not runs_in(pid, container_id):
        return None
    if not userdb.is_socket():
        # Dovecot's master makes it moments after its inet listeners. Without master.pid beside it, this is
        # another base_dir (a production copy's configuration), which only the script, by docker exec, knows.
        return (False, "auth-userdb not there yet") if (base_dir / "master.pid").exists() else None
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(PROBE_TIMEOUT)
        sock.connect(str(userdb))
        sock.sendall(b"VERSION\t1\t0\nUSER\t1\thealthcheck@mailstack.invalid\tservice=doveadm\n")
        with sock.makefile("rb") as replies:
            for raw in replies:
                reply = raw.decode(errors="replace").rstrip("\n").split("\t")
                if reply[:2] in (["USER", "1"], ["NOTFOUND", "1"]):
                    return True, "ok"
                if reply[:2] == ["FAIL", "1"]:
                    return False, f"auth lookup through SQL failed: {' '.join(reply[2:]) or 'FAIL'}"
    return False, "no answer from auth-userdb"


def ports_only(pid: int, container_id: str) -> tuple[bool, str] | None:
    """images/outside/healthcheck.sh is its port listening, which LISTEN_FIRST has just seen."""
    return True, "ok"


HostProbe = Callable[[int, str], "tuple[bool, str] | None"]
HOST_PROBES: dict[str, HostProbe] = {
    "mysql": sql_tables,
    "dovecot": userdb_lookup,
    "postfix": smtp_greeting,
    "rspamd": milter_negotiation,
    "dns": dns_answer,
    "outside": ports_only,
}


def host_probe(service: str, pid: int, container_id: str) -> tuple[bool, str] | None:
    """The service's readiness asked from the host, or None (no host probe for it, or none possible here)."""
    probe = HOST_PROBES.get(service)
    if probe is None:
        return None
    try:
        return probe(pid, container_id)
    except OSError as exc:  # refused, reset, timed out: not ready yet
        return False, f"{service}: {exc}"
