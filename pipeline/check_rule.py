"""A conformance kit for server rules (issue #20): does a rule keep the protocol of
:mod:`pipeline.api`, and do the engines run it as documented?

``python -m pipeline.check_rule their_pkg.TheirRule [key=value ...] [--workers N]
[--gradients G] [--rpc/--no-rpc]``, or from a test::

    from pipeline.check_rule import assert_conforms, check_rule
    assert_conforms("their_pkg.TheirRule", {"threshold": 3}, rpc=False)

The rule is built the way the pipeline builds it: an optimizer config ``{_target_: <path>,
name: <derived>, lr: 0.05, **keys}`` written into a temporary config directory on
``hydra.searchpath``, composed with a 64 x 4 least-squares problem (``dataset=small_lstsq``),
``batch_size=8`` and exponential job times, and built by ``build_experiment``. Then:

1. **protocol**: the rule is driven through the real :class:`Dispatcher` (with a
   :class:`ParameterServer`, so the dispatcher's own version check is on) on three worker-time
   settings (homogeneous, linear tau_i = i, one straggler 10x slower) and a few seeds; every
   decision is checked as it is made (type and field types, delay, weight, version, worker
   indices, scale), the run must reach its gradient budget (a stall is named), the measured
   updates per gradient are compared with ``updates_per_gradient`` (WARN beyond 4x), a fresh
   rule loses a worker mid-run, and ``describe()`` must be JSON-serialisable;
2. **determinism**: two ``engine=sim`` runs with the same seed give the same events and iterates;
3. **plain loop**: the event engine's rows and iterates equal those of :func:`plain_loop`, a
   loop written here from docs/methods.md that calls the rule directly (no engine code);
4. **rpc** (``--rpc``, the default; real processes, ~10 s): ``engine=rpc engine.ordered=true``
   gives the simulator's rows (without the time) and iterates within 1e-12.

One line per check (``PASS``/``FAIL``/``WARN``); exit code 0 when nothing fails, 1 otherwise,
2 for a bad dotted path or key (one line, the pipeline's own message).
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import numbers
import sys
import tempfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import CONF_DIR, ConfigError
from pipeline.api import Decision, ServerRule

PASS, FAIL, WARN = "PASS", "FAIL", "WARN"
LR = 0.05
#: the worker-time settings of the protocol runs (extra overrides of each)
SETTINGS = {
    "homogeneous": ("topology=homogeneous",),
    "linear": ("topology=linear",),
    "straggler": ("topology=straggler", "topology.stragglers=1", "topology.factor=10"),
}
#: the protocol's invariants, in the order they are reported
INVARIANTS = {
    "decision": "on_gradient returns a Decision with fields of the right types",
    "delay": "delay == the rule's version before the call - the job's version",
    "weight": "weights are finite",
    "version": "version += 1 on a step, unchanged otherwise (the server agrees)",
    "workers": "assign/cancel hold valid worker indices, no duplicates",
    "double-booking": "no worker runs two jobs (a busy worker's job waits in its queue)",
    "scale": "scale only from scales_steps rules, with a step, one finite factor per worker",
    "progress": "every run reaches its gradient budget (no stall, no error)",
    "lost worker": "on_worker_lost returns None or a Decision, or raises RuntimeError",
    "describe": "describe() returns a dict of JSON-serialisable values",
}
RPC_WORKERS, RPC_GRADIENTS = 3, 60


class Violation(Exception):
    """An invariant broken at a given event."""

    def __init__(self, invariant: str, message: str):
        super().__init__(f"{invariant}: {message}")
        self.invariant, self.message = invariant, message


@dataclass
class Check:
    name: str
    status: str  # PASS | FAIL | WARN
    message: str

    def line(self) -> str:
        return f"{self.status} {self.name}: {self.message}"


@dataclass
class Report:
    target: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    def add(self, name: str, status: str, message: str) -> None:
        self.checks.append(Check(name, status, message))

    def __getitem__(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    def text(self) -> str:
        return "\n".join(c.line() for c in self.checks)


# -- building the rule the way the pipeline does -------------------------------------------------


def derived_name(target: str) -> str:
    from pipeline.core.methods import METHODS

    name = target.rpartition(".")[2].lower() or "rule"
    return f"{name}_rule" if name in METHODS else name


def parse_keys(items: list[str]) -> dict[str, Any]:
    """``key=value`` arguments, values read as YAML (``3``, ``true``, ``null``, ``[1,2]``)."""
    from omegaconf import OmegaConf

    bad = [a for a in items if "=" not in a or not a.split("=", 1)[0]]
    if bad:
        raise ConfigError(f"give the rule's keys as key=value, got {bad[0]!r}")
    return OmegaConf.to_container(OmegaConf.from_dotlist(list(items)))


class Setup:
    """The temporary data file and config directory every run of a check composes from."""

    def __init__(self, target: str, keys: dict[str, Any], root: Path):
        from omegaconf import OmegaConf

        from models import datasets
        from pipeline.compose.plugins import check_plugin

        node = {"_target_": target, "name": derived_name(target), "lr": LR, **keys}
        check_plugin(OmegaConf.create(node))  # a bad path or key: the pipeline's one line
        self.root = root
        self.data = datasets.build("small_lstsq", root / "small_lstsq.npz", seed=0)
        conf = root / "conf" / "optimizer"
        conf.mkdir(parents=True)
        (conf / "_check_rule.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(node)))
        self.runs = 0

    def cfg(self, setting: str, n: int, gradients: int, seed: int, *extra: str):
        from hydra import compose, initialize_config_dir

        import pipeline.compose.schema  # noqa: F401  (registers the schemas)

        overrides = [
            "optimizer=_check_rule", f"hydra.searchpath=[file://{self.root / 'conf'}]",
            "dataset=small_lstsq", f"dataset.path={self.data}", *SETTINGS[setting],
            f"topology.n_workers={n}", "topology.noise=exponential", "batch_size=8",
            f"budget.gradients={gradients}", "eval_every=5", "tracking=none", "progress=off",
            f"seed={seed}", *extra,
        ]  # fmt: skip
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            return compose(config_name="config", overrides=overrides)

    def outdir(self, label: str) -> Path:
        self.runs += 1
        return self.root / "runs" / f"{self.runs:02d}-{label}"


# -- 1. the protocol, through the real dispatcher ---------------------------------------------


def check_decision(rule: ServerRule, d: Any, where: str, expected_delay: int | None) -> None:
    """Every field of a decision; raises :class:`Violation` naming the first broken one."""
    if not isinstance(d, Decision):
        raise Violation("decision", f"{where}: returned {type(d).__name__} {d!r}, not a Decision")
    delay, weight, step, assign, cancel, scale = d

    def real(x):
        return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))

    kinds = [
        ("delay", isinstance(delay, numbers.Integral) and not isinstance(delay, (bool, np.bool_)),
         "an int"),
        ("weight", real(weight), "a float"),
        ("step", isinstance(step, (bool, np.bool_)), "a bool"),
        ("assign", isinstance(assign, tuple), "a tuple of worker indices"),
        ("cancel", isinstance(cancel, tuple), "a tuple of worker indices"),
        ("scale", isinstance(scale, tuple) and all(real(s) for s in scale), "a tuple of floats"),
    ]  # fmt: skip
    for name, ok, kind in kinds:
        if not ok:
            value = getattr(d, name)
            raise Violation(
                "decision", f"{where}: Decision.{name} is {type(value).__name__} {value!r}, "
                f"not {kind}"
            )  # fmt: skip
    if expected_delay is not None and delay != expected_delay:
        raise Violation(
            "delay", f"{where}: Decision.delay={delay}, expected {expected_delay} (the rule's "
            "version before the call minus the job's version)"
        )  # fmt: skip
    if not math.isfinite(weight):
        raise Violation("weight", f"{where}: Decision.weight={weight} is not finite")
    n = rule.n
    for name, workers in (("assign", assign), ("cancel", cancel)):
        for u in workers:
            if not isinstance(u, numbers.Integral) or isinstance(u, bool) or not 0 <= u < n:
                raise Violation(
                    "workers", f"{where}: Decision.{name} holds {u!r}, not a worker index "
                    f"0..{n - 1}"
                )  # fmt: skip
        dup = sorted({u for u in workers if workers.count(u) > 1})
        if dup:
            raise Violation(
                "workers", f"{where}: Decision.{name}={workers} names worker {dup[0]} twice"
            )
    if scale:
        if not rule.scales_steps:
            raise Violation(
                "scale", f"{where}: Decision.scale given but {type(rule).__name__} does not "
                "declare scales_steps"
            )  # fmt: skip
        if not step:
            raise Violation("scale", f"{where}: Decision.scale given without a step")
        if len(scale) != n or not all(math.isfinite(s) for s in scale):
            raise Violation("scale", f"{where}: Decision.scale={scale} is not {n} finite factors")


def _decision_text(d: Any) -> str:
    return repr(tuple(d)) if isinstance(d, tuple) else repr(d)


class _Watch:
    """Stands in for the rule's ``on_gradient`` and ``on_worker_lost`` (instance attributes
    shadow the methods, and the dispatcher takes ``rule.on_gradient`` when it is built): each
    decision is checked as it is made."""

    def __init__(self, rule: ServerRule):
        self.rule = rule
        self._on_gradient = rule.on_gradient
        self._on_worker_lost = rule.on_worker_lost
        self.arrivals = 0
        self.last = "no arrival yet"
        rule.on_gradient = self.on_gradient
        rule.on_worker_lost = self.on_worker_lost

    def _versions(self, before: int, d: Decision, where: str) -> None:
        after = self.rule.version
        expect = before + 1 if d.step else before
        if after != expect:
            raise Violation(
                "version", f"{where}: step={bool(d.step)} but the rule's version went {before} "
                f"-> {after} (expected {expect})"
            )  # fmt: skip

    def on_gradient(self, worker: int, version: int) -> Decision:
        before = self.rule.version
        self.arrivals += 1
        where = (
            f"arrival {self.arrivals} (worker {worker}, job version {version}, "
            f"rule version {before})"
        )
        d = self._on_gradient(worker, version)
        check_decision(self.rule, d, where, before - version)
        self._versions(before, d, where)
        self.last = f"{where} -> {_decision_text(d)}"
        return d

    def on_worker_lost(self, worker: int) -> Decision | None:
        before = self.rule.version
        where = f"on_worker_lost({worker}) at version {before}"
        try:
            d = self._on_worker_lost(worker)
        except RuntimeError:
            raise
        except Exception as e:
            raise Violation(
                "lost worker", f"{where} raised {type(e).__name__}: {e} (raise RuntimeError to "
                "refuse)"
            ) from None  # fmt: skip
        if d is None:
            return None
        if not isinstance(d, Decision):
            raise Violation(
                "lost worker", f"{where} returned {type(d).__name__} {d!r}: return None or a "
                "Decision, or raise RuntimeError"
            )  # fmt: skip
        try:
            check_decision(self.rule, d, where, None)
            self._versions(before, d, where)
        except Violation as v:
            raise Violation("lost worker", v.message) from None
        return d


class _ServerView:
    """The :class:`IterateView` of the protocol runs: the parameter server's points."""

    def __init__(self, server):
        self.server = server

    def current(self):
        return self.server.x

    def at(self, version: int):
        s = self.server
        return s.x if version == s.version else s.point(version)

    def distance(self, version: int) -> float:
        import torch

        return float(torch.linalg.vector_norm(self.current() - self.at(version)))


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

    rule, objective = exp.rule, exp.objective
    n = rule.n
    watch = _Watch(rule)
    server = ParameterServer(objective.initial_point())
    if rule.reads_iterates:
        rule.iterates = _ServerView(server)
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
                out.lost = "returned None" if d is None else f"returned {_decision_text(d)}"
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


