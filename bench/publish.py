"""BENCHMARKS.md's tables and README.md's time figures, written from the benchmarks' JSON records
in bench/results/ (bench/results/gpu/ for the GPU section): no figure is typed by hand.

Both files hold generated spans between ``<!-- bench:<name> -->`` and ``<!-- /bench:<name> -->``;
the prose around them is hand-written and carries no measured number. Each table lists the
records it came from (command, date, machine, load, versions, commit). A record that is missing
reads "not measured yet: run <command>" (GPU rows: "not measured on this machine; run <command>
on a GPU").

    python -m bench.publish --write    # rewrite the spans of BENCHMARKS.md and README.md
    python -m bench.publish --check    # exit 1 if either is out of date (tests do this)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench._meta import RESULTS, ROOT, check_record

LABEL = "bench/results"  # how the records' folder is named in the generated text
GPU = "gpu"  # the GPU section's records: bench/results/gpu/
FILES = ("BENCHMARKS.md", "README.md", "RELIABILITY.md")

_BLOCK = re.compile(r"<!-- bench:([a-z0-9-]+) -->(.*?)<!-- /bench:\1 -->", re.S)


def begin(name: str) -> str:
    return f"<!-- bench:{name} -->"


def end(name: str) -> str:
    return f"<!-- /bench:{name} -->"


# ---------------------------------------------------------------------------------- formatting


def n0(x: float) -> str:
    return f"{x:,.0f}"


def f1(x: float) -> str:
    return f"{x:.1f}"


def f2(x: float) -> str:
    return f"{x:.2f}"


def f3(x: float) -> str:
    return f"{x:.3f}"


def g4(x: float) -> str:
    return f"{x:.4g}"


def date(rec: dict) -> str:
    return rec["started_utc"].replace("T", " ")[:16] + " UTC"


def day(rec: dict) -> str:
    return rec["started_utc"][:10]


def machine(rec: dict) -> str:
    m = rec["machine"]
    mem = f", {m['memory_gib']:g} GiB" if m.get("memory_gib") else ""
    gpu = f", {m['gpu']}" if m.get("gpu") else ", no GPU"
    return f"{m['cpu']} ({m['usable_cores']} of {m['logical_cores']} cores{mem}{gpu})"


def cores(rec: dict) -> str:
    n = rec["machine"]["usable_cores"]
    return f"{n} core{'s' if n != 1 else ''}"


def load(rec: dict) -> str:
    la = rec["machine"]["load"]
    start = f"{la['start'][0]:.2f}" if la.get("start") else "?"
    stop = f"{la['end'][0]:.2f}" if la.get("end") else "?"
    peak = f"{la['max_1min']:.2f}" if la.get("max_1min") is not None else "?"
    return f"load average {start} at the start, {stop} at the end (max {peak})"


def commit(rec: dict) -> str:
    g = rec["git"]
    if not g.get("commit"):
        return "no git commit"
    return f"commit {g['commit']}" + (" with uncommitted changes" if g.get("dirty") else "")


def missing(cmd: str, gpu: bool = False) -> str:
    if gpu:
        return f"not measured on this machine; run `{cmd}` on a GPU"
    return f"not measured yet: run `{cmd}`"


def missing_table(cmd: str) -> str:
    return f"Not measured yet: run `{cmd}`."


def between(lo: float, hi: float, fmt: Callable[[float], str]) -> str:
    """``lo-hi``, or one figure when they are the same once written."""
    a, b = fmt(lo), fmt(hi)
    return a if a == b else f"{a}-{b}"


def load_short(rec: dict) -> str:
    la = rec["machine"]["load"]
    return f"a load average of {la['start'][0]:.1f} at the start, {la['max_1min']:.1f} at most"


def yes(ok: bool) -> str:
    return "yes" if ok else "no"


def in_k_of_n(oks: list[bool]) -> str:
    k, n = sum(oks), len(oks)
    return "yes" if k == n else "no" if k == 0 else f"in {k} of {n}"


# ------------------------------------------------------------------------------------ records


class Records:
    """The records of one results folder, read on demand; each table cites those it used."""

    def __init__(self, results: Path, label: str = LABEL):
        self.results, self.label = Path(results), label
        self._cache: dict[str, dict | None] = {}

    def get(self, name: str) -> dict | None:
        if name not in self._cache:
            path = self.results / name
            rec = None
            if path.exists():
                rec = json.loads(path.read_text())
                problems = check_record(rec)
                if problems:
                    raise SystemExit(f"error: {path}: {'; '.join(problems)}")
                if rec["bench"] == "bench_study" and not rec["figures"].get("complete"):
                    raise SystemExit(f"error: {path} is a partial or failed study record")
            self._cache[name] = rec
        return self._cache[name]

    def shown(self) -> list[str]:
        """The names of the records asked for that exist."""
        return [n for n, rec in self._cache.items() if rec is not None]


@dataclass
class Table:
    """A markdown table whose rows cite records: ``[n]`` in the last column, the list below."""

    records: Records
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    cited: list[str] = field(default_factory=list)

    def cite(self, *names: str) -> str:
        refs = []
        for name in names:
            if self.records.get(name) is None:
                continue
            if name not in self.cited:
                self.cited.append(name)
            refs.append(f"[{self.cited.index(name) + 1}]")
        return " ".join(refs) or "-"

    def add(self, *cells: str) -> None:
        self.rows.append(list(cells))

    def render(self) -> str:
        lines = [
            "| " + " | ".join([*self.header, "record"]) + " |",
            "| " + " | ".join(["---"] * (len(self.header) + 1)) + " |",
        ]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines) + sources(self.records, self.cited)


def source_line(records: Records, name: str) -> str:
    rec = records.get(name)
    path = f"{records.label}/{name}"
    how = "" if rec["source"] == "measured" else f"**transcribed**, not measured: {rec['source']}; "
    sw = rec["software"]
    threads = f"{sw['torch_threads']} thread{'s' if sw['torch_threads'] != 1 else ''}"
    return (
        f"[`{path}`]({path}): {how}`{rec['command']}`, {date(rec)}, {machine(rec)}, {load(rec)}, "
        f"Python {sw['python']}, torch {sw['torch']} ({threads}), numpy {sw['numpy']}, "
        f"{commit(rec)}"
    )


def sources(records: Records, names: list[str]) -> str:
    if not names:
        return ""
    lines = [f"{i}. {source_line(records, n)}" for i, n in enumerate(names, 1)]
    return "\n\nRecords:\n\n" + "\n".join(lines)


# ----------------------------------------------------------------------------- event engine

SIM_OVERHEAD = (
    "bench_sim-overhead-cpu.json",
    "python bench/bench_sim.py --case overhead --repeats 5",
)
SIM_SCALE = {  # row key -> (record, command)
    "asgd": ("bench_sim-scale-asgd-w10000.json", "python bench/bench_sim.py --case scale"),
    "asgd-100k": (
        "bench_sim-scale-asgd-w100000.json",
        "python bench/bench_sim.py --case scale --workers 100000",
    ),
    "rennala": (
        "bench_sim-scale-rennala_cancel-w10000.json",
        "python bench/bench_sim.py --case scale --method rennala_cancel",
    ),
    "rennala-S100": (
        "bench_sim-scale-rennala_cancel-S100-w10000-e100000.json",
        "python bench/bench_sim.py --case scale --method rennala_cancel --batch 100 "
        "--events 100000",
    ),
    "ringmaster": (
        "bench_sim-scale-ringmaster_cancel-w10000.json",
        "python bench/bench_sim.py --case scale --method ringmaster_cancel",
    ),
    "asgd-1m": (
        "bench_sim-scale-asgd-w1000000-e10000000.json",
        "python bench/bench_sim.py --case scale --workers 1000000 --events 10000000 "
        "--scale-repeats 1 --no-heap",
    ),
}


def overhead_figure(f: dict) -> str:
    return (
        f"**{f3(f['ratio_of_minima'])}** (min of {f['repeats']} interleaved; median "
        f"{f3(f['ratio_of_medians'])}): {f2(f['engine_s_min'])} s against "
        f"{f2(f['loop_s_min'])} s; replay {f['replay']}"
    )


def sim_table(records: Records) -> str:
    t = Table(records, ["case", "figure", "target", "met?"])
    name, cmd = SIM_OVERHEAD
    rec = records.get(name)
    case = (
        "paper experiment (asgd, 40 workers, 32,000 gradients of batch 256 on 10000 x 400): "
        "engine time (records included) / plain loop of the same gradients and updates"
    )
    if rec:
        f = rec["figures"]
        t.add(case, overhead_figure(f), "<= 1.02", yes(f["ratio_of_minima"] <= 1.02), t.cite(name))
    else:
        t.add(case, missing(cmd), "<= 1.02", "-", "-")
    name, cmd = SIM_SCALE["asgd"]
    rec = records.get(name)
    case = (
        "10,000 workers, tau_i = sqrt(i), exponential times, 10-d noisy quadratic, 1,000,000 "
        "events: the engine (records included) against the plain numpy heap loop "
        "(bench/plain_loop.py)"
    )
    target = ">= 1.6x the plain loop"
    if rec and "over_loop" in rec["figures"]:
        f = rec["figures"]
        heap = (
            f"; the engine on its heap schedule {n0(f['heap_events_per_s'])} "
            f"(bulk / heap {f2(f['bulk_over_heap'])}x)"
            if "heap_events_per_s" in f
            else ""
        )
        if "no_events_over_loop" in f:
            heap += f"; without its events.csv {f2(f['no_events_over_loop'])}x the loop"
        t.add(
            case,
            f"**{f2(f['over_loop'])}x** (best of {f['repeats']} interleaved; median "
            f"{f2(f['over_loop_median'])}x): {n0(f['events_per_s'])} events/s against "
            f"{n0(f['loop_events_per_s'])}{heap}",
            target,
            yes(f["over_loop"] >= 1.6),
            t.cite(name),
        )
        t.add(
            "same, peak resident memory",
            f"**{n0(f['peak_rss_mib'])} MiB** ({n0(f['rss_growth_mib'])} MiB above the process "
            f"before the run), events writer {n0(f['writer_peak_rss_mib'])} MiB",
            "<= 1 GiB",
            yes(f["peak_rss_mib"] + f["writer_peak_rss_mib"] <= 1024),
            t.cite(name),
        )
    else:
        t.add(case, missing(cmd), target, "-", "-")
        t.add("same, peak resident memory", missing(cmd), "<= 1 GiB", "-", "-")
    name, cmd = SIM_SCALE["asgd-1m"]
    rec = records.get(name)
    case = "1,000,000 workers, same case, 10,000,000 events: peak memory (run and events writer)"
    if rec:
        f = rec["figures"]
        peak = f["peak_rss_mib"] + f["writer_peak_rss_mib"]
        loop = (
            f"; the plain loop {n0(f['loop_events_per_s'])} events/s"
            if "loop_events_per_s" in f
            else ""
        )
        t.add(
            case,
            f"**{n0(peak)} MiB** ({n0(f['peak_rss_mib'])} + {n0(f['writer_peak_rss_mib'])}); "
            f"{n0(f['events_per_s'])} events/s ({f1(f['seconds'])} s; "
            f"{f1(f['seconds_with_build'] - f['seconds'])} s more to build the run){loop}",
            "<= 4 GiB, events/s reported",
            yes(peak <= 4096),
            t.cite(name),
        )
    else:
        t.add(case, missing(cmd), "<= 4 GiB, events/s reported", "-", "-")
    others = [
        ("asgd-100k", "100,000 workers, same case, 1,000,000 events", "runs, reported"),
        ("rennala", "Rennala with cancel-and-restart (S = n), 10,000 workers", "reported"),
        (
            "rennala-S100",
            "Rennala with cancel-and-restart, S = 100, 10,000 workers, 100,000 events",
            "reported",
        ),
        ("ringmaster", "Ringmaster with cancellation (R = n), 10,000 workers", "reported"),
    ]
    for key, case, target in others:
        name, cmd = SIM_SCALE[key]
        rec = records.get(name)
        if rec:
            f = rec["figures"]
            t.add(
                case,
                f"**{n0(f['events_per_s'])} events/s** ({f2(f['seconds'])} s), peak "
                f"{n0(f['peak_rss_mib'])} MiB",
                target,
                "yes" if target.startswith("runs") else "",
                t.cite(name),
            )
        else:
            t.add(case, missing(cmd), target, "-", "-")
    return t.render()


def sim_us_per_event(records: Records) -> str:
    name, cmd = SIM_OVERHEAD
    rec = records.get(name)
    if rec is None:
        return f"not measured yet: `{cmd}`"
    f = rec["figures"]
    return (
        f"{f1(f['engine_us_per_event_over_loop'])} µs of engine per event "
        f"({f1(f['engine_us_per_gradient'])} µs a gradient in the engine, "
        f"{f1(f['loop_us_per_gradient'])} in the loop; {day(rec)})"
    )


def rennala_s(records: Records) -> str:
    small, full = (records.get(SIM_SCALE[k][0]) for k in ("rennala-S100", "rennala"))
    if small is None or full is None:
        cmds = [SIM_SCALE[k][1] for k, r in (("rennala-S100", small), ("rennala", full)) if not r]
        return "not measured yet: " + ", ".join(f"`{c}`" for c in cmds)
    return (
        f"S = 100 at n = 10,000 runs at {n0(small['figures']['events_per_s'])} events/s, "
        f"S = n at {n0(full['figures']['events_per_s'])} ({day(small)})"
    )


# ---------------------------------------------------------------------------- process engine

RPC_PAPER = ("bench_rpc-paper.json", "python bench/bench_rpc.py --case paper --seconds 10 --runs 3")
RPC_EMULATED = (
    "bench_rpc-emulated.json",
    "python bench/bench_rpc.py --case emulated --seconds 10 --runs 3",
)
RPC_EMULATED_40 = (
    "bench_rpc-emulated-w40.json",
    "python bench/bench_rpc.py --case emulated --workers 40 --seconds 10 --runs 3",
)
RPC_TRANSPORT = (
    "bench_rpc-transport.json",
    "python bench/bench_rpc.py --case transport --seconds 6",
)
BARE = {
    n: (f"bare_rpc_ps-w{n}.json", f"python bench/bare_rpc_ps.py --workers {n} --seconds 10")
    for n in (2, 4, 8)
}


def _runs(values: list[float], fmt: Callable[[float], str]) -> str:
    return ", ".join(fmt(v) for v in values)


def _n_runs(rec: dict) -> str:
    n = len(rec["figures"]["runs"])
    return f"{n} run{'s' if n != 1 else ''} of {rec['params']['seconds']:g} s"


def rpc_table(records: Records) -> str:
    t = Table(records, ["case", "figure", "target", "met?"])
    name, cmd = RPC_PAPER
    paper = records.get(name)
    case = (
        "paper problem (least squares 10000 x 400, batch 256), 4 workers, `topology=native`, asgd"
    )
    if paper:
        runs = paper["figures"]["runs"]
        rates = [r["gradients_per_s"] for r in runs]
        t.add(
            case,
            f"**{_runs(rates, n0)} gradients/s** ({_n_runs(paper)}); server CPU "
            f"{_runs([r['server_cpu_us_per_gradient'] for r in runs], n0)} µs per gradient",
            ">= 1,600",
            in_k_of_n([v >= 1600 for v in rates]),
            t.cite(name),
        )
    else:
        t.add(case, missing(cmd), ">= 1,600", "-", "-")
    parts, cited = [], []
    for n, (bname, bcmd) in BARE.items():
        rec = records.get(bname)
        if rec:
            parts.append(f"{n} workers: {n0(rec['figures']['gradients_per_s'])}/s")
            cited.append(bname)
        else:
            parts.append(f"{n} workers: {missing(bcmd)}")
    bare4 = records.get(BARE[4][0])
    if paper and bare4:
        ratios = [
            r["gradients_per_s"] / bare4["figures"]["gradients_per_s"]
            for r in paper["figures"]["runs"]
        ]
        met = (
            f"{yes(min(ratios) >= 1 / 1.2)}: the engine does {f2(min(ratios))}-"
            f"{f2(max(ratios))}x the bare server's rate at 4 workers"
        )
        cited.append(name)
    else:
        met = "-"
    t.add(
        "the yardstick: bare parameter server (`bench/bare_rpc_ps.py`: push gradient, pull "
        "point, one lock), same problem",
        "; ".join(parts),
        "the engine at least 1 / 1.2 of the bare server's rate",
        met,
        t.cite(*cited),
    )
    for (name, cmd), n in ((RPC_EMULATED, 4), (RPC_EMULATED_40, 40)):
        rec = records.get(name)
        case = f"emulated 20 ms jobs, {n} workers (homogeneous, no noise)"
        if rec:
            f = rec["figures"]
            ratios = [r["ratio_to_ideal"] for r in f["runs"]]
            rates = [r["gradients_per_s"] for r in f["runs"]]
            t.add(
                case,
                f"**{_runs(ratios, f3)}** of n / 20 ms ({_runs(rates, f1)} gradients/s; "
                f"{_n_runs(rec)})",
                ">= 0.9",
                in_k_of_n([v >= 0.9 for v in ratios]),
                t.cite(name),
            )
        else:
            t.add(case, missing(cmd), ">= 0.9", "-", "-")
    transport = records.get(RPC_TRANSPORT[0])
    case = (
        "the server's CPU per gradient: d = 1e3 (free gradient, asgd, 1, 2, 4 workers) and the "
        "paper problem (4 workers)"
    )
    cpu, cited = [], []
    parts = []
    if transport:
        rows = [r for r in transport["figures"]["rows"]
                if r["dim"] == 1000 and r["method"] == "asgd"]  # fmt: skip
        values = [r["server_cpu_us_per_gradient"] for r in rows]
        cpu += values
        parts.append(f"d = 1e3: {_runs(values, n0)} µs")
        cited.append(RPC_TRANSPORT[0])
    else:
        parts.append(f"d = 1e3: {missing(RPC_TRANSPORT[1])}")
    if paper:
        values = [r["server_cpu_us_per_gradient"] for r in paper["figures"]["runs"]]
        cpu += values
        parts.append(f"paper problem: {_runs(values, n0)} µs")
        cited.append(RPC_PAPER[0])
    else:
        parts.append(f"paper problem: {missing(RPC_PAPER[1])}")
    t.add(
        case,
        "; ".join(parts),
        "<= 150 µs",
        in_k_of_n([v <= 150 for v in cpu]) if transport and paper else "-",
        t.cite(*cited),
    )
    return t.render()


def transport_table(records: Records) -> str:
    name, cmd = RPC_TRANSPORT
    rec = records.get(name)
    if rec is None:
        return missing_table(cmd)
    t = Table(
        records,
        [
            "d",
            "workers",
            "method",
            "gradients/s",
            "ideal",
            "ratio",
            "server CPU µs / gradient",
            "µs / update",
        ],
    )
    ref = t.cite(name)
    for r in rec["figures"]["rows"]:
        t.add(
            f"{r['dim']:.0e}".replace("e+0", "e"),
            str(r["workers"]),
            r["method"],
            n0(r["gradients_per_s"]),
            n0(r["ideal_gradients_per_s"]),
            f3(r["ratio_to_ideal"]),
            n0(r["server_cpu_us_per_gradient"]),
            n0(r["server_cpu_us_per_update"]),
            ref,
        )
    return t.render()


def bare_vs_engine(records: Records) -> str:
    paper = records.get(RPC_PAPER[0])
    bare = [records.get(BARE[n][0]) for n in BARE]
    if paper is None or any(b is None for b in bare):
        cmds = [RPC_PAPER[1]] if paper is None else []
        cmds += [BARE[n][1] for n, b in zip(BARE, bare, strict=True) if b is None]
        return "not measured yet: " + ", ".join(f"`{c}`" for c in cmds)
    rates = [b["figures"]["gradients_per_s"] for b in bare]
    engine = [r["gradients_per_s"] for r in paper["figures"]["runs"]]
    return (
        f"the bare server reaches {n0(min(rates))}-{n0(max(rates))} gradients/s here, the engine "
        f"{n0(min(engine))}-{n0(max(engine))} ({day(paper)})"
    )


# ------------------------------------------------------------------------------------- GPU

G_OVERHEAD = (
    "bench_sim-overhead-cuda.json",
    "python bench/bench_sim.py --case overhead --device cuda --repeats 3 --out bench/results/gpu",
)
G_UNFUSED = (
    "bench_sim-overhead-cuda-unfused.json",
    "python bench/bench_sim.py --case overhead --device cuda --repeats 3 --unfused "
    "--out bench/results/gpu",
)
G_CPU = (
    "bench_sim-overhead-cpu.json",
    "python bench/bench_sim.py --case overhead --device cpu --repeats 2 --out bench/results/gpu",
)
G_AGREE = (
    "bench_sim-agreement.json",
    "python bench/bench_sim.py --case agreement --out bench/results/gpu",
)
G_RPC = {
    d: (
        f"bench_rpc-gpu-{d}.json",
        f"python bench/bench_rpc.py --case gpu --device {d} --seconds 10 --runs 2 "
        "--out bench/results/gpu",
    )
    for d in ("cuda", "cpu")
}
G_TESTS = (
    "bench_tests-gpu-test_rpc.json",
    "python bench/bench_tests.py --in-place --marker gpu --out bench/results/gpu "
    "tests/engines/test_rpc.py",
)


def _rpc_figure(f: dict) -> str:
    runs = f["runs"]
    rates = [r["gradients_per_s"] for r in runs]
    start = [r["startup_s"] for r in runs]
    cpu = [r["server_cpu_us_per_gradient"] / 1000 for r in runs]
    return (
        f"**{_runs(rates, n0)} gradients/s** ({len(runs)} run{'s' if len(runs) != 1 else ''}); "
        f"start-up {between(min(start), max(start), f1)} s; server CPU "
        f"{between(min(cpu), max(cpu), f2)} ms per gradient"
    )


def gpu_table(records: Records) -> str:
    t = Table(records, ["case", "figure", "target", "met?"])

    def row(spec, case, target, figure, met=None):
        name, cmd = spec
        rec = records.get(name)
        if rec is None:
            t.add(case, missing(cmd, gpu=True), target, "-", "-")
        else:
            f = rec["figures"]
            t.add(case, figure(f), target, "" if met is None else met(f), t.cite(name))

    row(
        G_OVERHEAD,
        "event engine, paper experiment with `objective.device=cuda`: engine time / "
        "plain per-gradient loop on the same GPU",
        "<= 0.3",
        overhead_figure,
        lambda f: yes(f["ratio_of_minima"] <= 0.3),
    )
    row(
        G_UNFUSED, "same, the rounds in the CPU's per-round form (`--unfused`)", "", overhead_figure
    )
    row(
        G_AGREE,
        "the same 8,000-gradient paper run on the GPU and on the CPU: final F - F*",
        "equal (4 digits)",
        lambda f: "; ".join(
            f"{r['method']}: {g4(r['suboptimality_cpu'])} (CPU), "
            f"{g4(r['suboptimality_cuda'])} (GPU)"
            for r in f["rows"]
        ),
        lambda f: yes(all(r["equal_4_digits"] for r in f["rows"])),
    )
    row(G_CPU, "same experiment on that machine's CPU (for scale)", "", overhead_figure)
    row(
        G_RPC["cuda"],
        "`engine=rpc`, cnn on digits, 4 workers sharing the one GPU, `topology=native`, asgd",
        "reported",
        _rpc_figure,
    )
    row(G_RPC["cpu"], "same with the workers on the CPU (`engine.device=cpu`)", "", _rpc_figure)
    row(
        G_TESTS,
        "`gpu`-marked tests of the process engine (2-worker CUDA runs, records complete)",
        "pass",
        lambda f: f"{f['passed']} passed, {f['failed']} failed, {f['errors']} errors",
        lambda f: yes(f["passed"] > 0 and f["failed"] == 0 and f["errors"] == 0),
    )
    return t.render()


def gpu_us_per_gradient(records: Records) -> str:
    name, cmd = G_OVERHEAD
    rec = records.get(name)
    if rec is None:
        return f"not measured on this machine: `{cmd}` on a GPU"
    f = rec["figures"]
    return (
        f"{f1(f['engine_us_per_gradient'])} µs a gradient against the loop's "
        f"{f1(f['loop_us_per_gradient'])} ({day(rec)})"
    )


# ----------------------------------------------------------------------------- study, tests

STUDY = {
    p: (f"bench_study-{p}.json", f"python bench/bench_study.py --profile {p}")
    for p in ("full", "quick")
}
TESTS = {
    "default": ("bench_tests-default.json", "python bench/bench_tests.py"),
    "hog": ("bench_tests-default-hog2.json", "python bench/bench_tests.py --hog 2"),
    "slow": ("bench_tests-slow.json", "python bench/bench_tests.py --marker slow"),
}
_SUITE = {
    "default": "`python -m pytest`",
    "hog": "`python -m pytest` beside 2 busy processes (a CPU hog)",
    "slow": "`python -m pytest -m slow`",
}
STUDY_TARGET = {"full": "<= 18 min (2 idle cores)", "quick": ""}
STUDY_TARGET_MIN = 18


def _stages(f: dict) -> str:
    return ", ".join(f"{s['stage']} {f1(s['minutes'])}" for s in f["stages"])


def study_table(records: Records) -> str:
    t = Table(records, ["profile", "measured", "target", "met?"])
    for prof, (name, cmd) in STUDY.items():
        rec = records.get(name)
        target = STUDY_TARGET[prof]
        if rec is None:
            t.add(f"{prof}, fresh clone, from nothing", missing(cmd), target, "-", "-")
            continue
        f = rec["figures"]
        met = yes(f["total_min"] <= STUDY_TARGET_MIN) if target else ""
        t.add(
            f"{prof}, fresh clone, from nothing",
            f"**{f1(f['total_min'])} min** "
            f"({n0(f['total_s'])} s; {f1(f['cpu_s'] / 60)} CPU-minutes; {f['study_jobs']} "
            f"parallel jobs): {_stages(f)} (minutes); afterwards "
            f"{'nothing to do' if f['up_to_date_after'] else '**stages still stale**'}",
            target,
            met,
            t.cite(name),
        )
    return t.render()


def tests_table(records: Records) -> str:
    t = Table(records, ["suite", "measured", "where"])
    for suite, (name, cmd) in TESTS.items():
        rec = records.get(name)
        label = _SUITE[suite]
        if rec is None:
            t.add(label, missing(cmd), "-", "-")
            continue
        f = rec["figures"]
        counts = ", ".join(
            f"{f[k]} {k}" for k in ("passed", "failed", "errors", "skipped", "deselected") if f[k]
        )
        t.add(
            label,
            f"**{f1(f['minutes'])} min**: {counts or 'nothing collected'}",
            rec["params"]["where"],
            t.cite(name),
        )
    return t.render()


DRILL = ("drill_rpc.json", "python bench/drill_rpc.py --repeats 5")


def drill_table(records: Records) -> str:
    name, cmd = DRILL
    rec = records.get(name)
    if rec is None:
        return missing_table(cmd)
    t = Table(
        records,
        [
            "fault",
            "ended as specified",
            "seconds (fault to end; to detection for lost workers)",
            "processes left",
            "records lost",
            "fault after N jobs",
        ],
    )
    ref = t.cite(name)
    for k in rec["figures"]["faults"]:
        if k["seconds_min"] is None:
            secs = "-"
        else:
            secs = between(k["seconds_min"], k["seconds_max"], f2)
            secs += " (from launch)" if k["seconds_from"] == "launch" else ""
        after = ", ".join(str(r["after"]) for r in k["runs"]) if k["kind"] != "taken-port" else "-"
        t.add(
            k["kind"],
            f"{k['ended_as_specified']}/{k['repeats']}",
            secs,
            str(k["processes_left"]),
            str(k["records_lost"]),
            after,
            ref,
        )
    return t.render()


KILL = ("drill_kill.json", "python bench/drill_kill.py --repeats 5")


def kill_table(records: Records) -> str:
    name, cmd = KILL
    rec = records.get(name)
    if rec is None:
        return missing_table(cmd)
    t = Table(
        records,
        [
            "engine",
            "as specified (headers, summary running, MLflow KILLED by the next run, none left)",
            "records reach back to (s before the kill)",
            "kill at (s after the first rows)",
            "event rows on disk",
        ],
    )
    ref = t.cite(name)
    for engine, f in rec["figures"].items():
        t.add(
            engine,
            f"{f['ok']}/{f['repeats']}",
            between(f["lag_s_min"], f["lag_s_max"], f2),
            ", ".join(f2(r["at_s"]) for r in f["runs"]),
            ", ".join(str(r["rows"]) for r in f["runs"]),
            ref,
        )
    return t.render()


STUDY_KILL = ("drill_study-quick.json",
              "python bench/drill_study.py --profile quick --kills 3 --expect 1100")  # fmt: skip


def study_kill_table(records: Records) -> str:
    name, cmd = STUDY_KILL
    rec = records.get(name)
    if rec is None:
        return missing_table(cmd)
    f = rec["figures"]
    t = Table(
        records,
        [
            "profile",
            "uninterrupted (min)",
            "killed 3 times and resumed (min, all attempts)",
            "ratio",
            "kills (s into the study: stage)",
            "outputs byte-identical",
        ],
    )
    kills = [a for a in f["attempts"] if a["killed"]]
    t.add(
        rec["params"]["profile"],
        f1(f["straight_s"] / 60),
        f1(f["killed_s"] / 60),
        f"{f['ratio']:.3f}",
        ", ".join(f"{f1(a['at_s'])}: {a['stage']}" for a in kills),
        f"yes ({f['stages_compared']} stages' outputs, the committed files)"
        if f["identical"]
        else "no",
        t.cite(name),
    )
    return t.render()


def study_kill_ratio(records: Records) -> str:
    name, cmd = STUDY_KILL
    rec = records.get(name)
    if rec is None:
        return f"not measured yet: run `{cmd}`"
    f = rec["figures"]
    same = "byte-identical" if f["identical"] else "NOT byte-identical"
    return (
        f"A {rec['params']['profile']} study killed {f['kills']} times and resumed took "
        f"{f['ratio']:.3f} times as long as an uninterrupted one, its outputs {same}"
    )


# ------------------------------------------------------------------------------ README spans


def _study_time(records: Records, prof: str) -> str:
    name, cmd = STUDY[prof]
    rec = records.get(name)
    if rec is None:
        return f"time not measured yet: run `{cmd}`"
    f = rec["figures"]
    return (
        f"{f1(f['total_min'])} minutes from nothing in a fresh clone on {cores(rec)}, measured "
        f"{day(rec)} at {load_short(rec)}, by `{rec['command']}`"
    )


def tests_time(records: Records) -> str:
    name, cmd = TESTS["default"]
    rec = records.get(name)
    if rec is None:
        return f"time not measured yet: run `{cmd}`"
    f = rec["figures"]
    return (
        f"{f1(f['minutes'])} minutes {'in a ' if rec['params']['where'] == 'fresh clone' else ''}"
        f"{rec['params']['where']} on {cores(rec)}, measured {day(rec)} at {load_short(rec)}, by "
        f"`{rec['command']}`"
    )


def study_times(records: Records) -> str:
    parts = []
    for prof, (name, cmd) in STUDY.items():
        rec = records.get(name)
        title = f"{prof.capitalize()} profile"
        if rec is None:
            parts.append(f"{title}: not measured yet: run `{cmd}`.")
            continue
        f = rec["figures"]
        parts.append(
            f"{title} (`{rec['command']}`, a fresh clone, {date(rec)}, {machine(rec)}, "
            f"{load(rec)}): **{f1(f['total_min'])} minutes** ({n0(f['total_s'])} s): "
            f"{_stages(f)} (minutes)."
        )
    return f"Times from nothing (records in [`{LABEL}/`]({LABEL}/)). " + " ".join(parts)


def nonconvex_share(records: Records) -> str:
    name, cmd = STUDY["full"]
    rec = records.get(name)
    if rec is None:
        return f"not measured yet: `{cmd}`"
    f = rec["figures"]
    nc = next((s for s in f["stages"] if s["stage"] == "nonconvex"), None)
    if nc is None:
        return "no nonconvex stage in the record"
    return f"{f1(nc['minutes'])} of the full profile's {f1(f['total_min'])} minutes ({day(rec)})"


STUDY_PROFILE = (
    "study_profile-full.json",
    "python bench/study_profile.py --results <the kept clone>/results/full "
    "--study bench/results/bench_study-full.json",
)


def study_profile_table(records: Records) -> str:
    name, cmd = STUDY_PROFILE
    rec = records.get(name)
    if rec is None:
        return missing_table(cmd)
    f = rec["figures"]
    t = Table(records, ["stage", "runs", "seconds inside runs", "stage: wall s x jobs",
                        "share of the stage inside runs"])  # fmt: skip
    ref = t.cite(name)
    for r in f["rows"]:
        label = r["stage"] + (f" ({r['part']})" if r["part"] else "")
        t.add(label, n0(r["runs"]), n0(r["run_s"]),
              f"{n0(r['stage_s'])} x {r['jobs']} = {n0(r['capacity_s'])}", f3(r["in_runs"]),
              ref)  # fmt: skip
    return t.render()


# ------------------------------------------------------------------------------------ blocks


@dataclass(frozen=True)
class Block:
    render: Callable[[Records, Records], str]  # (records, GPU records) -> text
    inline: bool = False


BLOCKS: dict[str, dict[str, Block]] = {
    "BENCHMARKS.md": {
        "sim": Block(lambda r, g: sim_table(r)),
        "sim-us-per-event": Block(lambda r, g: sim_us_per_event(r), inline=True),
        "rennala-s": Block(lambda r, g: rennala_s(r), inline=True),
        "rpc": Block(lambda r, g: rpc_table(r)),
        "transport": Block(lambda r, g: transport_table(r)),
        "bare-vs-engine": Block(lambda r, g: bare_vs_engine(r), inline=True),
        "gpu": Block(lambda r, g: gpu_table(g)),
        "gpu-us-per-gradient": Block(lambda r, g: gpu_us_per_gradient(g), inline=True),
        "study": Block(lambda r, g: study_table(r)),
        "nonconvex-share": Block(lambda r, g: nonconvex_share(r), inline=True),
        "study-profile": Block(lambda r, g: study_profile_table(r)),
        "tests": Block(lambda r, g: tests_table(r)),
        "drill": Block(lambda r, g: drill_table(r)),
    },
    "README.md": {
        "full-time": Block(lambda r, g: _study_time(r, "full"), inline=True),
        "quick-time": Block(lambda r, g: _study_time(r, "quick"), inline=True),
        "tests-time": Block(lambda r, g: tests_time(r), inline=True),
        "study-times": Block(lambda r, g: study_times(r)),
        "study-kill": Block(lambda r, g: study_kill_ratio(r), inline=True),
    },
    "RELIABILITY.md": {
        "drill": Block(lambda r, g: drill_table(r)),
        "kill": Block(lambda r, g: kill_table(r)),
        "study-kill": Block(lambda r, g: study_kill_table(r)),
    },
}


def span(name: str, text: str, inline: bool) -> str:
    sep = "" if inline else "\n\n"  # a block stands apart, so a table ends before its marker
    return f"{begin(name)}{sep}{text}{sep}{end(name)}"


def fill(text: str, blocks: dict[str, Block], records: Records, gpu: Records, where: str) -> str:
    """``text`` with each generated span rewritten; every block of ``blocks`` must be there
    once, and no other."""
    found = [m.group(1) for m in _BLOCK.finditer(text)]
    unknown = sorted(set(found) - set(blocks))
    absent = sorted(set(blocks) - set(found))
    twice = sorted({n for n in found if found.count(n) > 1})
    if unknown or absent or twice:
        raise SystemExit(
            f"error: {where}: generated spans unknown {unknown}, missing {absent}, "
            f"repeated {twice} (markers {begin('<name>')} ... {end('<name>')})"
        )
    return _BLOCK.sub(
        lambda m: span(
            m.group(1), blocks[m.group(1)].render(records, gpu), blocks[m.group(1)].inline
        ),
        text,
    )


def generate(
    root: Path = ROOT, results: Path = RESULTS, unused: list[str] | None = None
) -> dict[Path, tuple[str, str]]:
    """{file: (its text now, its text generated from the records)}; ``unused`` gets the records
    of ``results`` that no span shows (a record named after options no table uses)."""
    records = Records(results)
    gpu = Records(results / GPU, f"{LABEL}/{GPU}")
    out = {}
    for name in FILES:
        path = root / name
        old = path.read_text()
        out[path] = (old, fill(old, BLOCKS[name], records, gpu, name))
    if unused is not None:
        shown = {records.results / n for n in records.shown()}
        shown |= {gpu.results / n for n in gpu.shown()}
        unused += sorted(
            p.relative_to(results).as_posix() for p in results.rglob("*.json") if p not in shown
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.publish",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--write", action="store_true", help="rewrite BENCHMARKS.md and README.md")
    p.add_argument("--check", action="store_true", help="exit 1 if either is out of date")
    p.add_argument("--results", type=Path, default=RESULTS, help="the records' folder")
    a = p.parse_args(argv)
    if a.write == a.check:
        p.error("give --write or --check")
    stale: list[str] = []
    unused: list[str] = []
    for path, (old, new) in generate(ROOT, a.results, unused).items():
        if new != old:
            stale.append(path.name)
            if a.write:
                path.write_text(new)
    if unused:
        print(
            f"records no table shows (other options than BENCHMARKS.md's commands): "
            f"{', '.join(unused)}"
        )
    if a.check and (stale or unused):
        if stale:
            print(f"out of date: {', '.join(stale)} (python -m bench.publish --write)")
        return 1
    print(("rewrote: " + ", ".join(stale)) if a.write and stale else "up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
