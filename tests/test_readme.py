"""README's numbers are generated from the committed results, never typed by hand."""

from __future__ import annotations

import json
import re

from pipeline import PROJECT_ROOT
from pipeline.report import README_BEGIN, README_END, readme_block


def test_readme_answer_is_generated_from_the_committed_metrics():
    text = (PROJECT_ROOT / "README.md").read_text()
    assert text.count(README_BEGIN) == 1 and text.count(README_END) == 1
    block = text[text.index(README_BEGIN) : text.index(README_END) + len(README_END)]
    m = re.search(r"From \[`(results/[^`]+)/report\.md`\]", block)
    assert m is not None, (
        "README's answer block names no committed report: run python -m pipeline.report --readme"
    )
    results = PROJECT_ROOT / m.group(1)
    metrics = json.loads((results / "metrics.json").read_text())
    assert block == readme_block(metrics, m.group(1)), (
        "README.md is stale: run python -m pipeline.report --readme"
    )
    # every number of the answer links to a row anchor that exists in the report
    report = (results / "report.md").read_text()
    anchors = re.findall(r"report\.md#([a-z0-9-]+)\)", block)
    assert anchors and all(f'<a id="{a}"></a>' in report for a in anchors)