# -- 3. a plain loop, written from docs/methods.md, that calls the rule directly ----------------


class _PlainView:
    """The :class:`IterateView` of :func:`plain_loop`: its own list of iterates."""

    def __init__(self, xs: list[np.ndarray]):
        self.xs = xs

    def current(self):
        import torch

        return torch.from_numpy(self.xs[-1])

    def at(self, version: int):
        import torch

        return torch.from_numpy(self.xs[version])

    def distance(self, version: int) -> float:
        return float(np.linalg.norm(self.xs[-1] - self.xs[version]))


def plain_loop(exp, budget: int) -> tuple[list[tuple], list[np.ndarray]]:
    """The run of ``exp.rule`` on least squares, as docs/methods.md section 2 describes it, in
    a plain loop that shares no code with the engines (only the job-time stream and the
    samplers come from compose). Returns the rows ``(worker, version, delay, weight, step)``,
    the weights as applied, and the iterates x_0, x_1, ...

    - a heap of job completions ``(time, worker, job)``, ties broken by worker index; worker
      w's j-th job lasts the j-th draw of w's time stream and uses w's j-th sample;
    - each arrival asks the rule, then: the gradient at the job's point is added with its
      weight; a step applies the sum (a ``scales_steps`` rule's factors multiply each worker's
      gradients of the step first); the workers in ``cancel`` drop their running job; each
      worker in ``assign`` gets a job at the current version, queued FIFO if it is busy; an
      idle worker starts the head of its queue.
    """
    rule, objective = exp.rule, exp.objective
    n = rule.n
    X = objective.X.cpu().numpy().astype(np.float64)
    y = objective.y.cpu().numpy().astype(np.float64)
    xs = [objective.initial_point().cpu().numpy().astype(np.float64)]
    if rule.reads_iterates:
        rule.iterates = _PlainView(xs)
    draw, samplers = exp.times.drawer(), exp.samplers()
    heap: list[tuple[float, int, int]] = []
    running: list[tuple[int, int, Any] | None] = [None] * n  # (version, job, sample)
    queues: list[deque] = [deque() for _ in range(n)]
    jobs = [0] * n
    now = 0.0
    rows: list[list] = []
    terms: list[tuple[int, float, np.ndarray]] = []  # the open step's (worker, weight, grad)

    def start(w: int, v: int) -> None:
        jobs[w] += 1
        running[w] = (v, jobs[w], samplers[w]())
        d = draw(w)
        if d != math.inf:
            heapq.heappush(heap, (now + d, w, jobs[w]))

    def grad(x: np.ndarray, sample) -> np.ndarray:
        if sample is None:
            Xb, yb = X, y
        else:
            idx = np.asarray(sample.cpu().numpy() if hasattr(sample, "cpu") else sample)
            Xb, yb = X[idx], y[idx]
        return Xb.T @ (Xb @ x - yb) / len(yb)

    for w in rule.start():
        start(w, 0)
    open_from = 0  # the first row of the open step
    while len(rows) < budget and heap:
        t, w, j = heapq.heappop(heap)
        if running[w] is None or running[w][1] != j:
            continue  # a cancelled job
        now = t
        v, _, sample = running[w]
        running[w] = None
        d = rule.on_gradient(w, v)
        rows.append([w, v, d.delay, d.weight, bool(d.step)])
        if d.weight:
            terms.append((w, d.weight, grad(xs[v], sample)))
        if d.step:
            scale = d.scale if rule.scales_steps else ()
            if scale:
                terms = [(u, wt * scale[u], g) for u, wt, g in terms]
                for r in rows[open_from:]:
                    if r[3]:
                        r[3] = r[3] * scale[r[0]]
            x = xs[-1].copy()
            for _, wt, g in terms:
                x -= wt * g
            xs.append(x)
            terms, open_from = [], len(rows)
        for u in d.cancel:
            if running[u] is not None:
                running[u] = None
                if queues[u]:
                    start(u, queues[u].popleft())
        if running[w] is None and queues[w]:
            start(w, queues[w].popleft())
        for u in d.assign:
            if running[u] is None:
                start(u, len(xs) - 1)
            else:
                queues[u].append(len(xs) - 1)
    return [tuple(r) for r in rows], xs


