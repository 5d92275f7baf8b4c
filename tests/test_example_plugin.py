"""The example plugin (examples/asgd_plugin): a rule and a model from a package of their own,
written against pipeline.api, configs shipped inside the package and found with
``hydra.searchpath=[pkg://asgd_plugin.conf]`` on the command line (the preflight composes with
it), as docs/extending.md shows. Installed by CI (`pip install -e examples/asgd_plugin`,
.ci/run); skipped, saying so, where it is not.
"""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir

from pipeline import CONF_DIR
from pipeline.core.records import read_events
from pipeline.runner import run_experiment
from tests.conftest import run_cli
from tests.runinfo import mlflow_run_id

try:
    import asgd_plugin
except ImportError:  # pragma: no cover - CI installs it
    pytest.skip(
        "the example plugin is not installed: pip install -e examples/asgd_plugin",
        allow_module_level=True,
    )

SEARCHPATH = "hydra.searchpath=[pkg://asgd_plugin.conf]"
MODEL = "objective.module._target_=asgd_plugin.ResidualMLP"


def compose_plugin(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(config_name="config", overrides=[SEARCHPATH, *overrides])


def lstsq(small_data, *extra: str) -> list[str]:
    """The small least-squares problem, 3 workers with tau_i = i, exponential job times."""
    return ["optimizer=delay_capped", "optimizer.lr=0.05", "dataset=small_lstsq",
            f"dataset.path={small_data}", "topology=linear", "topology.n_workers=3",
            "topology.noise=exponential", "batch_size=8", "budget.gradients=60", "eval_every=5",
            "tracking=none", "progress=off", *extra]  # fmt: skip


def digits(*extra: str) -> list[str]:
    """The example's model on digits (the README's command, made small)."""
    return ["optimizer=delay_capped", "objective=torch_module", MODEL, "dataset=digits",
            "~experiment", "optimizer.lr=0.1", "topology.n_workers=4", "batch_size=16",
            "budget.gradients=200", "eval_every=50", "progress=off", *extra]  # fmt: skip


def events_of(path) -> list[tuple]:
    """Events rows less their clock (wall seconds under rpc, simulated ones under sim)."""
    return [(e["worker"], e["version"], e["delay"], e["applied"], e["lr"])
            for e in read_events(path / "events.csv")]  # fmt: skip


def test_the_rule_and_the_model_use_only_the_public_api():
    from pipeline.api import ServerRule

    assert issubclass(asgd_plugin.DelayCappedASGD, ServerRule)
    rule = asgd_plugin.DelayCappedASGD(n_workers=2, lr=0.1, cap=2)
    assert [rule.weight(d) for d in (0, 2, 6)] == pytest.approx([0.1, 0.05, 0.025])
    with pytest.raises(ValueError, match="cap must be positive"):
        asgd_plugin.DelayCappedASGD(n_workers=2, lr=0.1, cap=0)
    for path in ("rule.py", "model.py"):
        src = asgd_plugin.__path__[0] + "/" + path
        imports = [
            ln for ln in open(src).read().splitlines() if "pipeline" in ln and "import" in ln
        ]
        assert all(ln.startswith("from pipeline.api import") for ln in imports), imports


def test_the_documented_searchpath_route(tmp_path):
    """``hydra.searchpath=[pkg://asgd_plugin.conf]`` on the command line, nothing else: the
    preflight composes with it and the run of the user's rule and model finishes."""
    out = run_cli(SEARCHPATH, *digits("tracking=none", f"hydra.run.dir={tmp_path}"))
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["method"] == "delay_capped" and summary["status"] == "finished"
    assert summary["objective"] == "torch_module" and summary["rule_cap"] == 4.0
    assert summary["gradients"] == 200 and summary["final_test_accuracy"] > 0.5
    events = read_events(tmp_path / "events.csv")
    assert [e["lr"] for e in events] == pytest.approx([0.1 / (1 + e["delay"] / 4) for e in events])


def test_without_the_searchpath_the_rule_is_not_found(tmp_path):
    out = run_cli(*digits("tracking=none", f"hydra.run.dir={tmp_path}"))
    assert out.returncode == 2
    assert out.stderr.strip().startswith(
        "error: In 'config': Could not find 'optimizer/delay_capped'; available: asgd,"
    )
    assert not tmp_path.joinpath("summary.json").exists()


def test_the_presets_lr_table_gives_the_rules_stepsize_times_lr_scale():
    """The rule's YAML has ``lr: null``: its stepsize is the example preset's lr_table entry
    times lr_scale (what tuning sweeps), and the same preset runs the built-ins it lists."""
    from pipeline.compose.validate import resolve_lr, validate

    for method, scale, lr in (("delay_capped", 1, 0.1), ("delay_capped", 0.5, 0.05),
                              ("asgd", 2, 0.2)):  # fmt: skip
        cfg = compose_plugin("experiment=residual_digits", f"optimizer={method}",
                             f"lr_scale={scale}")  # fmt: skip
        validate(cfg)
        assert cfg.lr_table.delay_capped == 0.1
        assert resolve_lr(cfg) == pytest.approx(lr)


def test_a_typo_in_the_rules_key_is_one_line(tmp_path):
    out = run_cli(SEARCHPATH, *digits("tracking=none", "optimizer.capp=2",
                                      f"hydra.run.dir={tmp_path}"))  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "error: unknown key optimizer.capp; did you mean optimizer.cap? "
        "(asgd_plugin.DelayCappedASGD takes: cap)"
    )


