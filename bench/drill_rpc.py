"""Fault drill for ``engine=rpc``: real runs, real signals, at random moments.

    python bench/drill_rpc.py --repeats 5 [--out bench/results/] [--table drill.md]

Writes its figures as JSON (default bench/results/drill_rpc.json; ``--out``: a ``.json`` file or
a folder; an ``--out`` ending in ``.md`` is taken as ``--table``, as before) and, with
``--table``, the markdown table of RELIABILITY.md.

Scenarios (each repeated with different moments, drawn from a seeded generator):
- ``kill-worker``: SIGKILL to one worker process after a random number of jobs (asgd). Expected:
  the run meets its budget with the others, the failure is in summary.json, exit 0.
- ``sigterm-server``: SIGTERM to the server after a random number of jobs. Expected: exit 143,
  status killed, MLflow run KILLED, records readable.
- ``sigstop-worker``: SIGSTOP to one worker for longer than ``engine.job_timeout``. Expected:
  that worker is lost after its job's deadline, the run meets its budget, exit 0.
- ``taken-port``: ``engine.master_port`` set to a port another socket holds. Expected: exit 2
  with one error line, at once (before any worker starts).
For each run: did it end as expected, how long from the fault to the end (or to the detection,
for lost workers), whether any process of the run was left, whether any record was lost (rows of
events.csv against summary.json's gradients; history.csv readable).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._meta import Measurement, out_file, write  # noqa: E402
from pipeline.core.records import read_events, read_history  # noqa: E402

KINDS = ("kill-worker", "sigterm-server", "sigstop-worker", "taken-port")
UNITS = {"repeats": "count", "ended_as_specified": "count", "seconds": "s", "seconds_min": "s",
         "seconds_max": "s", "processes_left": "count", "records_lost": "count",
         "after": "jobs", "left": "count"}  # fmt: skip

BASE = [
    "engine=rpc", "optimizer=asgd", "dataset=small_lstsq", "topology=linear",
    "topology.n_workers=3", "batch_size=8", "optimizer.lr=0.01", "eval_every=50",
    "engine.time_scale=0.002", "progress=off",
]  # fmt: skip


def _stat(pid: int | str) -> list[str]:
    """/proc/<pid>/stat's fields after the command name (which may hold spaces): state, ppid, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int(_stat(d.name)[1]) == pid:
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def alive(pid: int) -> bool:
    try:
        return _stat(pid)[0] != "Z"
    except (OSError, IndexError):
        return False


def jobs_so_far(run: Path) -> int:
    p = run / "jobs.csv"
    return len(p.read_text().splitlines()) - 1 if p.exists() else 0


def records_intact(run: Path) -> tuple[bool, dict]:
    try:
        summary = json.loads((run / "summary.json").read_text())
        events = read_events(run / "events.csv")
        read_history(run / "history.csv")
    except Exception as e:  # a lost or unreadable record
        return False, {"error": str(e)}
    return len(events) == summary["gradients"], summary


def drill(kind: str, rng: np.random.Generator, workdir: Path, data: Path) -> dict:
    run = workdir / "run"
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    after = int(rng.integers(10, 200))
    extra = [f"hydra.run.dir={run}", f"dataset.path={data}", f"tracking.uri={uri}"]
    held = None
    if kind == "taken-port":
        held = socket.socket()
        held.bind(("127.0.0.1", 0))
        held.listen()
        extra.append(f"engine.master_port={held.getsockname()[1]}")
    budget = 100000 if kind == "sigterm-server" else 1500
    extra.append(f"budget.gradients={budget}")
    if kind == "sigstop-worker":
        extra.append("engine.job_timeout=2")
    cmd = [sys.executable, "-m", "pipeline.train", *BASE, *extra]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "CI": "1"})  # fmt: skip
    workers: list[int] = []
    fault_at = time.monotonic()
    try:
        if kind != "taken-port":
            deadline = time.monotonic() + 180
            while jobs_so_far(run) < after and proc.poll() is None:
                if time.monotonic() > deadline:
                    raise RuntimeError("the run never got going")
                time.sleep(0.02)
            workers = [p for p in children(proc.pid) if alive(p)]
            fault_at = time.monotonic()
            victim = workers[int(rng.integers(len(workers)))] if workers else None
            if kind == "kill-worker" and victim:
                os.kill(victim, signal.SIGKILL)
            elif kind == "sigterm-server":
                proc.send_signal(signal.SIGTERM)
            elif kind == "sigstop-worker" and victim:
                os.kill(victim, signal.SIGSTOP)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        if held is not None:
            held.close()
    took = time.monotonic() - fault_at
    left = [p for p in workers if alive(p)]
    intact, summary = records_intact(run) if kind != "taken-port" else (True, {})
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    if kind == "kill-worker" or kind == "sigstop-worker":
        ok = (proc.returncode == 0 and summary.get("status") == "finished"
              and len(summary.get("failures", [])) == 1)  # fmt: skip
        lost = summary.get("failures") or [{}]
        took = lost[0].get("time", float("nan")) - _time_of_job(run, after)
    elif kind == "sigterm-server":
        from mlflow.tracking import MlflowClient

        status = (
            MlflowClient(uri)
            .get_run(json.loads((run / "run.json").read_text())["mlflow_run_id"])
            .info.status
        )
        ok = proc.returncode == 143 and summary.get("status") == "killed" and status == "KILLED"
    else:
        ok = proc.returncode == 2 and len(errors) == 1 and "is taken" in errors[0]
    return {"ok": ok, "seconds": took, "left": len(left), "intact": intact, "after": after}