# -- 2., 3., 4.: runs of the pipeline ---------------------------------------------------------


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


def _run(setup: Setup, cfg, label: str):
    from pipeline.runner import run_experiment

    out = setup.outdir(label)
    summary, result = run_experiment(cfg, out, trace=True)
    return out, summary, result


def check_runs(setup: Setup, report: Report, workers: int, gradients: int, seed: int) -> None:
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
    diff = _first_difference(ea, _events(b))
    what = "two engine=sim runs with seed {seed} give the same events and iterates"
    if diff is None:
        diff = _iterates_differ(ra.iterates, rb.iterates, 0.0)
        diff = diff and f"iterates: {diff}"
    else:
        diff = f"events (worker, version, delay, applied, weight, time) differ at {diff}"
    if diff:
        report.add("determinism", FAIL, f"{what.format(seed=seed)}: {diff}")
    else:
        report.add("determinism", PASS, f"{what.format(seed=seed)} ({len(ea)} events)")

    what = "the event engine equals a plain loop that calls the rule directly"
    try:
        rows, xs = plain_loop(build_experiment(cfg), gradients)
    except Exception as e:
        report.add("plain loop", FAIL, f"{what}: the loop failed: {type(e).__name__}: {e}")
        return
    plain = [(w, v, dl, int(wt != 0), float(wt)) for w, v, dl, wt, _ in rows]
    sim = [e[:5] for e in ea]
    diff = _first_difference(sim, plain)
    if diff is None:
        diff = _iterates_differ(ra.iterates, xs, 1e-10)
        diff = diff and f"iterates (one per step): {diff}"
    else:
        diff = f"rows (worker, version, delay, applied, weight) differ at {diff} (sim vs plain)"
    if diff:
        report.add("plain loop", FAIL, f"{what}: {diff}")
    else:
        report.add("plain loop", PASS, f"{what} ({len(sim)} rows, {len(xs) - 1} steps)")


