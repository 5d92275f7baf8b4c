"""Sweeps reuse finished jobs (issue #19): a job whose previous attempt left complete records
with the same key copies them instead of running; the key (pipeline/core/jobkey.py) covers the
resolved config (less progress and tracking), the input files' digests and the code's digest.

The sweeps here are real Hydra multiruns of ``pipeline.train`` (tiny budgets, tracking=none);
whether a job ran or was reused is read from its ``train.log`` (``reused <folder>``), never
from timing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline import PROJECT_ROOT
from pipeline.core import jobkey
from pipeline.study import multirun
from pipeline.train import job_key
from tests.conftest import compose_cfg

BASE = [
    "~experiment",
    "objective=noisy_quadratic",
    "dataset=none",
    "optimizer.lr=0.05",
    "topology.n_workers=4",
    "topology=homogeneous,linear",
    "budget.gradients=200",
    "tracking=none",
]
#: summary fields that describe the circumstances of a run, not its result
VOLATILE = ("wall_time_s", "mlflow_run_id")
COMPARED = ("events.csv", "history.csv", "jobs.csv", "key.json")


def _sweep(root: Path, methods: str = "asgd,minibatch", seed: int = 0, name=None, jobs=1):
    return multirun([*BASE, f"optimizer={methods}", f"seed={seed}"], root, name=name, jobs=jobs)


def _jobs(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: int(p.name))


def _ident(job: Path) -> tuple:
    s = json.loads((job / "summary.json").read_text())
    return (s["method"], s["topology"], s["seed"])


def _outcomes(root: Path) -> dict[tuple, str]:
    """Per job (method, topology, seed): ``reused`` or ``ran``, from its log."""
    out = {}
    for job in _jobs(root):
        log = (job / "train.log").read_text()
        assert ("reused " in log) != ("finished after" in log), log
        out[_ident(job)] = "reused" if "reused " in log else "ran"
    return out


def _records(root: Path, volatile: bool = True) -> dict[tuple, dict[str, object]]:
    out = {}
    for job in _jobs(root):
        files: dict[str, object] = {
            n: (job / n).read_bytes() for n in COMPARED if (job / n).exists()
        }
        summary = json.loads((job / "summary.json").read_text())
        if volatile:
            files["summary.json"] = (job / "summary.json").read_bytes()
        else:
            files["summary"] = {k: v for k, v in summary.items() if k not in VOLATILE}
        out[_ident(job)] = files
    return out


def _set_status(job: Path, status: str) -> None:
    s = json.loads((job / "summary.json").read_text())
    s["status"] = status
    (job / "summary.json").write_text(json.dumps(s, indent=2, sort_keys=True) + "\n")


# ------------------------------------------------------------------------ sweeps end to end


def test_a_rerun_sweep_reuses_every_job_byte_for_byte(tmp_path):
    """2 methods x 2 cells, run twice (the second time through the joblib launcher, under
    another sweep name: tracking settings are not in the key): every job reused, the records
    byte-identical, no previous folder left."""
    root = tmp_path / "sweep"
    first = _sweep(root)
    assert set(_outcomes(root).values()) == {"ran"} and len(first) == 4
    before = _records(root)
    second = _sweep(root, name="another name", jobs=2)
    assert _outcomes(root) == {k: "reused" for k in before}
    assert _records(root) == before
    assert [s["final_suboptimality"] for s in second] == [s["final_suboptimality"] for s in first]
    assert not jobkey.previous_dir(root).exists()


@pytest.mark.slow
def test_a_new_method_runs_only_its_jobs_and_matches_a_sweep_without_reuse(tmp_path):
    root = tmp_path / "sweep"
    _sweep(root)
    _sweep(root, methods="asgd,minibatch,asgd_adaptive")
    outcomes = _outcomes(root)
    assert {k for k, v in outcomes.items() if v == "ran"} == {
        ("asgd_adaptive", "homogeneous", 0),
        ("asgd_adaptive", "linear", 0),
    }
    assert len(outcomes) == 6
    fresh = tmp_path / "fresh"  # the same sweep with nothing to reuse
    _sweep(fresh, methods="asgd,minibatch,asgd_adaptive")
    assert set(_outcomes(fresh).values()) == {"ran"}
    assert _records(root, volatile=False) == _records(fresh, volatile=False)


@pytest.mark.slow
def test_an_interrupted_sweep_reruns_only_the_incomplete_jobs(tmp_path):
    root = tmp_path / "sweep"
    _sweep(root)
    before = _records(root, volatile=False)
    jobs = _jobs(root)
    _set_status(jobs[0], "killed")
    (jobs[1] / "summary.json").write_text("{not json")  # a torn file
    _sweep(root)
    ran = {k for k, v in _outcomes(root).items() if v == "ran"}
    assert ran == {_ident(j) for j in _jobs(root)[:2]}
    assert _records(root, volatile=False) == before
    # interrupted again: a run cut short before its final summary, one with no summary; the
    # attempt's folder set aside (as multirun does) before the next
    jobs = _jobs(root)
    _set_status(jobs[2], "running")
    gone = _ident(jobs[3])
    (jobs[3] / "summary.json").unlink()
    jobkey.set_aside(root)
    _sweep(root)
    ran = {k for k, v in _outcomes(root).items() if v == "ran"}
    assert ran == {_ident(_jobs(root)[2]), gone}
    assert _records(root, volatile=False) == before


@pytest.mark.slow
def test_a_changed_seed_reruns(tmp_path):
    root = tmp_path / "sweep"
    _sweep(root)
    _sweep(root, seed=1)
    assert set(_outcomes(root).values()) == {"ran"}


# ------------------------------------------------------------------------------- the key


SMALL = ["experiment=paper_quadratic", "optimizer=asgd", "topology.n_workers=4",
         "budget.gradients=100"]  # fmt: skip


def test_the_key_ignores_progress_and_tracking_but_not_what_shapes_records(tmp_path, small_data):
    def key(*o):
        return job_key(compose_cfg(*SMALL, *o))["key"]

    base = key()
    assert key("progress=on") == key("progress=off") == base
    assert key("tracking=none") == key("tracking.sweep_name=x") == base
    for o in ("seed=1", "lr_scale=2", "budget.gradients=101", "optimizer=minibatch",
              "topology.noise=gamma", "threads=2"):  # fmt: skip
        assert key(o) != base, o
    # the data file's content, not its name
    data = ["dataset=small_lstsq", "objective=quadratic"]
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    shutil.copy(small_data, a)
    shutil.copy(small_data, b)
    ka = job_key(compose_cfg(*SMALL, *data, f"dataset.path={a}"))
    assert (
        ka["parts"]["inputs"]["dataset"]
        == job_key(compose_cfg(*SMALL, *data, f"dataset.path={b}"))["parts"]["inputs"]["dataset"]
    )
    b.write_bytes(b.read_bytes() + b"\0")  # another size: file_digest caches by size, mtime
    kb = job_key(compose_cfg(*SMALL, *data, f"dataset.path={b}"))
    assert kb["parts"]["inputs"]["dataset"] != ka["parts"]["inputs"]["dataset"]


def test_paths_under_the_project_are_written_relative_to_it():
    inside = str(PROJECT_ROOT / "results" / "quick" / "x")
    assert jobkey.portable({"a": [inside], "b": "/elsewhere/y"}) == {
        "a": ["<root>/results/quick/x"],
        "b": "/elsewhere/y",
    }


def _copy_code(dst: Path) -> None:
    for rel in jobkey.CODE_PATHS:
        src = PROJECT_ROOT / rel
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst / rel, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dst / rel)


def test_the_code_digest_changes_with_a_code_file_and_nothing_else(tmp_path):
    _copy_code(tmp_path)

    def digest() -> str:
        jobkey._code_digest.cache_clear()  # once per process: a new process sees a change
        return jobkey.code_digest(tmp_path)

    same = digest()
    assert same == jobkey.code_digest(PROJECT_ROOT)  # the bytes, not the place or git
    (tmp_path / "pipeline" / "core" / "__pycache__").mkdir(exist_ok=True)
    (tmp_path / "pipeline" / "core" / "__pycache__" / "x.pyc").write_bytes(b"bytecode")
    (tmp_path / "pipeline" / "tracking").mkdir()
    (tmp_path / "pipeline" / "tracking" / "new.py").write_text("x = 1\n")  # not a dep
    assert digest() == same
    sim = tmp_path / "pipeline" / "engines" / "sim.py"
    original = sim.read_bytes()
    sim.write_bytes(original + b"\n# touched\n")
    assert digest() != same
    sim.write_bytes(original)
    assert digest() == same
    (tmp_path / "conf" / "optimizer" / "new.yaml").write_text("name: new\n")
    assert digest() != same


def test_the_code_paths_are_the_simulated_stages_code_deps():
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    for name in ("tune", "runs", "paper", "scaling", "nonconvex", "hetero"):
        code = {d for d in stages[name]["deps"] if not d.startswith(("data/", "results/"))}
        assert code == set(jobkey.CODE_PATHS), name


# ------------------------------------------------------------- the previous folder, complete


def _fake_job(gen: Path, name: str, key: str, status: str | None) -> Path:
    job = gen / name
    job.mkdir(parents=True)
    jobkey.write_key(job, {"key": key, "parts": {}})
    if status is not None:
        (job / "summary.json").write_text(json.dumps({"status": status}))
    (job / "events.csv").write_text(f"events of {key}\n")
    return job


def test_only_finished_or_diverged_jobs_are_reused_and_set_aside_merges(tmp_path):
    sweep = tmp_path / "sweep"
    for i, status in enumerate(["finished", "diverged", "killed", "failed", "running", None]):
        _fake_job(sweep, str(i), f"k{i}", status)
    previous = jobkey.set_aside(sweep)
    assert previous == sweep / ".previous" and [p.name for p in sweep.iterdir()] == [".previous"]
    assert [j.name for j in jobkey.previous_jobs(previous)] == ["0", "1"]  # the rest dropped
    assert jobkey.find_reusable(previous, "k0") == previous / "0" / "0"
    assert jobkey.find_reusable(previous, "k1") == previous / "0" / "1"
    for k in ("k2", "k3", "k4", "k5", "other"):
        assert jobkey.find_reusable(previous, k) is None
    # a second interruption: the new attempt's folder joins as the next generation
    _fake_job(sweep, "0", "k6", "finished")
    _fake_job(sweep, "1", "k7", "killed")
    jobkey.set_aside(sweep)
    assert sorted(p.name for p in previous.iterdir()) == ["0", "1"]
    assert jobkey.find_reusable(previous, "k6") == previous / "1" / "0"
    assert jobkey.find_reusable(previous, "k0") == previous / "0" / "0"
    dst = tmp_path / "new"
    jobkey.copy_records(previous / "1" / "0", dst)
    assert sorted(p.name for p in dst.iterdir()) == ["events.csv", "summary.json"]
    assert (dst / "events.csv").read_text() == "events of k6\n"
    jobkey.discard(previous)
    assert not previous.exists()


def test_a_stage_pool_is_searched_whichever_folder_held_the_job(tmp_path):
    out = tmp_path / "tuning"
    _fake_job(out / "base" / "r0_0", "3", "k0", "finished")
    _fake_job(out / "base" / "r1_0", "0", "k1", "killed")
    pool = jobkey.set_aside(out, prune=False)
    assert [p.name for p in out.iterdir()] == [".previous"]
    assert jobkey.find_reusable(None, "k0", [pool]) == pool / "0" / "base" / "r0_0" / "3"
    assert jobkey.find_reusable(out / "base" / "r0_0" / ".previous", "k1", [pool]) is None


@pytest.mark.slow
def test_a_stage_reuses_jobs_from_any_of_its_earlier_sweep_folders(tmp_path):
    """Inside ``reusing`` (a stage), a job is found whichever sweep folder held it before; the
    folders the stage no longer writes are gone once it succeeds."""
    from pipeline.study.multirun import reusing

    out = tmp_path / "stage"
    _sweep(out / "r0_0")
    before = _records(out / "r0_0")
    with reusing(out):
        _sweep(out / "r0_1")
    assert _outcomes(out / "r0_1") == {k: "reused" for k in before}
    assert _records(out / "r0_1") == before
    assert sorted(p.name for p in out.iterdir()) == ["r0_1"]
