"""A long run's event rows go to a writer process (pipeline/core/eventwriter.py): the file is
the one this process would write, byte for byte; a checkpoint's size is what is on disk; the
child writes every row it got when the run dies, holds the file until then, and a resumed run
waits for it; a writer that dies fails the run in one line."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import pipeline.core.records as records
from pipeline import PROJECT_ROOT
from pipeline.core.records import RunRecorder, format_events


def _columns(m: int, seed: int):
    rng = np.random.default_rng(seed)
    W = rng.integers(0, 1000, m)
    V = np.arange(m) + 10 * seed
    D = rng.integers(0, 3000, m)
    LR = np.where(rng.random(m) < 0.1, 0.0, 1e-3)  # a few discarded
    T = np.cumsum(rng.standard_exponential(m)) * 0.37
    return W, V, D, LR, T


def _write(outdir, chunks, writer: bool):
    rec = RunRecorder(outdir)
    if writer:
        rec.start_writer()
    for c in chunks:
        rec.write_columns(c)
    state = rec.state()
    rec.close()
    return rec, state


def test_the_writer_writes_the_same_file(tmp_path):
    chunks = [_columns(m, s) for s, m in enumerate([5000, 1, 70000, 3])]
    inproc, s1 = _write(tmp_path / "a", chunks, writer=False)
    child, s2 = _write(tmp_path / "b", chunks, writer=True)
    a, b = ((tmp_path / d / "events.csv").read_bytes() for d in "ab")
    assert a == b and len(a.splitlines()) == 1 + 75004
    assert s1 == s2 and s2["events_bytes"] == len(b)  # a checkpoint's size: what is on disk
    assert (inproc.n_events, inproc.n_applied, inproc.max_delay, inproc.sum_delay) == (
        child.n_events, child.n_applied, child.max_delay, child.sum_delay)  # fmt: skip
    # one line of the file, formatted by hand
    w, v, d, lr, t = (float(c[0]) if c.dtype.kind == "f" else int(c[0]) for c in chunks[0])
    assert b.splitlines()[1].decode() == f"{w},{v},{d},{int(lr != 0)},{lr!r},{t!r}"


def test_a_long_run_hands_its_rows_to_a_writer(tmp_path, monkeypatch):
    """From WRITER_ROWS rows on (a run that expects as many starts it at once): the records are
    those of a run written in process."""
    from pipeline.runner import run_experiment
    from tests.conftest import compose_cfg

    cfg = compose_cfg("~experiment", "objective=noisy_quadratic", "dataset=none", "tracking=none",
                      "optimizer=asgd", "optimizer.lr=0.01", "topology=sqrt",
                      "topology.n_workers=50", "topology.noise=exponential",
                      "budget.gradients=3000", "eval_every=100")  # fmt: skip
    started = []
    real = RunRecorder.start_writer

    def spy(self):
        real(self)
        started.append(self._writer.proc.pid)

    monkeypatch.setattr(RunRecorder, "start_writer", spy)
    monkeypatch.setattr(records, "WRITER_ROWS", 10**9)
    run_experiment(cfg, tmp_path / "inproc")
    assert started == []
    monkeypatch.setattr(records, "WRITER_ROWS", 1000)
    run_experiment(cfg, tmp_path / "child")
    assert len(started) == 1
    for f in ("events.csv", "history.csv", "summary.json"):
        assert (tmp_path / "inproc" / f).read_bytes() == (tmp_path / "child" / f).read_bytes(), f
    with pytest.raises(ProcessLookupError):  # the child is gone once the run ends
        os.kill(started[0], 0)


_DIES = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from pipeline.core.records import RunRecorder
    rec = RunRecorder(sys.argv[1])
    rec.start_writer()
    rng = np.random.default_rng(0)
    for k in range(20):
        m = 20000
        rec.write_columns((rng.integers(0, 9, m), np.arange(m) + k * m, rng.integers(0, 9, m),
                           np.full(m, 0.5), np.cumsum(rng.random(m)) + k))
    print(rec._writer.proc.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_killed_run_s_writer_writes_every_row_then_ends(tmp_path):
    """SIGKILL to the run: its writer, left alone, writes every row it was handed (400,000)
    and ends; a recorder for the same folder waits for it before it touches the file."""
    out = subprocess.run([sys.executable, "-c", _DIES, str(tmp_path)], cwd=PROJECT_ROOT,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == -signal.SIGKILL, out.stderr
    pid = int(out.stdout.split()[0])
    records.wait_for_writer(tmp_path / "events.csv", timeout=300)
    lines = (tmp_path / "events.csv").read_text().splitlines()
    assert len(lines) == 1 + 400000 and lines[-1].startswith(tuple("012345678"))
    assert lines[-1].split(",")[1] == "399999"
    deadline = time.monotonic() + 60  # the lock is released as it exits: it ends at once
    while os.path.exists(f"/proc/{pid}") and _state(pid) not in ("Z", "X"):
        assert time.monotonic() < deadline, "the writer did not end"
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except FileNotFoundError:
        return "X"
    return stat.rsplit(")", 1)[1].split()[0]


def test_a_resumed_recorder_waits_for_the_writer_s_lock(tmp_path):
    """While another process's writer holds events.csv (here: this test holds its lock), a
    recorder resuming the folder does not cut the file; once it is free, it does."""
    first = RunRecorder(tmp_path)
    first.write_columns(_columns(10, 1))
    state = first.state()
    first.write_columns(_columns(10, 2))  # rows after the checkpoint
    first.close()
    path = tmp_path / "events.csv"
    size = path.stat().st_size
    held = open(path, "rb")  # noqa: SIM115
    fcntl.flock(held, fcntl.LOCK_EX)
    done = threading.Event()

    def resume():
        RunRecorder(tmp_path, resume=state).close()
        done.set()

    t = threading.Thread(target=resume)
    t.start()
    try:
        assert not done.wait(0.5)
        assert path.stat().st_size == size  # not cut while the lock is held
    finally:
        fcntl.flock(held, fcntl.LOCK_UN)
        held.close()
    t.join(60)
    assert done.is_set() and path.stat().st_size == state["events_bytes"] < size


def test_a_writer_that_died_fails_the_run_in_one_line(tmp_path):
    rec = RunRecorder(tmp_path)
    rec.start_writer()
    rec.write_columns(_columns(100, 0))
    rec._writer.proc.kill()
    rec._writer.proc.wait()
    with pytest.raises(RuntimeError, match=r"^the events writer \(pid \d+\) exited with -9$"):
        for _ in range(50):  # the pipe may take a write or two before it breaks
            rec.write_columns(_columns(20000, 1))
    with pytest.raises(RuntimeError, match="the events writer"):
        rec.close()


def test_the_writer_refuses_a_message_cut_short(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("worker,version,delay,applied,lr,time\n")
    msg = np.array([0, 3], dtype=np.int64).tobytes() + b"\0" * 50  # 3 rows need 120 bytes
    out = subprocess.run([sys.executable, "-m", "pipeline.core.eventwriter", str(path)],
                         input=msg, capture_output=True, cwd=PROJECT_ROOT, timeout=60)  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.decode().strip() == "events writer: 3 rows announced, 1 sent"
    W, V, D, LR, T = _columns(2, 0)
    body = b"".join(np.ascontiguousarray(c, dtype=dt).tobytes() for c, dt in
                    ((W, np.int64), (V, np.int64), (D, np.int64), (LR, np.float64),
                     (T, np.float64)))  # fmt: skip
    sync = np.array([1, 0], dtype=np.int64).tobytes()
    out = subprocess.run([sys.executable, "-m", "pipeline.core.eventwriter", str(path)],
                         input=np.array([0, 2], dtype=np.int64).tobytes() + body + sync,
                         capture_output=True, cwd=PROJECT_ROOT, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    text = "worker,version,delay,applied,lr,time\n" + format_events(W, V, D, LR, T)
    assert path.read_text() == text
    assert int(np.frombuffer(out.stdout, dtype=np.int64)[0]) == len(text.encode())
