"""MLflow tracking: one MLflow run per training run, one parent run per Hydra multirun sweep.

The store is a sqlite database (``mlflow.db`` at the project root) unless ``tracking.uri`` or
``MLFLOW_TRACKING_URI`` says otherwise. Everything is logged in batches through MlflowClient.

What goes where, so that a run's chart view opens on the curves:

- **metrics**: the time series of the history against step = server update (``curves/<key>``:
  loss, suboptimality, grad_norm_sq, test_loss, test_accuracy; ``progress/<key>``: gradients
  and the clock, sim_time or wall_time), then the run's results (``results/<key>`` for
  ``RESULT_METRICS``: final values, time / gradients / updates to target, delays, throughput),
  so the curves are the first section of a chart view; a sweep parent's job counts are
  ``sweep/jobs*``;
- **params**: the configuration, resolved values, F* and the theory's predictions;
- **tags**: what the run is (method, topology, engine, ...) and its outcome counts (status,
  updates, applied, discarded, cancelled, ...);
- **inputs**: the dataset file (digest, shapes, split, context train/test);
- **artifacts**: the records; a sweep's parent gets a comparison figure and table.

``summary.json`` keeps every value; only its MLflow home differs.

Store creation (schema migrations and the experiment) is serialised by a file lock beside a
sqlite store, so any number of processes may start at once on a fresh store; every write is
retried with bounded backoff while sqlite reports 'database is locked'.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from pipeline import EXPERIMENT, PROJECT_ROOT
from pipeline.core.files import file_digest, npz_headers
from pipeline.core.runs import rank_key

log = logging.getLogger(__name__)

PARENT_ENV = "ASGD_PIPELINE_PARENT_RUN_ID"
PARENT_URI_ENV = "ASGD_PIPELINE_PARENT_URI"  # the store of that parent (to mark it killed)
STATUS = {"finished": "FINISHED", "diverged": "FAILED", "failed": "FAILED", "killed": "KILLED"}
_BATCH = 1000  # MLflow's limit of metrics per log_batch call
# the experiment's type as MLflow 3 records it: model training, not GenAI (the UI still opens in
# its GenAI view unless the address asks for the "Model training" one: UI_QUERY)
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
UI_QUERY = "workflowType=machine_learning"

# MLflow's chart view groups metrics into sections by the prefix before "/", prefixed sections in
# alphabetical order first. Against step = server update, the evaluated time series are
# ``curves/<key>`` (first), the counters ``progress/gradients`` and ``progress/<clock>`` (x-axes
# for the curves: sim_time or wall_time); the run's results are ``results/<key>`` (logged once at
# step 0: one bar per run), a sweep parent's job counts ``sweep/<key>``, MLflow's system metrics
# ``system/<key>`` (always last)
CURVES = "curves/"
PROGRESS = "progress/"
RESULTS = "results/"
_COUNTERS = ("gradients", "time")
RESULT_METRICS = (
    "final_loss",
    "final_suboptimality",
    "final_grad_norm_sq",
    "final_test_loss",
    "final_test_accuracy",
    "time_to_target",
    "gradients_to_target",
    "updates_to_target",
    "max_delay",
    "mean_delay",
    "run_time_s",  # real runs only (engine time in wall-clock seconds)
    "gradients_per_s",  # real runs only, derived: gradients / run_time_s
)
# summary keys that are configuration-derived constants: params
_PARAM_KEYS = ("f_star", "n_workers", "time_kind", "dataset_file", "target")
_PARAM_PREFIXES = ("theory_",)
# summary keys that MLflow has already (as params or tags under another name) or cannot show
# usefully (lists: in the records artifact); every other summary key is an outcome: a tag
_SKIP_KEYS = (
    "method", "engine", "objective", "dataset", "topology",  # tags
    "noise", "seed", "lr", "batch_size", "eval_every", "split",  # params (config, resolved.*)
    "worker_rows", "worker_class_counts", "mlflow_run_id",
)  # fmt: skip
_SKIP_PREFIXES = ("rule_",)  # = params resolved.*
SYSTEM_METRICS_INTERVAL_S = 10.0  # one sample per 10 s: nothing measurable on a run


# ---------------------------------------------------------------------------------- the store


def resolve_uri(uri: str | None = None) -> str:
    """The store the runs go to: ``uri``, else ``$MLFLOW_TRACKING_URI``, else the project's
    ``mlflow.db``; a relative sqlite path is made absolute (from the working directory)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"
    db = sqlite_path(uri)
    if db is not None and not db.is_absolute():
        uri = f"sqlite:///{db.resolve()}"
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other stores and in-memory)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def _artifact_root(uri: str) -> str | None:
    """Local artifact folder beside a sqlite file store (``mlartifacts/``)."""
    db = sqlite_path(uri)
    return (db.parent / "mlartifacts").resolve().as_uri() if db is not None else None


