"""How training rows are split across workers (``dataset.split``)."""

from __future__ import annotations

import numpy as np

from pipeline import ConfigError
from pipeline.core.streams import SPLIT, stream

SPLITS = ("none", "iid", "label_sorted", "dirichlet")


def split_rows(
    y: np.ndarray, n_workers: int, kind: str, alpha: float = 1.0, seed: int = 0
) -> list[np.ndarray | None]:
    """Row indices per worker; ``none`` gives every worker all rows (``None``).

    - ``iid``: a seeded permutation cut into n near-equal shards;
    - ``label_sorted``: rows sorted by label (random order within a label), cut into n
      contiguous shards, so each worker sees few classes;
    - ``dirichlet``: for every class, its rows are divided among workers in proportions drawn
      from Dirichlet(alpha, ..., alpha); small alpha gives very uneven shards.
    """
    if kind not in SPLITS:
        raise ConfigError(f"unknown dataset.split={kind!r}; choose one of {', '.join(SPLITS)}")
    if kind == "none":
        return [None] * n_workers
    n = len(y)
    rng = stream(seed, SPLIT)
    if kind in ("iid", "label_sorted") and n < n_workers:
        raise ConfigError(
            f"dataset.split={kind} leaves workers without data: {n} rows for {n_workers} workers"
        )
    if kind == "iid":
        return [np.sort(s) for s in np.array_split(rng.permutation(n), n_workers)]
    if kind == "label_sorted":
        perm = rng.permutation(n)
        order = perm[np.argsort(y[perm], kind="stable")]
        return [np.sort(s) for s in np.array_split(order, n_workers)]
    if not alpha > 0:
        raise ConfigError(f"dataset.alpha must be positive for split=dirichlet, got {alpha}")
    if not np.issubdtype(np.asarray(y).dtype, np.integer):
        raise ConfigError("dataset.split=dirichlet needs class labels")
    shards: list[list[np.ndarray]] = [[] for _ in range(n_workers)]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        p = rng.dirichlet(np.full(n_workers, alpha))
        cuts = np.floor(np.cumsum(p)[:-1] * len(idx)).astype(int)
        for w, part in enumerate(np.split(idx, cuts)):
            shards[w].append(part)
    out = [np.sort(np.concatenate(s)) for s in shards]
    empty = [w for w, s in enumerate(out) if len(s) == 0]
    if empty:
        raise ConfigError(
            f"dataset.split=dirichlet (alpha={alpha}) leaves {len(empty)} worker(s) without data "
            f"(first: worker {empty[0]}); raise dataset.alpha, change dataset.seed "
            "or use fewer workers"
        )
    return out


def class_counts(y: np.ndarray, rows: list[np.ndarray | None]) -> list[list[int]] | None:
    """Per-worker counts of each class (None for regression targets)."""
    if not np.issubdtype(np.asarray(y).dtype, np.integer):
        return None
    k = int(np.max(y)) + 1
    return [np.bincount(y if r is None else y[r], minlength=k).tolist() for r in rows]
