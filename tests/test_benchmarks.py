"""BENCHMARKS.md and README.md's time figures are generated from the benchmarks' JSON records
(bench/results/), never typed by hand: the generated spans are current, the records complete,
the generator's output exact, and a benchmark writes a valid record."""

from __future__ import annotations

import json
import re

import pytest
import torch

from bench import publish
from bench._meta import REQUIRED, RESULTS, check_record
from pipeline import PROJECT_ROOT


def test_generated_spans_are_current():
    unused: list[str] = []
    stale = [p.name for p, (old, new) in publish.generate(unused=unused).items() if new != old]
    assert stale == [], "out of date: run python -m bench.publish --write"
    assert unused == [], "records that no table shows"


def test_committed_records_parse_and_are_complete():
    for path in sorted(RESULTS.rglob("*.json")):
        rec = json.loads(path.read_text())
        assert check_record(rec) == [], path
        assert rec["source"] == "measured" or rec["source"].startswith("transcribed"), path


def _outside_spans(text: str) -> str:
    text = re.sub(r"<!-- bench:([a-z0-9-]+) -->.*?<!-- /bench:\1 -->", " ", text, flags=re.S)
    return re.sub(r"```.*?```", " ", text, flags=re.S)  # commands are not figures


_MEASURED = re.compile(
    r"\d[\d,.]*\s*(?:s|ms|µs|us|min|minutes?|seconds?|hours?|MiB|GiB|MB|GB|events/s|gradients/s)"
    r"(?![\w/])"
)


def test_no_measured_figure_outside_the_generated_spans():
    bench = _outside_spans((PROJECT_ROOT / "BENCHMARKS.md").read_text())
    assert _MEASURED.findall(bench) == []
    # README: every duration in minutes comes from a record
    readme = _outside_spans((PROJECT_ROOT / "README.md").read_text())
    assert re.findall(r"\d[\d.]*\s*min(?:utes?)?\b|a few minutes", readme) == []


# ------------------------------------------------------------------------- synthetic records


def _record(bench, case, figures, units, command, params=None, **over):
    rec = {
        "schema": 1,
        "bench": bench,
        "case": case,
        "source": "measured",
        "command": command,
        "params": params or {},
        "started_utc": "2026-12-03T10:00:00Z",
        "finished_utc": "2026-12-03T10:05:00Z",
        "wall_s": 300.0,
        "machine": {
            "cpu": "Test CPU",
            "logical_cores": 2,
            "usable_cores": 2,
            "memory_gib": 24.0,
            "gpu": None,
            "os": "Linux",
            "load": {"start": [0.1, 0.2, 0.3], "end": [1.5, 0.5, 0.4], "max_1min": 1.75},
        },
        "software": {
            "python": "3.11.7",
            "torch": "2.13.0+cpu",
            "numpy": "2.4.6",
            "torch_threads": 1,
        },
        "git": {"commit": "abc1234", "dirty": False},
        "figures": figures,
        "units": units,
    }
    rec.update(over)
    assert check_record(rec) == []
    return rec


def _write(folder, name, rec):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(rec))


