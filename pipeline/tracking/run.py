"""MLflow runs: a tracker per training run (``open_run``: params, tags, dataset inputs, the
history as metrics, the summary and the records at the end; a child of the sweep's parent when
there is one), and ``log_record_run``, one finished run of params and files.

A tracker's run carries its process (host, pid, start time) and its records folder as tags, and
before creating it the tracker marks KILLED the runs of the experiment whose process died
(:mod:`pipeline.tracking.reaper`).

The store is a mirror of the records: a store that cannot be used when the run starts fails the
run (``RunError``: one line, exit code 1), but once the run has started, the store failing (a
tracking server that went down) never stops it nor holds it up. The first failure is one
warning line (the terminal and the run's log); nothing more is sent until the run ends, when
the history not logged yet is read back from ``history.csv`` and the run is completed in one
more try. If the store still fails then, one more line says so, and the MLflow run stays
RUNNING until the reaper (the next run on this host, or ``python -m pipeline.ui``) marks it
KILLED with its records attached."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pipeline import EXPERIMENT, RunError
from pipeline.core.records import read_history
from pipeline.tracking.datasets import dataset_inputs
from pipeline.tracking.mapping import (
    _COUNTERS,
    CURVES,
    PROGRESS,
    RESULTS,
    _finite,
    _param,
    flatten,
    split_summary,
)
from pipeline.tracking.reaper import process_tags, reap_quietly
from pipeline.tracking.store import client_for, ensure_experiment, retrying

log = logging.getLogger(__name__)

PARENT_ENV = "ASGD_PIPELINE_PARENT_RUN_ID"
PARENT_URI_ENV = "ASGD_PIPELINE_PARENT_URI"  # the store of that parent (to mark it killed)
STATUS = {"finished": "FINISHED", "diverged": "FAILED", "failed": "FAILED", "killed": "KILLED"}
_BATCH = 1000  # MLflow's limit of metrics per log_batch call
SYSTEM_METRICS_INTERVAL_S = 10.0  # one sample per 10 s: nothing measurable on a run


class NullTracker:
    run_id: str | None = None

    def log_history(self, rows: list[dict]) -> None:
        pass

    def log_inputs(self, inputs: list) -> None:
        pass

    def finish(self, summary: dict, outdir: Path, files: Iterable[Path] = ()) -> None:
        pass


class MlflowTracker:
    """An MLflow run for one training run; a child of the sweep's parent run when there is one.

    ``system_metrics`` starts MLflow's own system-metrics monitor for the run (CPU, memory, disk,
    network, GPU where present: metrics ``system/...``), one sample every
    ``system_metrics_interval`` seconds, stopped at ``finish``; for real runs only.

    ``records_dir``: the run's output folder, a tag, so that if this process dies the next one
    on the store can attach its records when it marks the run KILLED (``reaper``)."""

    def __init__(
        self,
        uri: str | None,
        experiment: str,
        run_name: str,
        params: Mapping[str, Any],
        tags: Mapping[str, str],
        time_metric: str = "sim_time",
        artifacts: bool = True,
        system_metrics: bool = False,
        system_metrics_interval: float = SYSTEM_METRICS_INTERVAL_S,
        records_dir: str | os.PathLike | None = None,
        resume_id: str | None = None,
    ):
        self.time_metric = time_metric
        self.artifacts = artifacts
        self.params = dict(params)
        self.run_id: str | None = None
        self.monitor = None
        #: why the store failed during the run (None: it has not); nothing is sent after that
        #: until the run ends
        self.lost: str | None = None
        self._unlogged_from: int | None = None  # the first update whose history was not logged
        self.client = client_for(uri)
        try:
            self._open(experiment, run_name, params, tags, records_dir, resume_id)
        except Exception as e:
            raise RunError(
                f"MLflow: the store {self.client.tracking_uri} cannot be used: {one_line(e)}"
            ) from e
        if system_metrics:
            self.monitor = self._start_monitor(system_metrics_interval)

    def _open(self, experiment: str, run_name: str, params: Mapping[str, Any],
              tags: Mapping[str, str], records_dir, resume_id: str | None) -> None:  # fmt: skip
        from mlflow.entities import Param

        self.experiment_id = ensure_experiment(self.client, experiment)
        reap_quietly(self.client, self.experiment_id)
        tags = {**process_tags(records_dir), **{k: str(v) for k, v in tags.items()}}
        parent = os.environ.get(PARENT_ENV)
        if parent:
            tags["mlflow.parentRunId"] = parent
        self.resumed = resume_id is not None and self._resume(resume_id, tags)
        if self.resumed:
            self.run_id = resume_id
        else:
            run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
            self.run_id = run.info.run_id
            items = [Param(k, _param(v)) for k, v in sorted(params.items())]
            for i in range(0, len(items), 100):
                self.client.log_batch(self.run_id, params=items[i : i + 100])

    def _resume(self, run_id: str, tags: Mapping[str, str]) -> bool:
        """A resumed run (``resume=<run dir>``) goes on under its MLflow run: RUNNING again,
        this process's tags, ``resumed`` counting the resumptions. False where the store has no
        such run (a new one is created)."""
        from mlflow.entities import RunTag

        try:
            old = self.client.get_run(run_id)
        except Exception:
            return False
        times = int(old.data.tags.get("resumed", "0")) + 1
        items = [RunTag(k, v) for k, v in {**tags, "resumed": str(times)}.items()
                 if k != "mlflow.parentRunId"]  # fmt: skip
        self.client.log_batch(run_id, tags=items)
        self.client.update_run(run_id, status="RUNNING")
        return True

    def _start_monitor(self, interval: float):
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            monitor = SystemMetricsMonitor(
                self.run_id, sampling_interval=interval, tracking_uri=self.client.tracking_uri
            )
            monitor.start()
            return monitor
        except Exception as e:  # psutil missing, no /proc, ...: the run goes on without them
            log.warning("system metrics not logged: %s", e)
            return None

    def _stop_monitor(self, publish: bool = True) -> None:
        """Stop the system-metrics monitor; ``publish``: its last samples are logged (not when
        the store has failed: that would be one more call to a store that does not answer)."""
        monitor, self.monitor = self.monitor, None
        if monitor is None:
            return
        if not publish:
            try:  # MLflow's monitor has no stop without a flush: stop it, drop what it holds
                monitor._shutdown_event.set()
                if monitor._process is not None:
                    monitor._process.join()
                monitor.mlflow_logger.data = []
                monitor.finish()
            except Exception as e:
                log.debug("system metrics monitor not stopped cleanly: %s", e)
            return
        try:
            monitor.finish()
            # samples taken since the last publication (a run shorter than one interval)
            if any(m.metrics for m in monitor.monitors):
                monitor.publish_metrics(monitor.aggregate_metrics())
                retrying(monitor.mlflow_logger.flush)()
        except Exception as e:
            log.warning("system metrics: last sample not logged: %s", e)

    def _log_metrics(self, metrics: list) -> None:
        for i in range(0, len(metrics), _BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + _BATCH])

    def log_inputs(self, inputs: list) -> None:
        if inputs:
            self.client.log_inputs(self.run_id, datasets=inputs)

    def _row_metrics(self, row: dict, now: int) -> list:
        from mlflow.entities import Metric

        step = int(row["update"])
        metrics = []
        for key, value in row.items():
            if key == "update" or not _finite(value):
                continue
            name = self.time_metric if key == "time" else key
            name = (PROGRESS if key in _COUNTERS else CURVES) + name
            metrics.append(Metric(name, float(value), now, step))
        return metrics

    def log_history(self, rows: list[dict]) -> None:
        """The rows as metrics, in batches of whole rows; never raises: where the store fails,
        the run goes on (:meth:`_lose`) and the rows from the failed batch on are logged when
        the run ends, read back from ``history.csv``."""
        if self.lost is not None or not rows:
            return
        now = int(time.time() * 1000)
        batch: list = []
        first = 0  # the row the batch starts with
        try:
            for i, row in enumerate(rows):
                metrics = self._row_metrics(row, now)
                if batch and len(batch) + len(metrics) > _BATCH:
                    self.client.log_batch(self.run_id, metrics=batch)
                    batch, first = [], i
                batch += metrics
            if batch:
                self.client.log_batch(self.run_id, metrics=batch)
        except Exception as e:
            self._unlogged_from = int(rows[first]["update"])
            self._lose(e)

    def _lose(self, e: Exception) -> None:
        """The store failed during the run: one warning line, and nothing more is sent until
        the run ends (then once more: :meth:`finish`)."""
        if self.lost is not None:
            return
        self.lost = one_line(e)
        log.warning(
            "MLflow: the store %s failed during the run (%s); the run goes on and its records "
            "are written; the MLflow run %s is completed when the run ends if the store answers "
            "again",
            self.client.tracking_uri,
            self.lost,
            self.run_id,
        )

    def _backlog(self, outdir: Path) -> list:
        """The history that a failure kept from the store, read back from the records."""
        if self._unlogged_from is None:
            return []
        now = int(time.time() * 1000)
        rows = read_history(Path(outdir) / "history.csv")
        return [m for r in rows if r["update"] is not None and r["update"] >= self._unlogged_from
                for m in self._row_metrics(r, now)]  # fmt: skip

    def finish(self, summary: dict, outdir: Path, files: Iterable[Path] = ()) -> None:
        """The history not logged yet, the results, params and tags, the records as artifacts,
        the status. Never raises: a store that fails here leaves the MLflow run incomplete
        (RUNNING, for the reaper, where even the status could not be set), said in one line;
        the records on disk are complete whatever happens here."""
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        values, params, tags = split_summary(summary, self.params)
        status = STATUS.get(summary.get("status", "failed"), "FAILED")
        failed: Exception | None = None
        try:
            results = [Metric(RESULTS + k, v, now, 0) for k, v in sorted(values.items())]
            self._log_metrics(self._backlog(outdir) + results)  # the first call: does it answer
            self._unlogged_from = None
            self._stop_monitor()
            items = [Param(k, _param(v)) for k, v in sorted(params.items())]
            labels = [RunTag(k, v[:5000]) for k, v in sorted(tags.items())]
            for i in range(0, max(len(items), len(labels)), 100):  # MLflow's limits per batch
                self.client.log_batch(
                    self.run_id, params=items[i : i + 100], tags=labels[i : i + 100]
                )
            if self.artifacts:
                for f in files:
                    if Path(f).exists():
                        self.client.log_artifact(self.run_id, str(f), artifact_path="records")
        except Exception as e:
            failed = e
            self._stop_monitor(publish=False)
        try:
            self.client.set_terminated(self.run_id, status=status)
        except Exception as e:
            failed = failed or e
            ended = "left RUNNING (the reaper marks it KILLED with its records later)"
        else:
            ended = f"marked {status}"
        if failed is not None:
            log.warning(
                "MLflow: the run %s is incomplete on %s (%s): %s; its records are complete in %s",
                self.run_id,
                self.client.tracking_uri,
                one_line(failed),
                ended,
                outdir,
            )
        elif self.lost is not None:
            log.info("MLflow: the store answers again: the run %s is complete", self.run_id)


def one_line(e: BaseException) -> str:
    """An exception as one line: its type and its message's first line, or only the system's
    reason where the message carries one (MLflow's HTTP errors wrap the failed connection in
    three layers of urllib3: ``... [Errno 111] Connection refused"))`` is "Connection
    refused")."""
    lines = str(e).strip().splitlines()
    if not lines:
        return type(e).__name__
    reason = re.search(r"\[Errno -?\d+\] ([^'\"()]+)", lines[0])
    return f"{type(e).__name__}: {reason[1].strip() if reason else lines[0]}"


def make_tracker(cfg, run_name: str, params: Mapping, tags: Mapping, time_metric: str,
                 records_dir: str | os.PathLike | None = None,
                 resume_id: str | None = None):  # fmt: skip
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
        system_metrics=(time_metric == "wall_time"),  # real runs; simulated ones have no system
        records_dir=records_dir,
        resume_id=resume_id,
    )


