"""The kit's entry functions: :func:`check_rule` runs every check on a rule and returns the
:class:`Report`; :func:`assert_conforms` is the same for pytest, raising on a failed check."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pipeline import ConfigError
from pipeline.check_rule.compare import check_rpc, check_runs
from pipeline.check_rule.protocol import check_protocol
from pipeline.check_rule.report import Report
from pipeline.check_rule.setup import Setup


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
