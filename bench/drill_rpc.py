"""Fault drill for ``engine=rpc``: real runs, real signals, at random moments.

    python bench/drill_rpc.py --repeats 5 [--out RELIABILITY.md]

Scenarios (each repeated with different moments, drawn from a seeded generator):
- ``kill-worker``: SIGKILL to one worker process after a random number of jobs (asgd). Expected:
  the run meets its budget with the others, the failure is in summary.json, exit 0.
- ``sigterm-server``: SIGTERM to the server after a random number of jobs. Expected: exit 143,
  status killed, MLflow run KILLED, records readable.
- ``sigstop-worker``: SIGSTOP to one worker for longer than ``engine.job_timeout``. Expected:
  that worker is lost after its job's deadline, the run meets its budget, exit 0.
- ``taken-port``: ``engine.master_port`` set to a port another socket holds. Expected: exit 1
  with one error line, at once.
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

from pipeline.core.records import read_events, read_history  # noqa: E402

BASE = [
    "engine=rpc", "optimizer=asgd", "dataset=small_lstsq", "topology=linear",
    "topology.n_workers=3", "batch_size=8", "optimizer.lr=0.01", "eval_every=50",
    "engine.time_scale=0.002", "progress=off",
]  # fmt: skip


def children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().split()[3]) == pid:
                    out.append(int(d.name))
            except OSError:
                pass
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().split()
    except OSError:
        return False
    return stat[2] != "Z"


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

        status = MlflowClient(uri).get_run(summary["mlflow_run_id"]).info.status
        ok = proc.returncode == 143 and summary.get("status") == "killed" and status == "KILLED"
    else:
        ok = proc.returncode == 1 and len(errors) == 1 and "is taken" in errors[0]
    return {"ok": ok, "seconds": took, "left": len(left), "intact": intact, "after": after}


def _time_of_job(run: Path, k: int) -> float:
    """Wall time (run clock) at which the k-th job row was written: when the fault came."""
    rows = (run / "jobs.csv").read_text().splitlines()[1:]
    ends = sorted(float(r.split(",")[4]) for r in rows if r.split(",")[4])
    return ends[min(k, len(ends)) - 1] if ends else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    a = ap.parse_args()
    from models import datasets

    rng = np.random.default_rng(a.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "small.npz"
        datasets.build("small_lstsq", data, seed=0)
        for kind in ("kill-worker", "sigterm-server", "sigstop-worker", "taken-port"):
            results = []
            for i in range(a.repeats):
                work = Path(tmp) / f"{kind}-{i}"
                work.mkdir()
                r = drill(kind, rng, work, data)
                results.append(r)
                print(kind, i, r, flush=True)
            secs = [r["seconds"] for r in results if np.isfinite(r["seconds"])]
            rows.append(
                f"| {kind} | {sum(r['ok'] for r in results)}/{len(results)} | "
                f"{min(secs):.2f}-{max(secs):.2f} | {sum(r['left'] for r in results)} | "
                f"{sum(not r['intact'] for r in results)} | "
                + (
                    f"{', '.join(str(r['after']) for r in results)} |"
                    if kind != "taken-port"
                    else "- (seconds from launch) |"
                )
            )
    table = "\n".join([
        "| fault | ended as specified | seconds (fault to end; to detection for lost "
        "workers) | processes left | records lost | fault after N jobs |",
        "| --- | --- | --- | --- | --- | --- |", *rows,
    ])  # fmt: skip
    print(table)
    if a.out:
        a.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