def _time_of_job(run: Path, k: int) -> float:
    """Wall time (run clock) at which the k-th job row was written: when the fault came."""
    rows = (run / "jobs.csv").read_text().splitlines()[1:]
    ends = sorted(float(r.split(",")[4]) for r in rows if r.split(",")[4])
    return ends[min(k, len(ends)) - 1] if ends else float("nan")


def table(kinds: list[dict]) -> str:
    """RELIABILITY.md's markdown table of a drill's figures."""
    rows = []
    for k in kinds:
        after = (", ".join(str(r["after"]) for r in k["runs"]) if k["kind"] != "taken-port"
                 else "- (seconds from launch)")  # fmt: skip
        secs = (f"{k['seconds_min']:.2f}-{k['seconds_max']:.2f}"
                if k["seconds_min"] is not None else "-")  # fmt: skip
        rows.append(f"| {k['kind']} | {k['ended_as_specified']}/{k['repeats']} | {secs} | "
                    f"{k['processes_left']} | {k['records_lost']} | {after} |")  # fmt: skip
    return "\n".join([
        "| fault | ended as specified | seconds (fault to end; to detection for lost "
        "workers) | processes left | records lost | fault after N jobs |",
        "| --- | --- | --- | --- | --- | --- |", *rows,
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="a .json file, or a folder (default bench/results)")
    ap.add_argument("--table", type=Path, default=None, help="write the markdown table here")
    a = ap.parse_args(argv)
    if a.out is not None and str(a.out).endswith(".md"):  # the old meaning of --out
        a.table, a.out = Path(a.out), None
    from models import datasets

    m = Measurement("drill_rpc", argv, "drill", {"repeats": a.repeats, "seed": a.seed,
                                                 "base": BASE})  # fmt: skip
    rng = np.random.default_rng(a.seed)
    kinds = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "small.npz"
        datasets.build("small_lstsq", data, seed=0)
        for kind in KINDS:
            results = []
            for i in range(a.repeats):
                work = Path(tmp) / f"{kind}-{i}"
                work.mkdir()
                r = drill(kind, rng, work, data)
                r["seconds"] = float(r["seconds"])
                results.append(r)
                print(kind, i, r, flush=True)
            secs = [r["seconds"] for r in results if np.isfinite(r["seconds"])]
            kinds.append({
                "kind": kind,
                "repeats": len(results),
                "ended_as_specified": sum(bool(r["ok"]) for r in results),
                "seconds_min": min(secs) if secs else None,
                "seconds_max": max(secs) if secs else None,
                "seconds_from": "launch" if kind == "taken-port" else "fault",
                "processes_left": sum(r["left"] for r in results),
                "records_lost": sum(not r["intact"] for r in results),
                "runs": [{**r, "ok": bool(r["ok"]), "intact": bool(r["intact"]),
                          "seconds": r["seconds"] if np.isfinite(r["seconds"]) else None}
                         for r in results],
            })  # fmt: skip
    text = table(kinds)
    print(text)
    if a.table:
        a.table.write_text(text + "\n")
    write(out_file(a.out, "drill_rpc.json"), m.finish({"faults": kinds}, UNITS))


if __name__ == "__main__":
    main()
