"""What a study sweep runs: the groups of methods that share one multirun (the plain methods,
a method with overrides of its own, each variant) and the sweep's cells along one config axis."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.runs import BASE_GROUP
from pipeline.study.profile import StudyError

#: labelled settings of a method beyond its defaults: label -> overrides
VARIANTS: dict[str, list[str]] = {
    "rennala_n": ["optimizer=rennala", "optimizer.batch=${topology.n_workers}"],
    "rennala_n_cancel": [
        "optimizer=rennala",
        "optimizer.batch=${topology.n_workers}",
        "optimizer.cancel=true",
    ],
    "ringmaster_n": ["optimizer=ringmaster", "optimizer.threshold=${topology.n_workers}"],
}


@dataclass
class Group:
    """Jobs that share one multirun: the plain methods (``base``) or one variant."""

    name: str
    labels: list[str]
    cells: list[Any]  # the axis values this group runs on
    extra: list[str] | None = None  # a plain method with overrides of its own (its own group)

    def overrides(self, labels: list[str] | None = None) -> list[str]:
        if self.name == BASE_GROUP:
            return [f"optimizer={','.join(labels or self.labels)}"]
        if self.extra is not None:
            return [f"optimizer={self.name}", *self.extra]
        return list(VARIANTS[self.name])

    def method(self, label: str) -> str:
        if self.name == BASE_GROUP or self.extra is not None:
            return label
        return next(o.split("=", 1)[1] for o in VARIANTS[self.name] if o.startswith("optimizer="))


def make_groups(
    methods: list[str],
    variants: list[str],
    cells: list,
    variant_cells: list | None,
    method_overrides: dict[str, list[str]] | None = None,
):
    """The base group of plain methods, a group per method with overrides of its own
    (``method_overrides``, e.g. its own ``eval_every``), and a group per variant."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise StudyError(f"params.yaml: unknown variant {unknown[0]!r}; have {sorted(VARIANTS)}")
    own = method_overrides or {}
    plain = [m for m in methods if m not in own]
    groups = [Group(BASE_GROUP, plain, list(cells))] if plain else []
    groups += [Group(m, [m], list(cells), list(own[m])) for m in methods if m in own]
    vc = [c for c in (variant_cells if variant_cells is not None else cells) if c in cells]
    groups += [Group(v, [v], vc) for v in variants]
    return groups


@dataclass
class Sweep:
    """One study sweep: a set of cells along one config axis (``topology`` or
    ``topology.n_workers``), the groups of methods, the common overrides and where it writes."""

    stage: str
    axis: str
    common: list[str]
    groups: list[Group]
    root: Path
    cell_name: Callable[[Any], str] = str
    tag: str = ""  # extra words in sweep names (e.g. the problem)

    def cell_override(self, cells: list) -> str:
        return f"{self.axis}={','.join(str(c) for c in cells)}"

    def title(self, what: str) -> str:
        return " ".join(x for x in (what, self.tag) if x)