def run_name(cfg: Any, exp: Any) -> str:
    """What distinguishes a run within a sweep: method, topology, n, lr and seed."""
    return (
        f"{cfg.optimizer.name} {cfg.topology.name} n={exp.n_workers} lr={exp.lr:.4g} "
        f"seed={cfg.seed}"
    )


def _hydra_output_dir() -> str | None:
    """The output folder of the Hydra job this process runs, if it runs one."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().runtime.output_dir if HydraConfig.initialized() else None
    except Exception:
        return None


def open_run(
    cfg: Any,
    exp: Any,
    choices: Mapping[str, str] | None = None,
    outdir: str | os.PathLike | None = None,
    resume_id: str | None = None,
):
    """The tracker of one training run of the built experiment ``exp``: params (the config and
    its resolved values), tags, the dataset inputs; a NullTracker when tracking is off.
    ``outdir``, where the records go (default: the Hydra job's output folder, if any), is a tag
    so that a run whose process dies can be given its records (``reaper``). ``resume_id``: a
    resumed run's MLflow run, which goes on (RUNNING again, tagged ``resumed``)."""
    if not cfg.tracking.enabled:
        return NullTracker()
    from omegaconf import OmegaConf

    choices = dict(choices or {})
    params = flatten(OmegaConf.to_container(cfg, resolve=True))
    params.update({f"resolved.{k}": v for k, v in exp.rule.describe().items()})
    params["resolved.eval_every"] = exp.eval_every
    params["n_workers"] = exp.n_workers
    tags = {
        "method": cfg.optimizer.name,
        "topology": cfg.topology.name,
        "engine": cfg.engine.name,
        "objective": cfg.objective.name,
        "dataset": cfg.dataset.name,
        "preset": choices.get("experiment") or "none",
    }
    time_metric = "sim_time" if cfg.engine.name == "sim" else "wall_time"
    records_dir = outdir if outdir is not None else _hydra_output_dir()
    tracker = make_tracker(cfg, run_name(cfg, exp), params, tags, time_metric, records_dir,
                           resume_id)  # fmt: skip
    if getattr(tracker, "resumed", False):
        return tracker  # its params and inputs are logged already
    try:
        tracker.log_inputs(dataset_inputs(cfg, exp.data_path))
    except Exception as e:  # an unreadable file fails the run elsewhere, not here
        log.warning("dataset input not logged: %s", e)
    return tracker


def log_record_run(
    run_name: str,
    tags: Mapping[str, str],
    params: Mapping[str, Any] | None = None,
    artifacts: Iterable[Path] = (),
    artifact_path: str | None = None,
    uri: str | None = None,
    experiment: str = EXPERIMENT,
) -> str:
    """One finished MLflow run that records a result (returns its id): created in ``experiment``
    with ``tags``, ``params`` logged in batches of 100 (``None`` as ``null``, long values cut),
    each of ``artifacts`` that exists logged under ``artifact_path``; FINISHED, or FAILED (and
    the error raised again) when any of it fails."""
    from mlflow.entities import Param

    client = client_for(uri)
    exp = ensure_experiment(client, experiment)
    run_id = client.create_run(exp, run_name=run_name, tags=dict(tags)).info.run_id
    try:
        items = [Param(k, _param(v)) for k, v in sorted((params or {}).items())]
        for i in range(0, len(items), 100):
            client.log_batch(run_id, params=items[i : i + 100])
        for f in artifacts:
            if Path(f).exists():
                client.log_artifact(run_id, str(f), artifact_path=artifact_path)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id
