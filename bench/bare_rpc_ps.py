"""A bare torch.distributed.rpc parameter server, the yardstick for ``engine=rpc``.

Each worker loops: pull the point (rpc_sync), compute a minibatch gradient of the paper's least
squares, push it (rpc_sync; the server applies it under one lock). No rule, no records, no
deadlines. Writes gradients per second as JSON (default bench/results/bare_rpc_ps-w<workers>.json;
``--out``: a ``.json`` file or a folder).

    python bench/bare_rpc_ps.py --workers 4 --seconds 10 [--out bench/results/]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time

import numpy as np
import torch
import torch.distributed.rpc as rpc
import torch.multiprocessing as mp

LR = 0.43
_lock = threading.Lock()
_state: dict = {}


def pull():
    with _lock:
        return None if _state["stop"] else _state["x"]


def push(g):
    with _lock:
        _state["x"] = _state["x"] - LR * g
        _state["count"] += 1


def data():
    from models.datasets import load_npz

    d = load_npz(os.environ["BARE_DATA"])
    return torch.as_tensor(d["X"]), torch.as_tensor(d["y"])


def worker(rank: int, world: int, port: int, seconds: float, result: str) -> None:
    torch.set_num_threads(1)
    opts = rpc.TensorPipeRpcBackendOptions(init_method=f"tcp://127.0.0.1:{port}")
    rpc.init_rpc(f"w{rank}", rank=rank, world_size=world, rpc_backend_options=opts)
    if rank == 0:
        X, _ = data()
        _state.update(x=torch.zeros(X.shape[1], dtype=torch.float64), count=0, stop=False)
        time.sleep(5)  # every worker has loaded its data and is pushing
        c0, t0 = _state["count"], time.perf_counter()
        time.sleep(seconds)
        c1, t1 = _state["count"], time.perf_counter()
        _state["stop"] = True
        rate = (c1 - c0) / (t1 - t0)
        print(f"workers={world - 1} gradients/s={rate:.0f}", flush=True)
        with open(result, "w") as f:
            json.dump({"gradients": c1 - c0, "seconds": t1 - t0, "gradients_per_s": rate}, f)
    else:
        X, y = data()
        rng = np.random.default_rng(rank)
        while True:
            x = rpc.rpc_sync("w0", pull)
            if x is None:
                break
            idx = torch.as_tensor(rng.choice(len(y), 256, replace=False))
            Xb, yb = X[idx], y[idx]
            g = Xb.t().mv(Xb.mv(x) - yb) / 256
            rpc.rpc_sync("w0", push, args=(g,))
    rpc.shutdown()


UNITS = {"gradients": "count", "seconds": "s", "gradients_per_s": "gradients/s"}


def main(argv: list[str] | None = None) -> None:
    from bench._meta import Measurement, out_file, write

    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--out", default=None, help="a .json file, or a folder (default bench/results)")
    a = p.parse_args(argv)
    from pipeline.compose.datafiles import data_dir

    data = data_dir() / "lstsq_paper.npz"
    if not data.exists():
        p.error(f"{data} is missing: python -m pipeline.data lstsq_paper")
    params = {"workers": a.workers, "seconds": a.seconds, "batch": 256, "problem": "lstsq_paper"}
    m = Measurement("bare_rpc_ps", argv, "bare", params)
    os.environ["BARE_DATA"] = str(data)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "rate.json")
        mp.spawn(worker, args=(a.workers + 1, port, a.seconds, result), nprocs=a.workers + 1)
        with open(result) as f:
            figures = json.load(f)
    write(out_file(a.out, f"bare_rpc_ps-w{a.workers}.json"), m.finish(figures, UNITS))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
