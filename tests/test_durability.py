"""SIGKILL, which no handler sees, to a real ``python -m pipeline.train``: what is on disk is a
clean prefix of what an uninterrupted run writes (headers from the first moment), and
summary.json says ``running`` (written at start); finals come from the final iterate."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import PROJECT_ROOT
from pipeline.core.records import EVENT_COLUMNS, read_history
from tests.conftest import run_cli

ARGS = (  # small_lstsq, 4 workers: a run that would go on for hours
    "optimizer=asgd", "dataset=small_lstsq", "topology.n_workers=4", "batch_size=8",
    "optimizer.lr=0.01", "eval_every=1000", "progress=off", "tracking=none",
)  # fmt: skip
HANG_GUARD_S = 180  # not a speed assertion: a guard against a test that would wait for ever


def _complete_lines(path: Path) -> list[str]:
    """The file's lines, without a last line cut short by the kill."""
    text = path.read_text()
    lines = text.split("\n")
    return lines[:-1]  # a complete file ends with "\n": the last piece is "" or partial


def test_sigkill_leaves_headers_a_clean_prefix_and_a_running_summary(tmp_path, small_data):
    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "pipeline.train", *ARGS, f"dataset.path={small_data}",
           "budget.gradients=1000000000000", f"hydra.run.dir={run}"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env={**os.environ, "CI": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + HANG_GUARD_S
        events = run / "events.csv"
        # the header is there before the first row
        while not (events.exists() and events.stat().st_size > 0):
            assert proc.poll() is None and time.monotonic() < deadline, "never started"
            time.sleep(0.05)
        assert events.read_text().startswith(",".join(EVENT_COLUMNS) + "\n")
        while len(events.read_text().splitlines()) < 3:
            assert proc.poll() is None and time.monotonic() < deadline, "never recorded"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=HANG_GUARD_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "running" and summary["method"] == "asgd"
    assert json.loads((run / "run.json").read_text())["pid"] == proc.pid
    killed_events = _complete_lines(run / "events.csv")
    killed_history = _complete_lines(run / "history.csv")
    n = len(killed_events) - 1
    assert n >= 2 and len(killed_history) >= 2  # header + update 0 at least
    # the same run, uninterrupted and longer: the killed files are its prefix, line for line
    ref = tmp_path / "ref"
    out = run_cli(*ARGS, f"dataset.path={small_data}", f"budget.gradients={n + 70000}",
                  f"hydra.run.dir={ref}")  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    ref_events = (ref / "events.csv").read_text().split("\n")
    ref_history = (ref / "history.csv").read_text().split("\n")
    assert killed_events == ref_events[: len(killed_events)]
    assert len(killed_history) < len(ref_history) - 1
    assert killed_history == ref_history[: len(killed_history)]


def test_finals_are_the_last_iterate_whatever_the_cadence(tmp_path, small_data):
    """A run whose last update is not an evaluation point ends with one: history's last row is
    at ``updates``, and the finals are that row (``final_update`` says which iterate)."""
    out = run_cli(*ARGS, f"dataset.path={small_data}", "budget.gradients=2345",
                  f"hydra.run.dir={tmp_path}")  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    last = read_history(tmp_path / "history.csv")[-1]
    assert summary["status"] == "finished" and summary["updates"] == 2345
    assert int(last["update"]) == summary["final_update"] == 2345
    assert summary["final_loss"] == last["loss"]
    assert summary["final_suboptimality"] == pytest.approx(last["suboptimality"], rel=0, abs=0)
