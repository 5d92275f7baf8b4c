"""A tuning selection as the study writes it into ``*_lr.json`` (one method in one cell), for
tests that build results by hand."""

from __future__ import annotations


def selection(lr: float, cap: bool = False) -> dict:
    return {
        "lr": lr,
        "lr_scale": 1.0,
        "bracketed": not cap,
        "cap_hit": cap,
        "grid": [{"lr_scale": s, "lr": lr * s, "status": "finished"} for s in (0.5, 1, 2)],
    }
