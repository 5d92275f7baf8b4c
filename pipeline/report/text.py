"""Markdown text: numbers and estimates as the tables print them, a run's S or R setting,
anchors and links into report.md, and pipe tables."""

from __future__ import annotations

import math
import re


def fmt_num(v, digits=3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float):
        if 10 ** (digits - 1) <= abs(v) < 1e7:  # whole numbers in full, never 1e+02
            return f"{v:.0f}"
        return f"{v:.{digits}g}"
    return str(v)


def fmt_est(e: dict | None) -> str:
    """``mean [lo, hi]`` (or the mean alone without an interval; '–' for none)."""
    if not e or e.get("mean") is None:
        return "–"
    m = fmt_num(e["mean"])
    if e.get("lo") is None:
        return m
    return f"{m} [{fmt_num(e['lo'])}, {fmt_num(e['hi'])}]"


def fmt_sig(e: dict | None, significant: bool | None) -> str:
    """An estimate (a ratio), **bold** when significant."""
    txt = fmt_est(e)
    return f"**{txt}**" if significant else txt


def fmt_lr(r: dict) -> str:
    """A row's tuned stepsize, † when the tuning grid reached its cap."""
    return fmt_num(r["tuned_lr"]) + ("†" if r["cap_hit"] else "")


def setting(s: dict) -> str:
    """The resolved S or R (and cancel) of a run, for tables: ``n`` or the theory's
    ceil(sigma^2/eps) (docs/methods.md; not capped at n, unlike the m* of the T_opt bound)."""
    m, label = s["method"], s.get("label", s["method"])
    which = "n" if "_n" in label else "ceil(sigma^2/eps)"
    if m == "rennala":
        txt = f"S = {which} = {s.get('rule_batch')}"
        return txt + (", cancel and restart" if s.get("rule_cancel") else ", finish and discard")
    if m == "ringmaster":
        cancel = ", cancel" if s.get("rule_cancel") else ""
        return f"R = {which} = {s.get('rule_threshold')}{cancel}"
    return ""


def anchor(*parts) -> str:
    return "-".join(re.sub(r"[^a-z0-9]+", "", str(p).lower()) for p in parts)


def link(text: str, a: str) -> str:
    return f"[{text}](#{a})"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out
