"""Every option of every config group composes; every bad input is a one-line error (exit 2)."""

from __future__ import annotations

import pytest

from pipeline import CONF_DIR, ConfigError
from pipeline.build import build_experiment
from pipeline.config import validate
from pipeline.train import preflight
from tests.conftest import compose_cfg, run_cli

GROUPS = ["objective", "dataset", "topology", "optimizer", "engine", "tracking", "experiment"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "group,option", [(g, o) for g in GROUPS for o in options(g)], ids=lambda v: str(v)
)
def test_every_option_composes_and_validates(group, option):
    cfg = compose_cfg(f"{group}={option}", "optimizer.lr=0.1")
    chosen = cfg[group].name if group not in ("tracking", "experiment") else None
    if chosen is not None:
        assert chosen == option or (group == "dataset" and option == "none")
    if group == "objective" and option == "noisy_quadratic":
        cfg = compose_cfg("objective=noisy_quadratic", "dataset=none", "optimizer.lr=0.1")
    validate(cfg)


def test_default_is_the_paper_experiment():
    cfg = compose_cfg()
    assert cfg.objective.name == "quadratic" and cfg.dataset.name == "lstsq_paper"
    assert cfg.topology.n_workers == 40 and cfg.topology.noise == "exponential"
    assert cfg.batch_size == 256 and cfg.budget.gradients == 32000
    assert cfg.lr_table.minibatch == pytest.approx(7.6) and cfg.lr_table.asgd == 0.43


def test_command_line_choice_beats_the_preset():
    cfg = compose_cfg("topology=linear", "topology.n_workers=8")
    assert cfg.topology.name == "linear" and cfg.topology.n_workers == 8


def test_sweep_expansion_checks_every_job():
    assert preflight(["-m", "optimizer=minibatch,asgd,asgd_adaptive", "seed=0,1,2"]) == 9
    with pytest.raises(ConfigError, match="topology.n_workers must be >= 1"):
        preflight(["-m", "optimizer=asgd,minibatch", "topology.n_workers=4,0"])


BAD = [
    (["optimizer=nope"], "Could not find 'optimizer/nope'; available: asgd"),
    (["topology=nope"], "Could not find 'topology/nope'"),
    (["optimizer.name=nope"], "unknown method optimizer.name='nope'"),
    (["topology.name=nope"], "unknown topology 'nope'"),
    (["topology.n_workers=0"], "topology.n_workers must be >= 1, got 0"),
    (["optimizer.lr=0"], "optimizer.lr must be positive, got 0.0"),
    (["optimizer.lr=-0.5"], "optimizer.lr must be positive, got -0.5"),
    (["budget.gradients=0"], "budget.gradients must be positive, got 0"),
    (["budget.gradients=null"], "set a budget: budget.gradients or budget.time"),
    (["budget.time=-1"], "budget.time must be positive, got -1.0"),
    (["batch_size=10001"], "batch_size=10001 is larger than the dataset (10000 rows per worker)"),
    (
        ["topology=custom", "topology.n_workers=3", "topology.times=[1,2]"],
        "topology.times has 2 entries but topology.n_workers is 3",
    ),
    (["dataset.path=/no/such/file.npz"], "data file not found: /no/such/file.npz"),
    (["optimizer.lrr=1"], "Key 'lrr' not in 'OptimizerConfig'"),
    (["topology.n_workers=many"], "could not be converted to Integer"),
    (["~experiment", "optimizer=asgd"], "no stepsize for method 'asgd': set optimizer.lr"),
    (["topology.noise=pink"], "unknown topology.noise='pink'"),
    (["objective=noisy_quadratic", "objective.dim=0", "dataset=none"], "noisy_quadratic needs"),
    (["dataset=none"], "objective 'quadratic' needs data"),
]


@pytest.mark.parametrize("overrides,message", BAD, ids=lambda v: str(v))
def test_bad_input_is_reported_before_any_work(overrides, message):
    with pytest.raises(ConfigError) as info:
        preflight(overrides)
        build_experiment(compose_cfg(*overrides))
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_cli_bad_input_exits_2_with_one_line(tmp_path):
    out = run_cli("topology.n_workers=0", f"hydra.run.dir={tmp_path}/run", "tracking=none")
    assert out.returncode == 2
    assert out.stderr.strip() == "error: topology.n_workers must be >= 1, got 0"
    assert not (tmp_path / "run").exists()  # nothing ran
    out = run_cli("optimizer=adam", "tracking=none")
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1
    assert "Could not find 'optimizer/adam'" in out.stderr