@contextmanager
def store_lock(uri: str, timeout: float = 600.0):
    """Serialise first-time creation of a sqlite store across processes (``<db>.lock``)."""
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    from filelock import FileLock

    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{db}.lock", timeout=timeout):
        yield


_TRANSIENT = ("database is locked", "database table is locked", "database is busy")
_jitter = random.Random()  # private: never touches the global random state of a run


def retrying(fn: Callable, attempts: int = 10, first: float = 0.05, cap: float = 2.0,
             also: tuple[str, ...] = ()) -> Callable:  # fmt: skip
    """``fn`` retried while sqlite reports a lock, with jittered exponential backoff: at most
    ``attempts`` calls and about 20 s of sleep in all (each call may also wait out MLflow's own
    20 s sqlite busy timeout); other errors pass through at once."""

    def call(*args, **kwargs):
        delay = first
        for attempt in range(attempts):
            try:
                return fn(*args, **kwargs)
            except Exception as e:
                text = str(e)
                if attempt == attempts - 1 or not any(s in text for s in (*_TRANSIENT, *also)):
                    raise
                first_line = text.splitlines()[0] if text else ""
                log.debug("mlflow: %s; retry %d in %.2f s", first_line, attempt + 1, delay)
                time.sleep(delay * (1.0 + _jitter.random()))
                delay = min(cap, 2 * delay)

    return call


class RetryingClient:
    """An MlflowClient whose calls retry while sqlite is locked by another process."""

    def __init__(self, client):
        self._client = client

    def __getattr__(self, name: str):
        if name.startswith("__") or name == "_client":  # copy and pickle: not the client's
            raise AttributeError(name)
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr
        # a concurrent run may insert the same dataset between MLflow's check and its insert
        also = ("UNIQUE constraint failed",) if name == "log_inputs" else ()
        return retrying(attr, also=also)


def client_for(uri: str | None = None) -> RetryingClient:
    """An MlflowClient on the resolved store; the store is created (migrations) under a file
    lock, so concurrent first starts are safe."""
    from mlflow.tracking import MlflowClient

    uri = resolve_uri(uri)
    with store_lock(uri):
        return RetryingClient(MlflowClient(tracking_uri=uri))


def ensure_experiment(client, name: str) -> str:
    """The experiment's id, created (with the store) if needed; safe against concurrent creators.
    The experiment's type is recorded as model training (``EXPERIMENT_KIND``)."""
    with store_lock(client.tracking_uri):
        exp = client.get_experiment_by_name(name)
        if exp is None:
            try:
                return client.create_experiment(
                    name,
                    artifact_location=_artifact_root(client.tracking_uri),
                    tags=dict([EXPERIMENT_KIND]),
                )
            except Exception:  # another process created it (a store without our lock)
                exp = client.get_experiment_by_name(name)
                if exp is None:
                    raise
        if exp.tags.get(EXPERIMENT_KIND[0]) is None:
            client.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND)
        return exp.experiment_id


# ------------------------------------------------------------------------------ values


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


def result_metrics(summary: Mapping) -> dict[str, float]:
    """The run's results as metrics (finite values of ``RESULT_METRICS``)."""
    values = dict(summary)
    if values.get("time_kind") == "wall" and _finite(values.get("run_time_s")):
        if values["run_time_s"] > 0 and _finite(values.get("gradients")):
            values["gradients_per_s"] = values["gradients"] / values["run_time_s"]
    return {k: float(values[k]) for k in RESULT_METRICS if _finite(values.get(k))}


