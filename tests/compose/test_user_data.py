"""dataset=npz and dataset=callable: a user's file, or a user's function whose arrays are
written once to the data folder and then read, checked and digested like built-in data; a
missing path or a bad factory is one line, exit code 2."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import ConfigError
from pipeline.compose.build import build_objective
from pipeline.compose.datafiles import data_dir, dataset_path
from pipeline.compose.preflight import preflight
from tests.conftest import compose_cfg, run_cli
from tests.models.user_pkg import make_data, make_regression

FACTORY = "dataset.factory._target_=tests.models.user_pkg"
BASE = ("~experiment", "objective=torch_module", "optimizer=asgd", "optimizer.lr=0.1",
        "batch_size=8", "topology.n_workers=2", "tracking=none", "progress=off",
        "budget.gradients=60")  # fmt: skip


def test_a_factory_is_written_once_keyed_by_target_and_arguments():
    cfg = compose_cfg(*BASE, "dataset=callable", f"{FACTORY}.make_data")
    path = dataset_path(cfg)
    assert path.parent == data_dir() and path.name.startswith("make_data-")
    with np.load(path) as f:
        for name, a in make_data().items():
            np.testing.assert_array_equal(f[name], a)
    mtime = path.stat().st_mtime_ns
    assert dataset_path(cfg) == path and path.stat().st_mtime_ns == mtime  # not rebuilt
    other = compose_cfg(*BASE, "dataset=callable", f"{FACTORY}.make_data",
                        "+dataset.factory.seed=1")  # fmt: skip
    assert dataset_path(other) != path
    obj = build_objective(cfg, path)
    assert obj.n_rows == 48 and obj.classification


def test_a_tuple_of_real_targets_trains_with_mse(tmp_path):
    overrides = [*BASE, "dataset=callable", f"{FACTORY}.make_regression", "objective.loss=mse",
                 "objective.module._target_=tests.models.user_pkg.TwoLayer"]  # fmt: skip
    assert preflight(overrides) == 1
    cfg = compose_cfg(*overrides)
    obj = build_objective(cfg, dataset_path(cfg))
    X, y, _, _ = make_regression()
    assert obj.y.shape == y.shape and not obj.classification
    assert obj.metric_names == ("grad_norm_sq", "test_loss")
    out = run_cli(*overrides, "engine=sim", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "test_accuracy" not in (tmp_path / "history.csv").read_text().splitlines()[0]


def test_a_user_file_runs_through_the_command_line(tmp_path):
    path = tmp_path / "mine.npz"
    np.savez(path, **make_data())
    out = run_cli(*BASE, "dataset=npz", f"dataset.path={path}", "engine=sim",
                  f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "run" / "summary.json").exists()


@pytest.mark.parametrize(
    "extra,message",
    [
        (["dataset=npz"], "error: dataset=npz needs dataset.path=<file>.npz (arrays X and y)"),
        (["dataset=npz", "dataset.path=/nonexistent/data.npz"],
         "error: data file not found: /nonexistent/data.npz (dataset.path)"),
        (["dataset=callable"],
         "error: dataset=callable needs dataset.factory._target_=<pkg.module.function> "
         "returning the arrays (X, y[, X_test, y_test])"),
        (["dataset=callable", f"{FACTORY}.broken"],
         "error: dataset.factory._target_=tests.models.user_pkg.broken failed: RuntimeError: "
         "the factory broke"),
        (["dataset=callable", f"{FACTORY}.nope"],
         "error: dataset.factory._target_=tests.models.user_pkg.nope cannot be imported: "),
    ],
    ids=["npz without a path", "a missing path", "no factory", "a failing factory",
         "a factory that is not there"],
)  # fmt: skip
def test_bad_user_data_is_one_line_exit_2(extra, message, tmp_path):
    out = run_cli(*BASE, *extra, f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), out.stderr
    assert not (tmp_path / "run").exists()


def test_real_targets_of_k_columns_are_refused_for_a_classifier(tmp_path):
    X, y, _, _ = make_regression()
    path = tmp_path / "k.npz"
    np.savez(path, X=X, y=y)
    with pytest.raises(ConfigError, match=r"y must be 1-d \(one target per row\), got shape"):
        preflight([*BASE, "objective=mlp", "dataset=npz", f"dataset.path={path}"])
