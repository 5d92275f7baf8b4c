"""A user's rules in the study: params.yaml ``searchpath`` (config directories) is added to
every sweep's ``hydra.searchpath``, so that ``methods:`` may name a rule of the user's package,
and a preset's lr_table may hold it."""

from __future__ import annotations

import importlib
import json
import os

import pytest

from pipeline import PROJECT_ROOT
from pipeline.study.profile import StudyError, load_profile
from tests.compose.test_plugins import GOOD, user_pkg, write_yaml  # noqa: F401  (fixture)

mr = importlib.import_module("pipeline.study.multirun")  # (the package re-exports a function)


def test_the_profile_carries_the_searchpath(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("profile: a\nsearchpath: [pkg://x.conf]\nprofiles: {a: {seeds: [1]}}\n")
    assert load_profile(p) == {"name": "a", "searchpath": ["pkg://x.conf"], "seeds": [1]}
    p.write_text("profile: a\nprofiles: {a: {}}\n")
    assert load_profile(p)["searchpath"] == []
    p.write_text("profile: a\nsearchpath: pkg://x.conf\nprofiles: {a: {}}\n")
    with pytest.raises(StudyError, match="searchpath must be a list of config directories"):
        load_profile(p)


def test_a_sweep_runs_a_user_rule_from_the_searchpath(user_pkg, tmp_path, monkeypatch):  # noqa: F811,E501
    src, conf = user_pkg
    write_yaml(conf, "capped", GOOD.replace("    lr: 0.05\n", ""))  # its lr from lr_table
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(src), str(PROJECT_ROOT)]))
    monkeypatch.setenv("ASGD_STUDY_NO_MLFLOW", "1")
    monkeypatch.setattr(mr, "_SEARCHPATH", [])
    overrides = ["optimizer=capped,asgd", "++lr_table.capped=0.05", "budget.gradients=20",
                 "topology.n_workers=4", "seed=3"]  # fmt: skip
    with pytest.raises(mr.StudyError, match="Could not find 'optimizer/capped'"):
        mr.multirun(overrides, tmp_path / "without")
    mr.use_searchpath([f"file://{conf}"])
    summaries = mr.multirun(overrides, tmp_path / "sweep")
    assert [s["method"] for s in summaries] == ["capped", "asgd"]
    assert all(s["status"] == "finished" and s["gradients"] == 20 for s in summaries)
    saved = json.loads((tmp_path / "sweep" / "0" / "summary.json").read_text())
    assert saved["lr"] == 0.05 and saved["rule_cap"] == 2