def split_summary(summary: Mapping, logged_params: Mapping) -> tuple[dict, dict, dict]:
    """(metrics, params, tags) of a summary: results, derived constants, outcome counts."""
    metrics = result_metrics(summary)
    params: dict[str, Any] = {}
    tags: dict[str, str] = {}
    for k, v in summary.items():
        if k in RESULT_METRICS or k in _SKIP_KEYS or k.startswith(_SKIP_PREFIXES):
            continue
        if isinstance(v, (list, tuple, dict)):
            continue
        if k in _PARAM_KEYS or k.startswith(_PARAM_PREFIXES):
            if k not in logged_params:
                params[k] = v
        else:
            tags[k] = "null" if v is None else str(v)
    failures = summary.get("failures") or []
    if failures:  # lost workers of a real run, one line each
        tags["failures"] = "; ".join(
            f"worker {f['worker']} at {f['time']:.3g} s: {f['cause']}" for f in failures
        )
    return metrics, params, tags


# ---------------------------------------------------------------------------- datasets


def _tensor_schema(features, targets) -> str:
    import numpy as np
    from mlflow.data.schema import TensorDatasetSchema
    from mlflow.types import Schema, TensorSpec

    def spec(shape_dtype):
        shape, dtype = shape_dtype
        return Schema([TensorSpec(np.dtype(dtype), (-1, *shape[1:]))])

    schema = TensorDatasetSchema(spec(features), spec(targets) if targets else None)
    return json.dumps(schema.to_dict())


def dataset_inputs(cfg: Any, data_path: Path | None) -> list:
    """The run's data as MLflow dataset inputs: the file's train (X, y) and test (X_test,
    y_test) arrays with the file's digest, shapes and dtypes, context train/test and the way
    rows are split among workers; a generated objective (no file) is one input of its own."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    ds = cfg.dataset
    split_tags = [InputTag("split", str(ds.split))]
    if ds.split == "dirichlet":
        split_tags.append(InputTag("alpha", str(ds.alpha)))
    if data_path is None:
        oc = flatten(dict(cfg.objective))
        digest = hashlib.sha256(json.dumps(oc, sort_keys=True, default=str).encode()).hexdigest()
        name = f"{cfg.objective.name} (generated)"
        entity = Dataset(name, digest[:16], "code", json.dumps({"objective": oc}, default=str),
                         profile=json.dumps({"generated": True, **oc}, default=str))  # fmt: skip
        return [DatasetInput(entity, [InputTag("mlflow.data.context", "train"), *split_tags])]
    path = Path(data_path).resolve()
    arrays = npz_headers(path)
    digest = file_digest(path)
    source = json.dumps({"uri": str(path)})
    inputs = []
    for context, (x, y) in (("train", ("X", "y")), ("test", ("X_test", "y_test"))):
        if x not in arrays:
            continue
        profile = {"file": path.name, "num_rows": arrays[x][0][0], "features_shape": arrays[x][0]}
        if y in arrays:
            profile["targets_shape"] = arrays[y][0]
        entity = Dataset(ds.name, digest, "local", source,
                         schema=_tensor_schema(arrays[x], arrays.get(y)),
                         profile=json.dumps(profile))  # fmt: skip
        tags = [InputTag("mlflow.data.context", context)]
        inputs.append(DatasetInput(entity, tags + (split_tags if context == "train" else [])))
    return inputs


# ------------------------------------------------------------------------------ trackers


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
    ``system_metrics_interval`` seconds, stopped at ``finish``; for real runs only."""

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
        self.run_name = run_name
        self.time_metric = time_metric
        self.artifacts = artifacts
        self.params = dict(params)
        items = [Param(k, _param(v)) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])
        self.monitor = None
        if system_metrics:
            self.monitor = self._start_monitor(system_metrics_interval)

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

    def _stop_monitor(self) -> None:
        monitor, self.monitor = self.monitor, None
        if monitor is None:
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
                name = (PROGRESS if key in _COUNTERS else CURVES) + name
                metrics.append(Metric(name, float(value), now, step))
        self._log_metrics(metrics)

    def finish(self, summary: dict, outdir: Path, files: Iterable[Path] = ()) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        values, params, tags = split_summary(summary, self.params)
        try:
            self._stop_monitor()
            self._log_metrics([Metric(RESULTS + k, v, now, 0) for k, v in sorted(values.items())])
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
        system_metrics=(time_metric == "wall_time"),  # real runs; simulated ones have no system
    )


