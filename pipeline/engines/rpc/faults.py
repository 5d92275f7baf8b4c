"""Fault injection for tests and drills: ``ASGD_WORKER_FAULT=KIND:WORKER:JOB`` makes worker
WORKER fail in its JOB-th job (1-based): ``raise`` (an exception in the gradient), ``exit`` (the
process exits), ``kill`` (SIGKILL to itself), ``hang`` (stops answering); ``nostart`` (JOB
ignored) never joins the group. Read by the worker process only."""

from __future__ import annotations

import os
import signal
import time

FAULT_ENV = "ASGD_WORKER_FAULT"
KINDS = ("raise", "exit", "kill", "hang", "nostart")


def parse_fault(spec: str, worker: int) -> tuple[str, int] | None:
    """``(kind, job)`` when ``spec`` names this worker, else None."""
    if not spec:
        return None
    kind, w, job = spec.split(":")
    if kind not in KINDS:
        raise ValueError(f"{FAULT_ENV}: unknown fault {kind!r}")
    return (kind, int(job)) if int(w) == worker else None


def fault_for(worker: int) -> tuple[str, int] | None:
    """This process's fault, from the environment."""
    return parse_fault(os.environ.get(FAULT_ENV, ""), worker)


def inject(kind: str) -> None:
    if kind == "raise":
        raise RuntimeError(f"injected fault ({FAULT_ENV})")
    if kind == "exit":
        os._exit(3)
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    while True:  # hang
        time.sleep(3600)
