"""A data factory for ``dataset=callable``: plain numpy, no pipeline import."""

from __future__ import annotations

import numpy as np


def make_blobs(rows: int = 600, features: int = 8, classes: int = 4, seed: int = 0) -> dict:
    """Labelled Gaussian blobs, 20% more rows held out as the test split. The pipeline calls it
    once per set of arguments and writes the arrays to ``<data dir>/make_blobs-<digest>.npz``."""
    rng = np.random.default_rng(seed)
    centres = 2.0 * rng.standard_normal((classes, features))
    test = rows // 5
    y = rng.integers(0, classes, rows + test)
    X = centres[y] + rng.standard_normal((rows + test, features))
    return {"X": X[:rows], "y": y[:rows], "X_test": X[rows:], "y_test": y[rows:]}
