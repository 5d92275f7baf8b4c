"""``python -m pipeline.report``: build the report of a results folder and log it to MLflow, or
(``--readme``) only rewrite README.md's generated block."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pipeline import PROJECT_ROOT
from pipeline.report.document import build_report
from pipeline.report.readme import update_readme


def log_to_mlflow(results: Path, report: dict) -> str:
    """The report's files as one MLflow run ``report (<profile>)`` (tag stage=report, artifacts
    under ``report/``); returns its run id."""
    from pipeline.tracking import log_record_run

    return log_record_run(
        f"report ({report['metrics'].get('profile')})",
        {"stage": "report"},
        artifacts=[*report["figures"], results / "report.md", results / "metrics.json"],
        artifact_path="report",
    )


def default_results() -> Path:
    import yaml

    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    return Path("results") / params["profile"]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m pipeline.report")
    p.add_argument(
        "--results",
        type=Path,
        default=None,
        help="results folder (default: results/<profile of params.yaml>)",
    )
    p.add_argument("--no-mlflow", action="store_true")
    p.add_argument(
        "--readme",
        action="store_true",
        help="only rewrite README.md's generated block from metrics.json",
    )
    a = p.parse_args(argv)
    results = a.results or default_results()
    if a.readme:
        changed = update_readme(PROJECT_ROOT / "README.md", results)
        print(("updated" if changed else "unchanged") + f" README.md from {results}/metrics.json")
        return
    report = build_report(results)
    if not a.no_mlflow and not os.environ.get("ASGD_STUDY_NO_MLFLOW"):
        log_to_mlflow(results, report)
    print(
        f"wrote {results / 'report.md'}, {results / 'metrics.json'} and "
        f"{len(report['figures'])} figures"
    )
