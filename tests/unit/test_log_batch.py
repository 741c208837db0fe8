"""images/postfix/log-batch.pl, the pipe between Postfix's log and Docker, run for real under perl: it must
pass every byte on in order, end only after writing everything, and write in batches (at most one write
per pause), which is what it is there for."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

BATCHER = Path(__file__).resolve().parents[2] / "images" / "postfix" / "log-batch.pl"
PAUSE_MS = 50

pytestmark = pytest.mark.skipif(shutil.which("perl") is None, reason="perl not installed (Debian always has it)")


def _run(lines: list[bytes], gap: float) -> tuple[bytes, int, float, int]:
    """Write `lines` one write each, `gap` seconds apart; returns what came out, in how many reads (each
    read takes what one write of the batcher put into the pipe, or more), the seconds it took, exit code."""
    batcher = subprocess.Popen(["perl", str(BATCHER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               env={**os.environ, "MAILSTACK_LOG_BATCH_MS": str(PAUSE_MS)})
    assert batcher.stdin and batcher.stdout
    chunks: list[bytes] = []

    def read_all() -> None:
        while chunk := os.read(batcher.stdout.fileno(), 1 << 20):
            chunks.append(chunk)

    reader = threading.Thread(target=read_all)
    reader.start()
    started = time.monotonic()
    for line in lines:
        os.write(batcher.stdin.fileno(), line)
        time.sleep(gap)  # the pace of a busy mail log, not synchronisation
    batcher.stdin.close()
    code = batcher.wait(timeout=10)
    reader.join(timeout=10)
    return b"".join(chunks), len(chunks), time.monotonic() - started, code


def test_every_line_comes_out_in_order_and_it_ends_at_end_of_input() -> None:
    lines = [f"Nov 26 12:00:00 mail postfix/qmgr[{n}]: queue id {n}: removed ü\n".encode() for n in range(2000)]
    out, _, _, code = _run(lines, gap=0)
    assert code == 0
    assert out == b"".join(lines)


def test_writes_in_batches_not_once_per_line() -> None:
    lines = [f"line {n}\n".encode() for n in range(200)]
    out, reads, took, _ = _run(lines, gap=0.002)
    assert out == b"".join(lines)
    # one write per pause at most (a loaded machine only makes the pauses longer), plus the first one
    assert reads <= took / (PAUSE_MS / 1000) + 2, f"{reads} writes in {took:.2f}s"
    assert reads < len(lines) / 4
