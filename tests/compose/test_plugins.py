"""A rule from the user's own package (pipeline/compose/plugins.py): an optimizer YAML on
``hydra.searchpath`` with ``_target_``, its keys checked against the class's signature before
any work starts, each bad input one line; the run records it like a built-in."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from pipeline import PROJECT_ROOT
from tests.conftest import run_cli

RULE = '''
from pipeline.api import Decision, ServerRule


class Capped(ServerRule):
    """Asynchronous SGD that discards delays above ``cap``; draws nothing."""

    name = "capped"

    def __init__(self, n_workers, lr, cap, boost=1.0, rng=None, worker_times=None):
        super().__init__(n_workers, lr)
        if cap < 0:
            raise ValueError(f"cap must be >= 0, got {cap}")
        self.cap, self.boost = cap, boost
        self.got = (type(rng).__name__, worker_times)

    def on_gradient(self, worker, version):
        delay = self.version - version
        if delay > self.cap:
            return Decision(delay, 0.0, False, self.solo[worker])
        self.version += 1
        return Decision(delay, self.lr * self.boost, True, self.solo[worker])

    def describe(self):
        return {"lr": self.lr, "cap": self.cap, "got": str(self.got)}


class NotARule:
    pass
'''


@pytest.fixture()
def user_pkg(tmp_path) -> tuple[Path, Path]:
    """A user's package (``userrules``) and its config directory, outside the project."""
    pkg = tmp_path / "src" / "userrules"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(RULE))
    conf = tmp_path / "conf" / "optimizer"
    conf.mkdir(parents=True)
    return tmp_path / "src", tmp_path / "conf"


def write_yaml(conf: Path, name: str, body: str) -> None:
    (conf / "optimizer" / f"{name}.yaml").write_text(textwrap.dedent(body))


def train(src: Path, conf: Path, out: Path, *args: str):
    env = {"PYTHONPATH": os.pathsep.join([str(src), str(PROJECT_ROOT)])}
    return run_cli(
        f"hydra.searchpath=[file://{conf}]", "topology=custom", "topology.times=[1.0,2.0,3.0]",
        "topology.n_workers=3", "topology.noise=none", "budget.gradients=30", "tracking=none",
        "progress=off", f"hydra.run.dir={out}", *args, env=env,
    )  # fmt: skip


GOOD = """\
    _target_: userrules.Capped
    name: capped
    lr: 0.05
    cap: 2
"""


def test_a_user_rule_runs_like_a_built_in(user_pkg, tmp_path):
    src, conf = user_pkg
    write_yaml(conf, "capped", GOOD)
    r = train(src, conf, tmp_path / "run", "optimizer=capped")
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["method"] == "capped" and summary["status"] == "finished"
    assert summary["gradients"] == 30 and summary["max_delay"] <= 2 + summary["discarded"] * 99
    # rng is the rule's own Generator, worker_times the topology's tau_i
    assert summary["rule_got"] == "('Generator', [1.0, 2.0, 3.0])"
    assert summary["rule_cap"] == 2
    # keys given on the command line, and a key of the signature absent from the YAML with +
    r = train(src, conf, tmp_path / "run2", "optimizer=capped", "optimizer.cap=0",
              "+optimizer.boost=2.0")  # fmt: skip
    assert r.returncode == 0, r.stderr
    events = (tmp_path / "run2" / "events.csv").read_text().splitlines()[1:]
    assert {e.split(",")[4] for e in events if e.split(",")[3] == "1"} == {"0.1"}


@pytest.mark.parametrize(
    "body, args, message",
    [
        (GOOD.replace("cap: 2", "cpa: 2"), [],
         "error: unknown key optimizer.cpa; did you mean optimizer.cap? (userrules.Capped "
         "takes: cap, boost)"),
        (GOOD.replace("    cap: 2\n", ""), [],
         "error: optimizer.cap must be set (userrules.Capped has no default for it)"),
        (GOOD.replace("    name: capped\n", ""), [],
         "error: optimizer._target_=userrules.Capped needs a name: add `name: <method name>` "
         "to its config (records, lr_table and the report use it)"),
        (GOOD.replace("name: capped", "name: asgd"), [],
         "error: optimizer.name=asgd is a built-in method; name the rule of userrules.Capped "
         "another way"),
        (GOOD.replace("userrules.Capped", "userrules.NotARule"), [],
         "error: optimizer._target_=userrules.NotARule: not a subclass of "
         "pipeline.api.ServerRule"),
        (GOOD.replace("userrules.Capped", "userrulez.Capped"), [],
         "error: optimizer._target_=userrulez.Capped: cannot import userrulez (No module named "
         "'userrulez')"),
        (GOOD.replace("userrules.Capped", "userrules.Caped"), [],
         "error: optimizer._target_=userrules.Caped: module userrules has no 'Caped'"),
        (GOOD.replace("cap: 2", "cap: -1"), [],
         "error: optimizer._target_=userrules.Capped: cap must be >= 0, got -1"),
        (GOOD.replace("lr: 0.05", "lr: -1"), [],
         "error: optimizer.lr must be a positive finite number, got -1"),
        (GOOD, ["optimizer.cpa=3"],
         "error: unknown key optimizer.cpa; did you mean optimizer.cap? (userrules.Capped "
         "takes: cap, boost)"),
        (GOOD, ["optimizer.boost=2"],
         "error: optimizer.boost is not in the config of optimizer=capped: add it there, or give "
         "it as +optimizer.boost=..."),
        (GOOD, ["+optimizer.rng=3"],
         "error: optimizer.rng is filled by the pipeline; remove it"),
    ],
    ids=["typo", "missing", "no name", "built-in name", "not a rule", "no module", "no class",
         "refused value", "bad lr", "typo on the command line", "absent key", "injected"],
)  # fmt: skip
def test_a_bad_user_rule_is_one_line(user_pkg, tmp_path, body, args, message):
    src, conf = user_pkg
    write_yaml(conf, "capped", body)
    r = train(src, conf, tmp_path / "run", "optimizer=capped", *args)
    assert r.returncode == 2
    assert r.stderr.strip() == message
    assert not (tmp_path / "run").exists()  # before any work


def test_the_key_of_a_job_follows_the_user_s_code(user_pkg, monkeypatch):
    """A study reuses a finished job only when its key matches: code outside the project is
    keyed by the digest of the file that defines the rule."""
    import pipeline.compose.schema  # noqa: F401  (registers the schemas)
    from pipeline.compose.keys import job_key
    from tests.conftest import compose_cfg

    src, conf = user_pkg
    write_yaml(conf, "capped", GOOD)
    monkeypatch.syspath_prepend(str(src))
    cfg = compose_cfg(f"hydra.searchpath=[file://{conf}]", "optimizer=capped")
    first = job_key(cfg)
    assert "optimizer._target_" in first["parts"]["inputs"]
    init = src / "userrules" / "__init__.py"
    init.write_text(init.read_text() + "\n# changed\n")
    os.utime(init, (1, 1))  # (the digest cache keys on path, size and mtime)
    assert job_key(cfg)["key"] != first["key"]
    # the project's own rules are in the code digest, not listed as inputs
    builtin = compose_cfg("optimizer=malenia")
    assert "optimizer._target_" not in job_key(builtin)["parts"]["inputs"]
