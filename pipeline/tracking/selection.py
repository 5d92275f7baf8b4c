"""A study stage's selection (the stepsizes it chose) as one finished MLflow run."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline import EXPERIMENT
from pipeline.tracking.run import log_record_run


def log_selection(
    stage: str,
    params: Mapping[str, Any],
    artifact: Path | None = None,
    profile: str | None = None,
    uri: str | None = None,
    experiment: str = EXPERIMENT,
) -> str:
    """A study stage's selection as one finished MLflow run (returns its id): named
    ``<stage> selection (<profile>)``, tags ``sweep=selection``, ``stage`` and ``profile``, the
    selection as params (e.g. ``<cell>.<method>`` = the selected stepsize, ``null`` for none)
    and the selection file as artifact."""
    name = f"{stage} selection" + (f" ({profile})" if profile else "")
    tags = {"sweep": "selection", "stage": stage, **({"profile": profile} if profile else {})}
    artifacts = [artifact] if artifact is not None else []
    return log_record_run(name, tags, params, artifacts, uri=uri, experiment=experiment)