def run_name(cfg: Any, exp: Any) -> str:
    """What distinguishes a run within a sweep: method, topology, n, lr and seed."""
    return (
        f"{cfg.optimizer.name} {cfg.topology.name} n={exp.n_workers} lr={exp.lr:.4g} "
        f"seed={cfg.seed}"
    )


def open_run(cfg: Any, exp: Any, choices: Mapping[str, str] | None = None):
    """The tracker of one training run of the built experiment ``exp``: params (the config and
    its resolved values), tags, the dataset inputs; a NullTracker when tracking is off."""
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
    tracker = make_tracker(cfg, run_name(cfg, exp), params, tags, time_metric)
    try:
        tracker.log_inputs(dataset_inputs(cfg, exp.data_path))
    except Exception as e:  # an unreadable file fails the run elsewhere, not here
        log.warning("dataset input not logged: %s", e)
    return tracker


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
    from mlflow.entities import Param

    client = client_for(uri)
    exp = ensure_experiment(client, experiment)
    name = f"{stage} selection" + (f" ({profile})" if profile else "")
    tags = {"sweep": "selection", "stage": stage, **({"profile": profile} if profile else {})}
    run_id = client.create_run(exp, run_name=name, tags=tags).info.run_id
    try:
        items = [Param(k, _param(v)) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            client.log_batch(run_id, params=items[i : i + 100])
        if artifact is not None and Path(artifact).exists():
            client.log_artifact(run_id, str(artifact))
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


# ------------------------------------------------------------------------------ sweeps


def _float(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _history(client, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


def sweep_comparison(client, parent_id: str, children: list, outdir: Path) -> list[Path]:
    """The sweep's answer at a glance: ``comparison.png`` (each child's F - F*, or loss where
    F* is unknown, against gradients and against time, log scale) and ``comparison.csv`` (one
    row per child, best first)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows, curves = [], []
    for r in children:
        p, t = r.data.params, r.data.tags
        m = {k[len(RESULTS) :]: v for k, v in r.data.metrics.items() if k.startswith(RESULTS)}
        value_key = "suboptimality" if "final_suboptimality" in m else "loss"
        clock = "sim_time" if PROGRESS + "sim_time" in r.data.metrics else "wall_time"
        final = m.get(f"final_{value_key}")
        rows.append({
            "run": r.info.run_name,
            "status": r.info.status,
            "method": t.get("method"),
            "topology": t.get("topology"),
            "n_workers": p.get("n_workers"),
            "lr": p.get("resolved.lr"),
            "seed": p.get("seed"),
            f"final_{value_key}": final,
            "time_to_target": m.get("time_to_target"),
            "gradients_to_target": m.get("gradients_to_target"),
            "mean_delay": m.get("mean_delay"),
            "max_delay": m.get("max_delay"),
            "run_id": r.info.run_id,
        })  # fmt: skip
        y = _history(client, r.info.run_id, CURVES + value_key)
        grads = _history(client, r.info.run_id, PROGRESS + "gradients")
        clock_values = _history(client, r.info.run_id, PROGRESS + clock)
        steps = [s for s in sorted(y) if y[s] > 0 and math.isfinite(y[s])]
        curves.append((r, value_key, clock, steps, y, grads, clock_values))

    def rank(row):
        final = next((v for k, v in row.items() if k.startswith("final_")), None)
        return rank_key(row["status"] == "FINISHED", row["time_to_target"], final)

    rows.sort(key=rank)
    outdir.mkdir(parents=True, exist_ok=True)
    table = outdir / "comparison.csv"
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with open(table, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, restval="")
        w.writeheader()
        w.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)

    fig = Figure(figsize=(12, 4.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    many = len(curves) > 12
    methods = sorted({r.data.tags.get("method", "") for r, *_ in curves})
    colours = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    seen: set[str] = set()
    for i, (r, _, _, steps, y, grads, clock_values) in enumerate(curves):
        method = r.data.tags.get("method", "")
        if many:  # colour by method, one legend entry per method
            colour, label = colours[method], (method if method not in seen else None)
            seen.add(method)
        else:
            colour, label = f"C{i % 10}", r.info.run_name
        style = dict(color=colour, lw=1.2, alpha=0.85, label=label,
                     ls="--" if r.info.status != "FINISHED" else "-")  # fmt: skip
        for ax, xs in ((axes[0], grads), (axes[1], clock_values)):
            pts = [(xs[s], y[s]) for s in steps if s in xs]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], **style)
    target = _float(children[0].data.params.get("target")) if children else None
    value_key = curves[0][1] if curves else "suboptimality"
    clock = curves[0][2] if curves else "sim_time"
    ylabel = "F(x) - F*" if value_key == "suboptimality" else "loss"
    for ax, xlabel in ((axes[0], "gradients"), (axes[1], clock.replace("_", " "))):
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.25)
        if target is not None and target > 0:
            label = "target" if ax is axes[1] else None
            ax.axhline(target, color="grey", ls=":", lw=1, label=label)
    axes[0].set_title(f"{ylabel} against gradients")
    axes[1].set_title(f"{ylabel} against {clock.replace('_', ' ')}")
    if axes[1].get_legend_handles_labels()[0]:
        axes[1].legend(fontsize=7, loc="best")
    fig.suptitle(client.get_run(parent_id).info.run_name, fontsize=10)
    fig.tight_layout()
    figure = outdir / "comparison.png"
    fig.savefig(figure, dpi=110)
    return [figure, table]


class SweepCallback(Callback):
    """Hydra callback: a multirun sweep gets one MLflow parent run, created (with the store and the
    experiment) before any job starts; jobs find it through an environment variable. The parent
    is named by ``tracking.sweep_name`` (default ``sweep <dir name>``) and, when the sweep ends,
    carries the comparison of its children (``sweep_comparison``)."""

    def __init__(self) -> None:
        self.parent: str | None = None
        self.uri: str | None = None

    def on_multirun_start(self, config, **kwargs) -> None:
        if not config.tracking.enabled:
            return
        self.uri = resolve_uri(config.tracking.uri)  # no client kept: launchers pickle callbacks
        client = client_for(self.uri)
        exp = ensure_experiment(client, config.tracking.experiment)
        sweep_dir = str(config.hydra.sweep.dir)
        name = config.tracking.get("sweep_name") or f"sweep {Path(sweep_dir).name}"
        run = client.create_run(
            exp, run_name=name, tags={"sweep": "parent", "sweep_dir": sweep_dir}
        )
        self.parent = run.info.run_id
        os.environ[PARENT_ENV] = self.parent
        os.environ[PARENT_URI_ENV] = self.uri

    def on_multirun_end(self, config, **kwargs) -> None:
        if self.parent is None:
            return
        from mlflow.entities import Metric

        client = client_for(self.uri)
        try:
            children = client.search_runs(
                [client.get_run(self.parent).info.experiment_id],
                filter_string=f"tags.mlflow.parentRunId = '{self.parent}'",
                order_by=["attributes.start_time ASC"],
                max_results=10000,
            )
            counts: dict[str, int] = {}
            for r in children:
                counts[r.info.status] = counts.get(r.info.status, 0) + 1
            now = int(time.time() * 1000)
            metrics = [Metric("sweep/jobs", float(len(children)), now, 0)]
            metrics += [
                Metric(f"sweep/jobs_{s.lower()}", float(c), now, 0) for s, c in counts.items()
            ]
            client.log_batch(self.parent, metrics=metrics)
            for key in ("topology", "method", "objective", "dataset", "preset"):
                values = {r.data.tags.get(key) for r in children}
                if len(values) == 1 and None not in values:
                    client.set_tag(self.parent, key, values.pop())
            if children and config.tracking.get("artifacts", True):
                try:
                    with tempfile.TemporaryDirectory() as tmp:
                        for f in sweep_comparison(client, self.parent, children, Path(tmp)):
                            client.log_artifact(self.parent, str(f))
                except Exception as e:  # the figure is a convenience: never fail the sweep
                    log.warning("sweep comparison not logged: %s: %s", type(e).__name__, e)
        finally:
            # the sweep itself finished; diverged or failed jobs are counted, not propagated
            client.set_terminated(self.parent, status="FINISHED")
            os.environ.pop(PARENT_ENV, None)
            os.environ.pop(PARENT_URI_ENV, None)