def check_rpc(setup: Setup, report: Report, seed: int) -> None:
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
    diff = _first_difference(_events(s, time=False), _events(r, time=False))
    if diff is None:
        diff = _iterates_differ(rs.iterates, rr.iterates, 1e-12)
        diff = diff and f"iterates: {diff}"
    else:
        diff = f"events (worker, version, delay, applied, weight) differ at {diff} (sim vs rpc)"
    if diff:
        report.add("rpc", FAIL, f"{what}: {diff}")
    else:
        report.add("rpc", PASS, f"{what} ({summary['gradients']} events)")


# -- entry points -----------------------------------------------------------------------------


def check_rule(
    target: str,
    keys: dict[str, Any] | None = None,
    *,
    workers: int = 4,
    gradients: int = 200,
    rpc: bool = True,
    seeds: tuple[int, ...] = (0, 1),
) -> Report:
    """Run every check on the rule ``target`` ("package.module.Class") built with ``keys``.
    Raises :class:`ConfigError` (one line) for a bad path or key."""
    if workers < 2 or gradients < 10:
        raise ConfigError("check_rule needs --workers >= 2 and --gradients >= 10")
    report = Report(target)
    with tempfile.TemporaryDirectory(prefix="check_rule-") as tmp:
        setup = Setup(target, dict(keys or {}), Path(tmp))
        from pipeline.compose.build import build_experiment

        build_experiment(setup.cfg("linear", workers, gradients, seeds[0]))  # bad values: 1 line
        check_protocol(setup, report, workers, gradients, tuple(seeds))
        check_runs(setup, report, workers, gradients, seeds[0])
        if rpc:
            check_rpc(setup, report, seeds[0])
    return report


