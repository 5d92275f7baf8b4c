"""The report's sections in order (``SECTIONS``), each a function from the loaded records
(``Context``) to its tables, figures and metrics (``Section``); one module per section."""

from __future__ import annotations

from collections.abc import Callable

from pipeline.report.sections.base import Context, Section
from pipeline.report.sections.compare import section_compare
from pipeline.report.sections.hetero import section_hetero
from pipeline.report.sections.nonconvex import section_nonconvex
from pipeline.report.sections.optimal import section_optimal
from pipeline.report.sections.paper import section_paper
from pipeline.report.sections.real import section_real
from pipeline.report.sections.scaling import section_scaling
from pipeline.report.sections.tuning import section_tuning

#: the report's sections in order; one more is one more entry (name, function)
SECTIONS: list[tuple[str, Callable[[Context], Section]]] = [
    ("compare", section_compare),
    ("optimal", section_optimal),
    ("paper", section_paper),
    ("scaling", section_scaling),
    ("nonconvex", section_nonconvex),
    ("hetero", section_hetero),
    ("real", section_real),
    ("tuning", section_tuning),
]


__all__ = ["SECTIONS", "Context", "Section"]