OVERHEAD = {
    "gradients": 32000,
    "repeats": 5,
    "replay": "one by one",
    "engine_s": [4.5, 4.47],
    "loop_s": [4.2, 4.17],
    "engine_s_min": 4.47,
    "loop_s_min": 4.17,
    "engine_s_median": 4.485,
    "loop_s_median": 4.185,
    "ratio_of_minima": 1.0719,
    "ratio_of_medians": 1.0717,
    "engine_us_per_gradient": 139.6875,
    "loop_us_per_gradient": 130.3125,
    "engine_us_per_event_over_loop": 9.375,
}
SCALE = {
    "repeats": 3,
    "events": 1000000,
    "schedule": "bulk",
    "seconds": 1.6,
    "events_per_s": 625000.0,
    "seconds_median": 1.7,
    "seconds_with_build": 1.65,
    "peak_rss_mib": 380.0,
    "rss_growth_mib": 150.0,
    "writer_peak_rss_mib": 60.0,
    "loop_seconds": 2.8,
    "loop_events_per_s": 357142.86,
    "over_loop": 1.75,
    "over_loop_median": 1.7,
    "heap_seconds": 7.0,
    "heap_events_per_s": 142857.14,
    "bulk_over_heap": 4.375,
}
STUDY = {
    "stages": [
        {
            "stage": "data",
            "seconds": 30.0,
            "minutes": 0.5,
            "cpu_seconds": 40.0,
            "rc": 0,
            "load_start": 0.1,
            "load_end": 1.0,
        },
        {
            "stage": "nonconvex",
            "seconds": 390.0,
            "minutes": 6.5,
            "cpu_seconds": 700.0,
            "rc": 0,
            "load_start": 1.0,
            "load_end": 2.0,
        },
    ],
    "total_s": 420.0,
    "total_min": 7.0,
    "cpu_s": 740.0,
    "clone_s": 1.0,
    "status_s": 2.0,
    "up_to_date_after": True,
    "complete": True,
    "failed": False,
    "study_jobs": 2,
}
TESTS = {
    "seconds": 600.0,
    "minutes": 10.0,
    "exit_code": 0,
    "passed": 560,
    "failed": 0,
    "skipped": 3,
    "deselected": 40,
    "errors": 0,
    "xfailed": 0,
    "xpassed": 0,
    "warnings": 0,
    "pytest_seconds": 598.1,
    "summary": "560 passed, 3 skipped, 40 deselected in 598.10s",
}

SOURCE = (
    "`, 2026-12-03 10:00 UTC, Test CPU (2 of 2 cores, 24 GiB, no GPU), load average 0.10 at the "
    "start, 1.50 at the end (max 1.75), Python 3.11.7, torch 2.13.0+cpu (1 thread), numpy "
    "2.4.6, commit abc1234"
)


@pytest.fixture
def synthetic(tmp_path):
    from bench.bench_sim import OVERHEAD_UNITS, SCALE_UNITS
    from bench.bench_study import UNITS as STUDY_UNITS
    from bench.bench_tests import UNITS as TESTS_UNITS

    res = tmp_path / "results"
    _write(
        res,
        "bench_sim-overhead-cpu.json",
        _record(
            "bench_sim",
            "overhead",
            OVERHEAD,
            OVERHEAD_UNITS,
            "python bench/bench_sim.py --case overhead --repeats 5",
        ),
    )
    _write(
        res,
        "bench_sim-scale-asgd-w10000.json",
        _record("bench_sim", "scale", SCALE, SCALE_UNITS, "python bench/bench_sim.py --case scale"),
    )
    _write(
        res,
        "bench_study-quick.json",
        _record(
            "bench_study",
            "quick",
            STUDY,
            STUDY_UNITS,
            "python bench/bench_study.py",
            {"profile": "quick", "where": "fresh clone"},
        ),
    )
    _write(
        res,
        "bench_tests-default.json",
        _record(
            "bench_tests",
            "default",
            TESTS,
            TESTS_UNITS,
            "python bench/bench_tests.py",
            {"where": "fresh clone"},
            source="transcribed from a note of 2026-11-26",
            git={"commit": "abc1234", "dirty": True},
        ),
    )
    return res


