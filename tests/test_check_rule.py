"""The conformance kit for server rules (pipeline/check_rule/): the project's own rules pass,
rules with one defect each (tests/check_rule_broken.py) are caught with the broken invariant
named, and the command line answers with the documented exit codes."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from pipeline import ConfigError
from pipeline.check_rule import assert_conforms, check_rule
from tests.conftest import PROJECT_ROOT

BROKEN = "tests.check_rule_broken"
QUICK = {"workers": 3, "gradients": 60, "seeds": (0,), "rpc": False}


@pytest.mark.parametrize(
    "target, keys",
    [
        ("pipeline.literature.MaleniaSGD", {"batch": 5}),
        ("pipeline.literature.MaleniaSGD", {"batch": 5, "cancel": True}),
        ("pipeline.literature.RescaledASGD", {}),
        ("pipeline.literature.PickySGD", {"radius": 0.02}),
        ("pipeline.core.methods.asgd.AsyncSGD", {}),
        ("pipeline.core.methods.ringmaster.RingmasterASGD", {"threshold": 2, "cancel": True}),
        (f"{BROKEN}.Asgd", {}),
    ],
    ids=lambda v: v.rpartition(".")[2] if isinstance(v, str) else ",".join(map(str, v)),
)
def test_the_projects_rules_conform(target, keys):
    report = assert_conforms(target, keys, gradients=100, rpc=False)
    names = [c.name for c in report.checks]
    assert {"delay", "version", "progress", "lost worker", "describe", "determinism",
            "plain loop"} <= set(names)  # fmt: skip
    assert "rpc" not in names


@pytest.mark.slow
def test_a_literature_rule_conforms_on_real_processes():
    report = assert_conforms("pipeline.literature.MaleniaSGD", {"batch": 5}, gradients=60)
    assert report["rpc"].status == "PASS" and "engine=rpc" in report["rpc"].message


@pytest.mark.parametrize(
    "rule, check, text",
    [
        ("OffByOneDelay", "delay", r"Decision.delay=1, expected 0 \(the rule's version"),
        ("StepWithoutVersion", "version", "step=True but the rule's version went 0 -> 0 "
                                          "(expected 1)"),
        ("StepTwice", "version", "went 4 -> 6 (expected 5)"),
        ("AssignTwice", "workers", r"Decision.assign=\((\d), \1\) names worker \1 twice"),
        ("NaNWeight", "weight", "Decision.weight=nan is not finite"),
        ("NeverReassign", "progress", "stall after 3 of 60 gradients"),
        ("Unseeded", "determinism", "differ at row 0"),
        ("ScaleUndeclared", "scale", "does not declare scales_steps"),
        ("LostReturnsString", "lost worker", "returned str 'worker 2 is gone'"),
        ("DescribeObject", "describe", "describe()['rng'] = <object object"),
        ("NotADecision", "decision", "returned tuple"),
    ],
)  # fmt: skip
def test_a_broken_rule_is_caught(rule, check, text):
    report = check_rule(f"{BROKEN}.{rule}", **QUICK)
    assert not report.ok
    c = report[check]
    assert c.status == "FAIL", report.text()
    assert re.search(text if text.startswith("Decision.") else re.escape(text), c.message), (
        c.message
    )
    with pytest.raises(AssertionError, match=check):
        assert_conforms(f"{BROKEN}.{rule}", **QUICK)


def test_the_first_offending_event_is_named():
    c = check_rule(f"{BROKEN}.OffByOneDelay", **QUICK)["delay"]
    assert re.search(r"arrival 1 \(worker \d, job version 0, rule version 0\)", c.message)
    c = check_rule(f"{BROKEN}.NeverReassign", **QUICK)["progress"]
    assert "workers [0, 1, 2] idle" in c.message and "last: arrival 3" in c.message


def test_a_nondeterministic_rule_also_differs_from_the_plain_loop():
    report = check_rule(f"{BROKEN}.Unseeded", **QUICK)
    assert report["plain loop"].status == "FAIL"
    assert report["delay"].status == "PASS"  # the protocol itself is kept


def test_updates_per_gradient_far_off_is_a_warning():
    report = check_rule(f"{BROKEN}.Overpromises", **QUICK)
    c = report["updates_per_gradient"]
    assert c.status == "WARN" and "off by > 4x" in c.message and report.ok


def test_bad_path_and_bad_key_are_config_errors():
    with pytest.raises(ConfigError, match="cannot import no_such_pkg"):
        check_rule("no_such_pkg.Rule", **QUICK)
    with pytest.raises(ConfigError, match="did you mean optimizer.radius"):
        check_rule("pipeline.literature.PickySGD", {"radus": 1.0}, **QUICK)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.check_rule", *args], capture_output=True, text=True,
        cwd=PROJECT_ROOT, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}, timeout=300,
    )  # fmt: skip


def test_cli_bad_dotted_path_is_one_line_exit_2():
    p = cli("no_such_pkg.Rule", "--no-rpc")
    assert p.returncode == 2 and p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert lines == [
        "error: optimizer._target_=no_such_pkg.Rule: cannot import no_such_pkg "
        "(No module named 'no_such_pkg')"
    ]


def test_cli_bad_key_is_one_line_exit_2():
    p = cli("pipeline.literature.PickySGD", "radus=0.1", "--no-rpc")
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        "error: unknown key optimizer.radus; did you mean optimizer.radius? "
        "(pipeline.literature.PickySGD takes: radius)"
    ]


def test_cli_exit_codes_and_one_line_per_check():
    ok = cli("pipeline.literature.PickySGD", "radius=0.02", "--no-rpc", "--gradients=60")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = ok.stdout.strip().splitlines()
    assert all(line.split(" ", 1)[0] in ("PASS", "WARN") for line in lines[:-1])
    assert lines[-1] == "pipeline.literature.PickySGD: conforms"
    bad = cli(f"{BROKEN}.AssignTwice", "--no-rpc", "--gradients=60", "--workers=3")
    assert bad.returncode == 1
    assert any(line.startswith("FAIL workers:") for line in bad.stdout.splitlines())
    assert bad.stdout.strip().splitlines()[-1].endswith("checks failed")
