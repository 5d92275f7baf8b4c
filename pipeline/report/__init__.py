"""Figures and tables from the study's records (``results/<profile>/``), nothing else.

    python -m pipeline.report [--results results/full] [--readme]

Writes ``figures/*.png``, ``metrics.json`` and ``report.md`` into the results folder and logs them
to an MLflow run ``report``. ``--readme`` rewrites README.md's generated block (between the
``answer`` markers) from that folder's ``metrics.json``.

The report is a list of sections (``sections.SECTIONS``), each a function from the loaded records
to its tables, figures and metrics; ``report.md`` opens with the answer, built from the sections'
metrics, and the threats to validity. Every headline number is a mean over the evaluation seeds
with a 95% Student t interval (ratios: log-scale Welch t intervals; ``stats.py``).

Modules, each below the ones after it (imports point one way, down this list):

- ``stats``: intervals over seeds (means, ratios of means, bands of curves)
- ``load``: reading the records (summaries by cell and label, selection files, times to target)
- ``text``: numbers, estimates, settings, anchors, links and tables as markdown
- ``figures``: every matplotlib figure (the Agg backend, set before pyplot is imported)
- ``sections``: the Section and Context types and one module per section (``problems``: what
  the per-problem sections, nonconvex and hetero, share)
- ``document``: the answer, the threats to validity, report.md and metrics.json (``build_report``)
- ``readme``: README.md's generated block
- ``cli``: ``python -m pipeline.report`` (``main``) and the report's MLflow run
"""

from pipeline.report.cli import main
from pipeline.report.document import answer, build_report
from pipeline.report.readme import README_BEGIN, README_END, readme_block, update_readme
from pipeline.report.sections import SECTIONS, Context, Section

__all__ = [
    "README_BEGIN",
    "README_END",
    "SECTIONS",
    "Context",
    "Section",
    "answer",
    "build_report",
    "main",
    "readme_block",
    "update_readme",
]