def test_the_trace_by_hand(tmp_path, small_data):
    """Two workers, tau = (1, 2), no noise, cap = 2, lr = 0.1. Both start at version 0;
    arrivals at equal times go by worker index; every arrival steps, weight lr / (1 + d / 2):

    t=1 w0 v0: d=0 (k 0->1), w0 again at v1, due t=2
    t=2 w0 v1: d=0 (k 1->2), w0 at v2, due t=3
    t=2 w1 v0: d=2 (k 2->3), w1 at v3, due t=4
    t=3 w0 v2: d=1 (k 3->4), w0 at v4, due t=4
    t=4 w0 v4: d=0 (k 4->5), w0 at v5, due t=5
    t=4 w1 v3: d=2 (k 5->6)
    """
    cfg = compose_plugin(*lstsq(small_data, "topology=custom", "topology.n_workers=2",
                                "topology.times=[1,2]", "topology.noise=none",
                                "optimizer.cap=2", "optimizer.lr=0.1",
                                "budget.gradients=6"))  # fmt: skip
    summary, _ = run_experiment(cfg, tmp_path)
    assert summary["gradients"] == 6 and summary["updates"] == 6
    rows = [(e["worker"], e["version"], e["delay"], e["applied"], e["time"])
            for e in read_events(tmp_path / "events.csv")]  # fmt: skip
    assert rows == [(0, 0, 0, 1, 1.0), (0, 1, 0, 1, 2.0), (1, 0, 2, 1, 2.0),
                    (0, 2, 1, 1, 3.0), (0, 4, 0, 1, 4.0), (1, 3, 2, 1, 4.0)]  # fmt: skip
    weights = [e["lr"] for e in read_events(tmp_path / "events.csv")]
    assert weights == pytest.approx([0.1, 0.1, 0.05, 0.1 / 1.5, 0.1, 0.05])


def test_ordered_rpc_equals_sim(tmp_path, small_data):
    """engine=rpc engine.ordered=true: real worker processes, the rows of engine=sim."""
    run_experiment(compose_plugin(*lstsq(small_data, "engine=sim")), tmp_path / "sim")
    summary, _ = run_experiment(
        compose_plugin(
            *lstsq(small_data, "engine=rpc", "engine.ordered=true", "engine.time_scale=0.002")
        ),  # fmt: skip
        tmp_path / "rpc",
    )
    assert summary["status"] == "finished" and summary["engine"] == "rpc"
    sim = events_of(tmp_path / "sim")
    assert len(sim) == 60 and events_of(tmp_path / "rpc") == sim