def test_generated_tables_from_synthetic_records(synthetic):
    records = publish.Records(synthetic)
    sim = publish.sim_table(records).splitlines()
    assert sim[2] == (
        "| paper experiment (asgd, 40 workers, 32,000 gradients of batch 256 on 10000 x 400): "
        "engine time (records included) / plain loop of the same gradients and updates | "
        "**1.072** (min of 5 interleaved; median 1.072): 4.47 s against 4.17 s; replay one by "
        "one | <= 1.02 | no | [1] |"
    )
    assert sim[3:6] == [
        "| 10,000 workers, tau_i = sqrt(i), exponential times, 10-d noisy quadratic, 1,000,000 "
        "events: the engine (records included) against the plain numpy heap loop "
        "(bench/plain_loop.py) | **1.75x** (best of 3 interleaved; median 1.70x): 625,000 "
        "events/s against 357,143; the engine on its heap schedule 142,857 (bulk / heap 4.38x) "
        "| >= 1.6x the plain loop | yes | [2] |",
        "| same, peak resident memory | **380 MiB** (150 MiB above the process before the run), "
        "events writer 60 MiB | <= 1 GiB | yes | [2] |",
        "| 1,000,000 workers, same case, 10,000,000 events: peak memory (run and events writer) "
        "| not measured yet: run `python bench/bench_sim.py --case scale --workers 1000000 "
        "--events 10000000 --scale-repeats 1 --no-heap` | <= 4 GiB, events/s reported | - | - |",
    ]
    assert sim[-4:] == [
        "Records:",
        "",
        "1. [`bench/results/bench_sim-overhead-cpu.json`](bench/results/bench_sim-overhead-cpu"
        ".json): `python bench/bench_sim.py --case overhead --repeats 5" + SOURCE,
        "2. [`bench/results/bench_sim-scale-asgd-w10000.json`](bench/results/bench_sim-scale-"
        "asgd-w10000.json): `python bench/bench_sim.py --case scale" + SOURCE,
    ]
    assert publish.sim_us_per_event(records) == (
        "9.4 µs of engine per event (139.7 µs a gradient in the engine, 130.3 in the loop; "
        "2026-12-03)"
    )
    assert publish.study_table(records) == "\n".join(
        [
            "| profile | measured | target | met? | record |",
            "| --- | --- | --- | --- | --- |",
            "| full, fresh clone, from nothing | not measured yet: run "
            "`python bench/bench_study.py --profile full` | <= 18 min (2 idle cores) | - | - |",
            "| quick, fresh clone, from nothing | **7.0 min** (420 s; 12.3 CPU-minutes; 2 parallel "
            "jobs): data 0.5, nonconvex 6.5 (minutes); afterwards nothing to do |  |  | [1] |",
            "",
            "Records:",
            "",
            "1. [`bench/results/bench_study-quick.json`](bench/results/bench_study-quick.json): "
            "`python bench/bench_study.py" + SOURCE,
        ]
    )
    tests = publish.tests_table(records).splitlines()
    assert tests[2] == (
        "| `python -m pytest` | **10.0 min**: 560 passed, 3 skipped, 40 deselected | fresh clone "
        "| [1] |"
    )
    assert tests[-1] == (
        "1. [`bench/results/bench_tests-default.json`](bench/results/bench_tests-default.json): "
        "**transcribed**, not measured: transcribed from a note of 2026-11-26; "
        "`python bench/bench_tests.py" + SOURCE + " with uncommitted changes"
    )
    assert publish.drill_table(records) == (
        "Not measured yet: run `python bench/drill_rpc.py --repeats 5`."
    )
    gpu = publish.Records(synthetic / "gpu", "bench/results/gpu")
    assert (
        "not measured on this machine; run `python bench/bench_sim.py --case overhead "
        "--device cuda --repeats 3 --out bench/results/gpu` on a GPU" in publish.gpu_table(gpu)
    )


