"""Check 1, the protocol: drives the rule through the real dispatcher on a simulated clock
(three worker-time settings, a few seeds, a worker lost mid-run) and reports each invariant,
``describe()`` and the measured updates per gradient."""

from __future__ import annotations

import heapq
import json
import math
from dataclasses import dataclass
from typing import Any

from pipeline.check_rule.invariants import INVARIANTS, Violation, Watch, decision_text
from pipeline.check_rule.report import FAIL, PASS, WARN, Report
from pipeline.check_rule.setup import SETTINGS, Setup


@dataclass
class Drive:
    gradients: int = 0
    updates: int = 0
    lost: str | None = None  # what on_worker_lost did


def drive(exp, budget: int, lose: tuple[int, int] | None = None) -> Drive:
    """Run ``exp.rule`` through the dispatcher on a simulated clock with real gradients (a
    ``scales_steps`` rule's factors are not applied to the iterate here: only the decisions are
    checked). ``lose=(after, w)``: worker w is lost after ``after`` gradients. Raises
    :class:`Violation`."""
    from pipeline.core.server import ParameterServer
    from pipeline.engines.dispatch import Dispatcher
    from pipeline.engines.rpc.loop import ServerIterates

    rule, objective = exp.rule, exp.objective
    n = rule.n
    watch = Watch(rule)
    server = ParameterServer(objective.initial_point())
    if rule.reads_iterates:
        rule.iterates = ServerIterates(server)
    draw, samplers = exp.times.drawer(), exp.samplers()
    heap: list[tuple[float, int, int]] = []
    running = [0] * n  # number of each worker's running job (0: none)
    started = [0] * n
    samples: list[Any] = [None] * n
    clock = 0.0

    def start_job(w: int, v: int) -> None:
        if running[w]:
            raise Violation(
                "double-booking", f"after {watch.last}: worker {w} given a job at version {v} "
                f"while its job {running[w]} is running"
            )  # fmt: skip
        started[w] += 1
        running[w] = started[w]
        samples[w] = samplers[w]()
        d = draw(w)
        if d != math.inf:
            heapq.heappush(heap, (clock + d, w, started[w]))

    def cancel_job(w: int, v: int) -> None:
        running[w] = 0

    def apply(w: int, v: int, weight: float, step: bool) -> None:
        if w >= 0 and weight:
            server.add(weight, objective.grad(server.point(v), samples[w]), step)
        elif step:
            server.step()

    core = Dispatcher(rule, start_job, cancel_job, apply, server)
    out = Drive()
    try:
        core.begin()
        while out.gradients < budget:
            if lose is not None and out.gradients == lose[0] and out.lost is None:
                w = lose[1]
                try:
                    d = core.lose(w, clock)
                except RuntimeError as e:
                    out.lost = f"refused (RuntimeError: {e})"
                    break
                running[w] = 0
                out.lost = "returned None" if d is None else f"returned {decision_text(d)}"
            while heap and running[heap[0][1]] != heap[0][2]:
                heapq.heappop(heap)  # cancelled jobs
            if not heap:
                idle = [w for w in range(n) if not core.lost[w]]
                raise Violation(
                    "progress", f"stall after {out.gradients} of {budget} gradients: no job in "
                    f"flight or queued, workers {idle} idle (deadlock: the rule gave no worker "
                    f"a job); last: {watch.last}"
                )  # fmt: skip
            t, w, _ = heapq.heappop(heap)
            clock = t
            running[w] = 0
            core.arrive(w, t)
            out.gradients += 1
    except AssertionError as e:  # the dispatcher's own checks (server out of step)
        raise Violation("version", f"after {watch.last}: the dispatcher found {e}") from None
    except Violation:
        raise
    except Exception as e:
        raise Violation(
            "progress", f"after {watch.last}: {type(e).__name__}: {e}"
        ) from None  # fmt: skip
    out.updates = rule.version
    return out


def check_protocol(setup: Setup, report: Report, workers: int, gradients: int, seeds) -> None:
    from pipeline.compose.build import build_experiment

    first: dict[str, str] = {}
    runs = measured_g = measured_u = 0
    declared = None
    for setting in SETTINGS:
        for seed in seeds:
            exp = build_experiment(setup.cfg(setting, workers, gradients, seed))
            if declared is None:
                declared = exp.rule.updates_per_gradient
            try:
                r = drive(exp, gradients)
            except Violation as v:
                first.setdefault(v.invariant, f"{setting} workers, seed {seed}: {v.message}")
                continue
            runs += 1
            measured_g += r.gradients
            measured_u += r.updates
    # a worker lost mid-run, on a fresh rule
    exp = build_experiment(setup.cfg("linear", workers, gradients, seeds[0]))
    lost_msg = ""
    try:
        r = drive(exp, gradients, lose=(gradients // 2, workers - 1))
        lost_msg = f"on_worker_lost({workers - 1}) after {gradients // 2} gradients {r.lost}"
        if r.lost is None:
            lost_msg = "the run ended before the worker was lost"
    except Violation as v:
        if v.invariant == "progress":
            v = Violation(
                "lost worker", f"after a worker was lost the run did not go on ({v.message}); "
                "raise RuntimeError in on_worker_lost if the rule cannot go on without it"
            )  # fmt: skip
        first.setdefault(v.invariant, f"linear workers, seed {seeds[0]}: {v.message}")
    # describe()
    desc_msg = ""
    try:
        desc = exp.rule.describe() if "describe" not in first else None
        if not isinstance(desc, dict):
            raise Violation("describe", f"describe() returned {type(desc).__name__}, not a dict")
        for k, val in desc.items():
            try:
                json.dumps({str(k): val})
            except (TypeError, ValueError) as e:
                raise Violation(
                    "describe", f"describe()[{k!r}] = {val!r} is not JSON-serialisable ({e})"
                ) from None
            if not isinstance(k, str):
                raise Violation("describe", f"describe() has a key {k!r} that is not a str")
        desc_msg = json.dumps(desc)
    except Violation as v:
        first.setdefault("describe", v.message)
    except Exception as e:
        first.setdefault("describe", f"describe() raised {type(e).__name__}: {e}")
    total = len(SETTINGS) * len(seeds)
    for inv, what in INVARIANTS.items():
        if inv in first:
            report.add(inv, FAIL, f"{what}: broken in {first[inv]}")
        elif inv == "lost worker":
            report.add(inv, PASS, f"{what}: {lost_msg}")
        elif inv == "describe":
            report.add(inv, PASS, f"{what}: {desc_msg}")
        elif inv == "progress":
            report.add(inv, PASS, f"{what}: {runs} of {total} runs, {measured_g} gradients")
        else:
            report.add(inv, PASS, f"{what} ({measured_g} arrivals in {runs} runs)")
    if not measured_g:
        report.add("updates_per_gradient", WARN, "no complete run to measure it on")
        return
    measured = measured_u / measured_g
    text = f"declared {declared:.4g}, measured {measured:.4g} ({measured_u}/{measured_g})"
    ok = (
        declared is not None and math.isfinite(declared) and declared > 0 and measured > 0
        and 0.25 <= measured / declared <= 4.0
    )  # fmt: skip
    report.add("updates_per_gradient", PASS if ok else WARN, text + ("" if ok else ", off by > 4x"))
