"""The command line of the kit, ``python -m pipeline.check_rule their_pkg.TheirRule
[key=value ...]``: one line per check; exit code 0 when nothing fails, 1 otherwise, 2 for a bad
dotted path or key."""

from __future__ import annotations

import argparse
import sys

from pipeline import ConfigError
from pipeline.check_rule.kit import check_rule
from pipeline.check_rule.setup import parse_keys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.check_rule",
        description="Check that a server rule keeps the protocol of pipeline.api and that the "
        "engines run it as documented.",
    )
    p.add_argument("target", help="the rule's class, package.module.Class")
    p.add_argument("keys", nargs="*", help="the rule's own keys, key=value")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--gradients", type=int, default=200)
    p.add_argument("--seeds", type=int, default=2, help="seeds of the protocol runs")
    p.add_argument(
        "--rpc", action=argparse.BooleanOptionalAction, default=True,
        help="also compare engine=rpc engine.ordered=true with engine=sim (real processes)",
    )  # fmt: skip
    a = p.parse_args(argv)
    try:
        report = check_rule(
            a.target, parse_keys(a.keys), workers=a.workers, gradients=a.gradients, rpc=a.rpc,
            seeds=tuple(range(max(1, a.seeds))),
        )  # fmt: skip
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.text())
    failed = report.failed()
    print(f"{report.target}: {'conforms' if not failed else f'{len(failed)} checks failed'}")
    return 0 if not failed else 1
