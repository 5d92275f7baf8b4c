"""MLflow tracking: one MLflow run per training run, one parent run per Hydra multirun sweep.

The store is a sqlite database (``mlflow.db`` at the project root) unless ``tracking.uri`` or
``MLFLOW_TRACKING_URI`` says otherwise. Everything is logged in batches through MlflowClient.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from pipeline import PROJECT_ROOT

PARENT_ENV = "ASGD_PIPELINE_PARENT_RUN_ID"
STATUS = {"finished": "FINISHED", "diverged": "FAILED", "failed": "FAILED", "killed": "KILLED"}
_BATCH = 1000  # MLflow's limit of metrics per log_batch call


def resolve_uri(uri: str | None = None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


def _artifact_root(uri: str) -> str | None:
    """Local artifact folder beside a sqlite file store (``mlartifacts/``)."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        return (db.parent / "mlartifacts").resolve().as_uri()
    return None


def client_for(uri: str | None = None):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=resolve_uri(uri))


def ensure_experiment(client, name: str) -> str:
    """Create the store and the experiment if needed (safe against a concurrent creator)."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=_artifact_root(client.tracking_uri))
    except Exception:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _param(v: Any) -> str:
    s = "null" if v is None else str(v)
    return s if len(s) <= 500 else s[:480] + f"... ({len(s)} chars)"


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class NullTracker:
    run_id: str | None = None

    def log_history(self, rows: list[dict]) -> None:
        pass

    def finish(self, summary: dict, outdir: Path, files: Iterable[Path] = ()) -> None:
        pass


class MlflowTracker:
    """An MLflow run for one training run; a child of the sweep's parent run when there is one."""

    def __init__(
        self,
        uri: str | None,
        experiment: str,
        run_name: str,
        params: Mapping[str, Any],
        tags: Mapping[str, str],
        time_metric: str = "sim_time",
        artifacts: bool = True,
    ):
        from mlflow.entities import Param

        self.client = client_for(uri)
        self.experiment_id = ensure_experiment(self.client, experiment)
        tags = {k: str(v) for k, v in tags.items()}
        parent = os.environ.get(PARENT_ENV)
        if parent:
            tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        self.run_id = run.info.run_id
        self.time_metric = time_metric
        self.artifacts = artifacts
        items = [Param(k, _param(v)) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def _log_metrics(self, metrics: list) -> None:
        for i in range(0, len(metrics), _BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + _BATCH])

    def log_history(self, rows: list[dict]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = []
        for r in rows:
            step = int(r["update"])
            for key, value in r.items():
                if key == "update" or not _finite(value):
                    continue
                name = self.time_metric if key == "time" else key
                metrics.append(Metric(name, float(value), now, step))
        self._log_metrics(metrics)

    def finish(self, summary: dict, outdir: Path, files: Iterable[Path] = ()) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        step = int(summary.get("updates") or 0)
        finals = [
            Metric(k, float(v), now, step)
            for k, v in sorted(summary.items())
            # history already carries time and gradients at the final step
            if _finite(v) and k not in ("n_workers", "seed", "sim_time", "gradients")
        ]
        try:
            self._log_metrics(finals)
            self.client.set_tag(self.run_id, "status", summary.get("status", "unknown"))
            if self.artifacts:
                for f in files:
                    if Path(f).exists():
                        self.client.log_artifact(self.run_id, str(f), artifact_path="records")
        finally:
            status = STATUS.get(summary.get("status", "failed"), "FAILED")
            self.client.set_terminated(self.run_id, status=status)


def make_tracker(cfg, run_name: str, params: Mapping, tags: Mapping, time_metric: str):
    if not cfg.tracking.enabled:
        return NullTracker()
    return MlflowTracker(
        cfg.tracking.uri,
        cfg.tracking.experiment,
        run_name,
        params,
        tags,
        time_metric=time_metric,
        artifacts=cfg.tracking.artifacts,
    )


class SweepCallback(Callback):
    """Hydra callback: a multirun sweep gets one MLflow parent run, created (with the store and the
    experiment) before any job starts; jobs find it through an environment variable."""

    def __init__(self) -> None:
        self.parent: str | None = None
        self.client = None

    def on_multirun_start(self, config, **kwargs) -> None:
        if not config.tracking.enabled:
            return
        self.client = client_for(config.tracking.uri)
        exp = ensure_experiment(self.client, config.tracking.experiment)
        sweep_dir = str(config.hydra.sweep.dir)
        run = self.client.create_run(
            exp,
            run_name=f"sweep {Path(sweep_dir).name}",
            tags={"sweep": "parent", "sweep_dir": sweep_dir},
        )
        self.parent = run.info.run_id
        os.environ[PARENT_ENV] = self.parent

    def on_multirun_end(self, config, **kwargs) -> None:
        if self.parent is None or self.client is None:
            return
        from mlflow.entities import Metric

        children = self.client.search_runs(
            [self.client.get_run(self.parent).info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self.parent}'",
            max_results=10000,
        )
        counts: dict[str, int] = {}
        for r in children:
            counts[r.info.status] = counts.get(r.info.status, 0) + 1
        now = int(time.time() * 1000)
        metrics = [Metric("jobs", float(len(children)), now, 0)]
        metrics += [Metric(f"jobs_{s.lower()}", float(c), now, 0) for s, c in counts.items()]
        self.client.log_batch(self.parent, metrics=metrics)
        # the sweep itself finished; diverged or failed jobs are counted, not propagated
        self.client.set_terminated(self.parent, status="FINISHED")
        os.environ.pop(PARENT_ENV, None)