def test_readme_spans_from_synthetic_records(synthetic, tmp_path):
    text = (
        "Quick (<!-- bench:quick-time -->old<!-- /bench:quick-time -->), full "
        "(<!-- bench:full-time --><!-- /bench:full-time -->), tests "
        "(<!-- bench:tests-time -->x<!-- /bench:tests-time -->).\n"
        "<!-- bench:study-times -->\nold\n<!-- /bench:study-times -->\nAfter.\n"
        "Killed: <!-- bench:study-kill -->old<!-- /bench:study-kill -->.\n"
    )
    records = publish.Records(synthetic)
    gpu = publish.Records(tmp_path / "none")
    out = publish.fill(text, publish.BLOCKS["README.md"], records, gpu, "README.md")
    assert out == (
        "Quick (<!-- bench:quick-time -->7.0 minutes from nothing in a fresh clone on 2 cores, "
        "measured 2026-12-03 at a load average of 0.1 at the start, 1.8 at most, by "
        "`python bench/bench_study.py`<!-- /bench:quick-time -->), full (<!-- bench:full-time -->"
        "time not measured yet: run `python bench/bench_study.py --profile full`"
        "<!-- /bench:full-time -->), tests (<!-- bench:tests-time -->10.0 minutes in a fresh "
        "clone on 2 cores, measured 2026-12-03 at a load average of 0.1 at the start, 1.8 at "
        "most, by `python bench/bench_tests.py`<!-- /bench:tests-time -->).\n"
        "<!-- bench:study-times -->\n\n"
        "Times from nothing (records in [`bench/results/`](bench/results/)). Full profile: not "
        "measured yet: run `python bench/bench_study.py --profile full`. Quick profile "
        "(`python bench/bench_study.py`, a fresh clone, 2026-12-03 10:00 UTC, Test CPU (2 of 2 "
        "cores, 24 GiB, no GPU), load average 0.10 at the start, 1.50 at the end (max 1.75)): "
        "**7.0 minutes** (420 s): data 0.5, nonconvex 6.5 (minutes).\n\n"
        "<!-- /bench:study-times -->\nAfter.\n"
        "Killed: <!-- bench:study-kill -->not measured yet: run `python bench/drill_study.py "
        "--profile quick --kills 3 --expect 1100`<!-- /bench:study-kill -->.\n"
    )
    # a generated file keeps its spans: generating again changes nothing
    assert publish.fill(out, publish.BLOCKS["README.md"], records, gpu, "README.md") == out
    # a record no span shows is reported
    (synthetic / "bench_sim-scale-asgd-w10-e500.json").write_text(
        (synthetic / "bench_sim-overhead-cpu.json").read_text()
    )
    unused: list[str] = []
    root = tmp_path / "root"
    root.mkdir()
    for name in publish.FILES:
        (root / name).write_text((PROJECT_ROOT / name).read_text())
    publish.generate(root, synthetic, unused)
    assert unused == ["bench_sim-scale-asgd-w10-e500.json"]
    with pytest.raises(SystemExit, match="missing"):
        publish.fill("no spans", publish.BLOCKS["README.md"], records, gpu, "README.md")
    with pytest.raises(SystemExit, match="unknown"):
        publish.fill(
            out + "<!-- bench:nope --><!-- /bench:nope -->",
            publish.BLOCKS["README.md"],
            records,
            gpu,
            "README.md",
        )


def test_an_incomplete_record_is_refused(synthetic):
    rec = json.loads((synthetic / "bench_sim-overhead-cpu.json").read_text())
    del rec["machine"]["load"], rec["units"]["ratio_of_minima"]
    (synthetic / "bench_sim-overhead-cpu.json").write_text(json.dumps(rec))
    with pytest.raises(SystemExit, match="no machine.load.*no unit for figure 'ratio_of_minima'"):
        publish.sim_table(publish.Records(synthetic))


def test_pytest_summary_is_parsed():
    from bench.bench_tests import parse_summary

    out = (
        "...\n=== 2 failed, 560 passed, 3 skipped, 40 deselected, 1 error in 598.10s (0:09:58) ==="
    )
    got = parse_summary(out)
    assert (
        got["passed"],
        got["failed"],
        got["skipped"],
        got["deselected"],
        got["errors"],
        got["pytest_seconds"],
    ) == (560, 2, 3, 40, 1, 598.1)
    assert parse_summary("no summary")["pytest_seconds"] is None


