"""The events writer: a child process of a run that formats event rows and appends them to
``events.csv`` (:class:`pipeline.core.records.EventWriter` starts it). It reads messages from
its standard input, each a header of two int64 (kind, m):

- kind 0: m rows follow as five arrays of m values (worker, version, delay as int64; lr and
  time as float64), formatted and appended as :func:`pipeline.core.records.format_events`
  writes them, and flushed;
- kind 1: a sync: it answers the file's size as one int64 on its standard output.

A thread reads the messages as they come (a run does not wait for the formatting); the rows
are written in the order they were sent. It ends when its input closes, after writing every
row it was sent, so the rows of a run that dies are on disk; it holds the file's lock
(``flock``) until then, so that a resumed run waits for it before it cuts the file back. It
ignores SIGINT and SIGTERM: a Ctrl-C or a signal to the run's process group reaches the run,
which closes the pipe when it is done with its records.

    python -m pipeline.core.eventwriter PATH
"""

from __future__ import annotations

import fcntl
import queue
import signal
import sys
import threading

import numpy as np

from pipeline.core.records import format_events


def _read(f, n: int) -> bytes:
    """Exactly n bytes, or fewer at the end of the input."""
    out = bytearray()
    while len(out) < n:
        b = f.read(n - len(out))
        if not b:
            break
        out += b
    return bytes(out)


def _reader(src, messages: queue.Queue) -> None:
    """Every message of the input onto ``messages`` as (kind, m, body); then None (the end)
    or an error message (a message cut short)."""
    while True:
        header = _read(src, 16)
        if len(header) < 16:
            cut = f"a message cut short ({len(header)} of 16 bytes)" if header else None
            messages.put(cut)
            return
        kind, m = np.frombuffer(header, dtype=np.int64).tolist()
        body = _read(src, 40 * m) if kind == 0 else b""
        if len(body) < 40 * m:
            messages.put(f"{m} rows announced, {len(body) // 40} sent")
            return
        messages.put((kind, m, body))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    answer = sys.stdout.buffer
    messages: queue.Queue = queue.Queue()
    threading.Thread(target=_reader, args=(sys.stdin.buffer, messages), daemon=True).start()
    with open(argv[0], "a", newline="") as out:
        fcntl.flock(out, fcntl.LOCK_EX)  # held until it ends (records.wait_for_writer)
        while True:
            msg = messages.get()
            if msg is None:
                return 0
            if isinstance(msg, str):
                print(f"events writer: {msg}", file=sys.stderr)
                return 1
            kind, m, body = msg
            if kind == 1:
                out.flush()
                answer.write(np.int64(out.tell()).tobytes())
                answer.flush()
                continue
            W, V, D = (np.frombuffer(body, np.int64, m, 8 * m * j) for j in range(3))
            LR, T = (np.frombuffer(body, np.float64, m, 8 * m * j) for j in (3, 4))
            out.write(format_events(W, V, D, LR, T))
            out.flush()


if __name__ == "__main__":
    sys.exit(main())