def test_a_sweep_writes_one_job_per_value(tmp_path, small_data):
    out = run_cli(
        "-m", SEARCHPATH, *lstsq(small_data, "optimizer.cap=1,4", f"hydra.sweep.dir={tmp_path}")
    )
    assert out.returncode == 0, out.stderr[-2000:]
    jobs = sorted(p for p in tmp_path.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    caps = [json.loads((p / "summary.json").read_text())["rule_cap"] for p in jobs]
    assert caps == [1.0, 4.0]


def test_the_run_is_logged_to_mlflow_like_a_built_in(tmp_path, small_data, mlflow_uri):
    from pipeline.tracking import client_for

    out = run_cli(SEARCHPATH, *lstsq(small_data, "optimizer.cap=2", f"tracking.uri={mlflow_uri}",
                                     "tracking.enabled=true",
                                     f"hydra.run.dir={tmp_path}"))  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    run = client_for(mlflow_uri).get_run(mlflow_run_id(tmp_path))
    tags, params = run.data.tags, run.data.params
    assert run.info.status == "FINISHED"
    assert tags["method"] == "delay_capped" and tags["engine"] == "sim"
    assert params["optimizer.name"] == "delay_capped"
    assert params["optimizer._target_"] == "asgd_plugin.DelayCappedASGD"
    assert params["optimizer.cap"] == "2" and params["resolved.cap"] == "2.0"
    assert params["resolved.lr"] == "0.05" and params["n_workers"] == "3"
    assert run.info.run_name.startswith("delay_capped linear n=3 lr=0.05")


def test_the_rule_passes_the_conformance_kit():
    """pipeline.check_rule (CI also runs its command line, with rpc, on ``cap=4``): every check
    passes, none warns."""
    from pipeline.check_rule import PASS, assert_conforms

    report = assert_conforms("asgd_plugin.DelayCappedASGD", {"cap": 4}, rpc=False)
    names = [c.name for c in report.checks]
    assert {"decision", "delay", "version", "progress", "lost worker", "describe",
            "updates_per_gradient", "determinism", "plain loop"} <= set(names)  # fmt: skip
    assert all(c.status == PASS for c in report.checks), report.text()


def test_the_rule_as_a_delay_rule_is_scheduled_in_bulk_with_the_same_records(tmp_path,
                                                                            monkeypatch):  # fmt: skip
    """docs/extending.md, "The same rule as a DelayRule": the plugin's rule written as a
    :class:`DelayRule` runs on the bulk schedule and writes the records of the plugin's own
    ServerRule, which takes the heap."""
    from pipeline.api import DelayRule
    from pipeline.engines import sim

    class DelayCapped(DelayRule):  # as the doc writes it
        name = "delay_capped"
        per_worker = False  # the weight depends on the delay only

        def __init__(self, n_workers: int, lr: float, cap: float = 4.0):
            super().__init__(n_workers, lr)
            self.cap = float(cap)

        def weight_for(self, worker: int, delay: int) -> float:
            return self.lr / (1.0 + delay / self.cap)

        def describe(self) -> dict[str, object]:
            return {"lr": self.lr, "cap": self.cap}

    used = []
    real_init = sim.SimEngine.__init__

    def init(self, exp, *a, **k):
        if swap:
            exp.rule = DelayCapped(exp.rule.n, exp.rule.lr, exp.rule.cap)
        real_init(self, exp, *a, **k)
        used.append(self.bulk)

    monkeypatch.setattr(sim.SimEngine, "__init__", init)
    cfg = compose_plugin("optimizer=delay_capped", "optimizer.lr=0.01", "optimizer.cap=3",
                         "~experiment", "objective=noisy_quadratic", "dataset=none",
                         "topology=sqrt", "topology.n_workers=20", "topology.noise=exponential",
                         "budget.gradients=2000", "eval_every=50", "tracking=none")  # fmt: skip
    for swap in (False, True):
        run_experiment(cfg, tmp_path / str(swap))
    assert used == [False, True]
    for f in ("events.csv", "history.csv", "summary.json"):
        assert (tmp_path / "False" / f).read_bytes() == (tmp_path / "True" / f).read_bytes(), f