def test_bench_sim_smoke_writes_a_valid_record(tmp_path):
    """The smallest scale case, in this process (torch's thread count restored)."""
    from bench import bench_sim

    threads = torch.get_num_threads()
    try:
        bench_sim.main(
            ["--case", "scale", "--workers", "10", "--events", "500", "--out", str(tmp_path)]
        )
    finally:
        torch.set_num_threads(threads)
    path = tmp_path / "bench_sim-scale-asgd-w10-e500.json"
    rec = json.loads(path.read_text())
    assert check_record(rec) == [] and set(REQUIRED) <= set(rec)
    assert rec["command"] == (
        f"python bench/bench_sim.py --case scale --workers 10 --events 500 --out {tmp_path}"
    )
    assert rec["figures"]["events"] == 500 and rec["figures"]["events_per_s"] > 0
    assert rec["params"] == {"method": "asgd", "workers": 10, "events": 500, "batch": None,
                             "repeats": 3, "loop": True, "heap": True}  # fmt: skip
    f = rec["figures"]
    assert f["schedule"] == "bulk" and f["repeats"] == 3
    # the plain loop and the heap schedule ran beside the engine, on the same events
    assert f["loop_events_per_s"] == 500 / f["loop_seconds"]
    assert f["over_loop"] == f["loop_seconds"] / f["seconds"]
    assert f["bulk_over_heap"] == f["heap_seconds"] / f["seconds"]
    assert rec["software"]["torch"] == torch.__version__


def _bench(script: str, *args: str, timeout: float = 900):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, f"bench/{script}.py", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_bench_study_times_a_stage_in_a_fresh_clone(tmp_path):
    out = tmp_path / "study.json"
    r = _bench("bench_study", "--stages", "data", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads(out.read_text())
    assert check_record(rec) == []
    f = rec["figures"]
    assert [s["stage"] for s in f["stages"]] == ["data"] and f["stages"][0]["rc"] == 0
    assert f["complete"] is False and f["failed"] is False and rec["git"]["dirty"] is False
    with pytest.raises(SystemExit, match="partial"):  # the publisher refuses a partial study
        out.rename(tmp_path / "bench_study-quick.json")
        publish.study_table(publish.Records(tmp_path))


@pytest.mark.slow
def test_bench_tests_times_pytest_in_a_fresh_clone(tmp_path):
    r = _bench("bench_tests", "--out", str(tmp_path), "tests/test_readme.py")
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads((tmp_path / "bench_tests-default-test_readme.json").read_text())
    assert check_record(rec) == []
    assert rec["params"]["where"] == "fresh clone"
    assert rec["figures"]["passed"] == 1 and rec["figures"]["exit_code"] == 0


def test_study_profile_sums_the_runs_of_each_stage(tmp_path):
    """bench/study_profile.py: per stage, the runs' seconds (run.json) against the stage's wall
    time times its jobs; the non-convex stage split by problem."""
    from bench.study_profile import profile

    def run(path, seconds):
        path.mkdir(parents=True)
        (path / "run.json").write_text(json.dumps({"wall_time_s": seconds}))

    res = tmp_path / "full"
    run(res / "tuning" / "asgd" / "r0" / "0", 3.0)
    run(res / "tuning" / "asgd" / "r0" / "1", 5.0)
    run(res / "nonconvex" / "cnn_digits" / "0", 40.0)
    run(res / "nonconvex" / "mlp_mnist1d" / "0", 20.0)
    run(res / "nonconvex" / "mlp_mnist1d" / "1", None)  # a reused job: no time of its own
    study = {"figures": {"study_jobs": 2, "total_s": 100.0, "stages": [
        {"stage": "data", "seconds": 1.0}, {"stage": "tune", "seconds": 10.0},
        {"stage": "nonconvex", "seconds": 50.0}]}}  # fmt: skip
    f = profile(res, study)
    rows = [(r["stage"], r["part"], r["runs"], r["run_s"], r["capacity_s"], r["in_runs"])
            for r in f["rows"]]  # fmt: skip
    assert rows == [
        ("tune", "", 2, 8.0, 20.0, 0.4),
        ("nonconvex", "cnn_digits", 1, 40.0, 100.0, 0.6),
        ("nonconvex", "mlp_mnist1d", 2, 20.0, 100.0, 0.6),
    ]
    assert f["total_run_s"] == 68.0 and f["jobs"] == 2