def assert_conforms(target: str, keys: dict[str, Any] | None = None, **kwargs) -> Report:
    """:func:`check_rule`, raising AssertionError with the report when a check fails."""
    report = check_rule(target, keys, **kwargs)
    if not report.ok:
        raise AssertionError(f"{target} does not conform:\n{report.text()}")
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.check_rule",
        description="Check that a server rule keeps the protocol of pipeline.api and that the "
        "engines run it as documented.",
    )
    p.add_argument("target", help="the rule's class, package.module.Class")
    p.add_argument("keys", nargs="*", help="the rule's own keys, key=value")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--gradients", type=int, default=200)
    p.add_argument("--seeds", type=int, default=2, help="seeds of the protocol runs")
    p.add_argument(
        "--rpc", action=argparse.BooleanOptionalAction, default=True,
        help="also compare engine=rpc engine.ordered=true with engine=sim (real processes)",
    )  # fmt: skip
    a = p.parse_args(argv)
    try:
        report = check_rule(
            a.target, parse_keys(a.keys), workers=a.workers, gradients=a.gradients, rpc=a.rpc,
            seeds=tuple(range(max(1, a.seeds))),
        )  # fmt: skip
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.text())
    failed = report.failed()
    print(f"{report.target}: {'conforms' if not failed else f'{len(failed)} checks failed'}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
