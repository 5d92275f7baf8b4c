"""SIGKILL drill: the server of a real run killed at random moments, by a signal no handler sees.

    python bench/drill_kill.py --repeats 5 [--engines sim,rpc] [--out bench/results/]

For each engine, ``--repeats`` runs (a budget that would last for hours), each SIGKILLed at a
moment drawn from a seeded generator (2 to 12 s after its first event row is on disk). Checked
after each kill:
- every record file is there with its header (events.csv, history.csv; jobs.csv for rpc);
- summary.json says ``running`` (written at start; nobody could replace it);
- ``lag_s``: the kill's time minus the last write to events.csv (its mtime). Every arrival the
  engine had before that write is on disk, so this is how far back the records reach;
- the complete rows parse, and the next command on the store (a short ``pipeline.train``) marks
  the killed MLflow run KILLED;
- no process of the run is left (rpc: the workers die with the server).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._meta import Measurement, out_file, write  # noqa: E402
from bench.drill_rpc import alive, children  # noqa: E402
from pipeline.core.records import EVENT_COLUMNS, HISTORY_COLUMNS  # noqa: E402

COMMON = ["optimizer=asgd", "dataset=small_lstsq", "batch_size=8", "optimizer.lr=0.01",
          "eval_every=50", "progress=off", "budget.gradients=1000000000000"]  # fmt: skip
ENGINES = {
    "sim": ["topology.n_workers=4"],
    "rpc": ["engine=rpc", "topology=linear", "topology.n_workers=3", "engine.time_scale=0.002"],
}
UNITS = {"repeats": "count", "ok": "count", "lag_s_max": "s", "lag_s_min": "s", "lag_s": "s",
         "at_s": "s", "rows": "count", "processes_left": "count"}  # fmt: skip


def _rows(path: Path) -> list[str]:
    return path.read_text().split("\n")[:-1]  # complete lines only


def kill_once(engine: str, at: float, work: Path, data: Path) -> dict:
    run, uri = work / "run", f"sqlite:///{work / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "pipeline.train", *COMMON, *ENGINES[engine],
           f"dataset.path={data}", f"hydra.run.dir={run}", f"tracking.uri={uri}"]  # fmt: skip
    env = {**os.environ, "CI": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    events = run / "events.csv"
    try:
        deadline = time.monotonic() + 300
        while not (events.exists() and len(_rows(events)) > 1):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{engine}: the run never got going")
            time.sleep(0.05)
        time.sleep(at)
        procs = [proc.pid, *(p for p in children(proc.pid) if alive(p))]
        killed_at = time.time()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    lag = killed_at - events.stat().st_mtime
    time.sleep(3.0)  # the workers' parent-death signal, and the kernel's reaping
    left = [p for p in procs[1:] if alive(p)]
    summary = json.loads((run / "summary.json").read_text())
    headers = _rows(events)[0] == ",".join(EVENT_COLUMNS) and _rows(run / "history.csv")[
        0
    ].startswith(",".join(HISTORY_COLUMNS))
    if engine == "rpc":
        headers = headers and (run / "jobs.csv").read_text().startswith("worker,")
    rows = len(_rows(events)) - 1
    # the next command on the store: a short run, which finds the killed one
    nxt = subprocess.run([sys.executable, "-m", "pipeline.train", *COMMON[:-1],
                          "budget.gradients=20", "topology.n_workers=2", f"dataset.path={data}",
                          f"hydra.run.dir={work / 'next'}", f"tracking.uri={uri}"],
                         cwd=ROOT, env=env, capture_output=True, text=True)  # fmt: skip
    killed_id = json.loads((run / "run.json").read_text())["mlflow_run_id"]
    from mlflow.tracking import MlflowClient

    status = MlflowClient(uri).get_run(killed_id).info.status
    ok = (headers and summary["status"] == "running" and not left and nxt.returncode == 0
          and status == "KILLED")  # fmt: skip
    return {"ok": bool(ok), "at_s": at, "lag_s": round(lag, 3), "rows": rows,
            "headers": bool(headers), "summary_status": summary["status"],
            "mlflow_status": status, "processes_left": len(left)}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--engines", default="sim,rpc")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="a .json file, or a folder (default bench/results)")
    a = ap.parse_args(argv)
    from models import datasets

    engines = a.engines.split(",")
    m = Measurement("drill_kill", argv, "drill", {"repeats": a.repeats, "seed": a.seed,
                                                  "engines": engines})  # fmt: skip
    rng = np.random.default_rng(a.seed)
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "small.npz"
        datasets.build("small_lstsq", data, seed=0)
        for engine in engines:
            runs = []
            for i in range(a.repeats):
                work = Path(tmp) / f"{engine}-{i}"
                work.mkdir()
                r = kill_once(engine, float(np.round(rng.uniform(2.0, 12.0), 2)), work, data)
                print(engine, i, r, flush=True)
                runs.append(r)
            lags = [r["lag_s"] for r in runs]
            figures[engine] = {"repeats": len(runs), "ok": sum(r["ok"] for r in runs),
                               "lag_s_min": min(lags), "lag_s_max": max(lags),
                               "processes_left": sum(r["processes_left"] for r in runs),
                               "runs": runs}  # fmt: skip
    for engine, f in figures.items():
        print(
            f"{engine}: {f['ok']}/{f['repeats']} as specified; records reach "
            f"{f['lag_s_min']:.2f}-{f['lag_s_max']:.2f} s before the kill"
        )
    write(out_file(a.out, "drill_kill.json"), m.finish(figures, UNITS))


if __name__ == "__main__":
    main()
