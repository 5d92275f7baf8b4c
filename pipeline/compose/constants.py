"""F* and the theory's constants (L, Delta, sigma^2) of an objective on a data file, computed once
per file content and kept on disk.

They cost a least-squares solve or an L-BFGS run (up to seconds) and every run of a sweep on the
same data needs the same numbers, so they are cached in ``<data dir>/.cache/`` under a key made
of the file's sha256, the objective and its settings, the batch size and :data:`VERSION` (raise
it when the computation changes). A cache that cannot be written is skipped, never an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pipeline.core.files import file_digest

VERSION = 1


def _key(objective: Any, path: Path, batch_size: int | None) -> str:
    settings = {
        "version": VERSION,
        "data": file_digest(path),
        "objective": objective.name,
        "dtype": str(objective.dtype),
        "l2": getattr(objective, "l2", None),
        "dim": objective.dim,
        "batch_size": batch_size,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]


def exact_constants(
    objective: Any, path: Path | None, batch_size: int | None
) -> tuple[float | None, dict | None]:
    """(F*, theory constants) of ``objective``; from the cache when this data file's were
    computed before. Objectives without a data file compute theirs directly (they are cheap)."""
    if path is None or not getattr(objective, "n_rows", 0):
        return objective.optimum(), objective.theory_constants(batch_size)
    cache = Path(path).parent / ".cache" / f"{_key(objective, Path(path), batch_size)}.json"
    try:
        saved = json.loads(cache.read_text())
        objective.known_optimum(saved["f_star"])
        return saved["f_star"], saved["constants"]
    except (OSError, ValueError, KeyError):
        pass
    f_star = objective.optimum()
    constants = objective.theory_constants(batch_size)
    try:
        cache.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"f_star": f_star, "constants": constants}, f)
        os.replace(tmp, cache)  # parallel jobs may write the same file: last one wins, same bytes
    except OSError:
        pass
    return f_star, constants
