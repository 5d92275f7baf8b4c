"""Checks 2 to 4, runs of the pipeline compared: two ``engine=sim`` runs (determinism), the
event engine and :func:`plain_loop`, and ``engine=rpc engine.ordered=true`` and the simulator."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.check_rule.loop import plain_loop
from pipeline.check_rule.report import FAIL, PASS, Report
from pipeline.check_rule.setup import Setup

RPC_WORKERS, RPC_GRADIENTS = 3, 60


def _events(path: Path, time: bool = True) -> list[tuple]:
    from pipeline.core.records import read_events

    cols = ("worker", "version", "delay", "applied", "lr", *(("time",) if time else ()))
    return [tuple(e[c] for c in cols) for e in read_events(path / "events.csv")]


def _first_difference(a: list, b: list) -> str | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"row {i}: {x} vs {y}"
    if len(a) != len(b):
        return f"{len(a)} rows vs {len(b)}"
    return None


def _iterates_differ(a: list, b: list, tol: float) -> str | None:
    if len(a) != len(b):
        return f"{len(a)} iterates vs {len(b)}"
    for k, (x, y) in enumerate(zip(a, b, strict=False)):
        x = np.asarray(x.cpu().numpy() if hasattr(x, "cpu") else x, dtype=np.float64)
        y = np.asarray(y.cpu().numpy() if hasattr(y, "cpu") else y, dtype=np.float64)
        if tol == 0.0 and not np.array_equal(x, y) or not np.allclose(x, y, rtol=tol, atol=tol):
            return f"x_{k} differs by {float(np.max(np.abs(x - y))):.3g}"
    return None


def _compare(
    report: Report, name: str, what: str, rows: tuple[list, list], rows_differ: str,
    iterates: tuple[list, list], tol: float, iterates_label: str, passed: str,
) -> None:  # fmt: skip
    """Report ``name``: PASS (``what (passed)``) when the two row lists are equal and then the
    two iterate lists within ``tol``; else FAIL naming the first difference, the rows' through
    ``rows_differ`` (a template whose ``{}`` is the difference)."""
    diff = _first_difference(*rows)
    if diff is None:
        diff = _iterates_differ(*iterates, tol)
        diff = diff and f"{iterates_label}: {diff}"
    else:
        diff = rows_differ.format(diff)
    if diff:
        report.add(name, FAIL, f"{what}: {diff}")
    else:
        report.add(name, PASS, f"{what} ({passed})")


def _run(setup: Setup, cfg, label: str):
    from pipeline.runner import run_experiment

    out = setup.outdir(label)
    summary, result = run_experiment(cfg, out, trace=True)
    return out, summary, result


def check_runs(setup: Setup, report: Report, workers: int, gradients: int, seed: int) -> None:
    """Check 2, determinism, and check 3, the plain loop, on one ``engine=sim`` config."""
    from pipeline.compose.build import build_experiment

    cfg = setup.cfg("linear", workers, gradients, seed)
    try:
        a, sa, ra = _run(setup, cfg, "sim-a")
        b, sb, rb = _run(setup, cfg, "sim-b")
    except Exception as e:
        msg = f"the engine=sim run failed: {type(e).__name__}: {e}"
        report.add("determinism", FAIL, msg)
        report.add("plain loop", FAIL, msg)
        return
    ea = _events(a)
    _compare(
        report, "determinism",
        f"two engine=sim runs with seed {seed} give the same events and iterates",
        (ea, _events(b)), "events (worker, version, delay, applied, weight, time) differ at {}",
        (ra.iterates, rb.iterates), 0.0, "iterates", f"{len(ea)} events",
    )  # fmt: skip

    what = "the event engine equals a plain loop that calls the rule directly"
    try:
        rows, xs = plain_loop(build_experiment(cfg), gradients)
    except Exception as e:
        report.add("plain loop", FAIL, f"{what}: the loop failed: {type(e).__name__}: {e}")
        return
    plain = [(w, v, dl, int(wt != 0), float(wt)) for w, v, dl, wt, _ in rows]
    sim = [e[:5] for e in ea]
    _compare(
        report, "plain loop", what,
        (sim, plain), "rows (worker, version, delay, applied, weight) differ at {} (sim vs plain)",
        (ra.iterates, xs), 1e-10, "iterates (one per step)",
        f"{len(sim)} rows, {len(xs) - 1} steps",
    )  # fmt: skip


def check_rpc(setup: Setup, report: Report, seed: int) -> None:
    """Check 4: ``engine=rpc engine.ordered=true`` (real processes) against ``engine=sim``."""
    what = f"engine=rpc engine.ordered=true equals engine=sim ({RPC_WORKERS} workers)"
    args = (RPC_WORKERS, RPC_GRADIENTS, seed)
    try:
        s, _, rs = _run(setup, setup.cfg("linear", *args, "engine=sim"), "rpc-sim")
        r, summary, rr = _run(
            setup, setup.cfg("linear", *args, "engine=rpc", "engine.ordered=true",
                             "engine.time_scale=0.002"), "rpc"
        )  # fmt: skip
    except Exception as e:
        report.add("rpc", FAIL, f"{what}: a run failed: {type(e).__name__}: {e}")
        return
    _compare(
        report, "rpc", what,
        (_events(s, time=False), _events(r, time=False)),
        "events (worker, version, delay, applied, weight) differ at {} (sim vs rpc)",
        (rs.iterates, rr.iterates), 1e-12, "iterates", f"{summary['gradients']} events",
    )  # fmt: skip
