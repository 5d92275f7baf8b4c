"""MLflow tracking: one MLflow run per training run, one parent run per Hydra multirun sweep.

Where the store is: ``STORE_LOCATION`` (:mod:`pipeline.compose.options`, said one way in
README.md, ``--help`` and conf/); a sqlite store keeps its artifacts in
``mlartifacts/`` beside it. Everything is logged in batches through MlflowClient.

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

``summary.json`` keeps every value; only its MLflow home differs. MLflow's own INFO lines go to
the run's log file, not the terminal (``logs.py``).

The modules, each importing only those above it in this list:

- ``logs``: MLflow's log lines into the run's log file, its warnings also on the terminal;
- ``store``: where the store is, clients that retry while sqlite is locked (and whose HTTP
  retries are bounded for a tracking server), store creation under a file lock, the experiment;
- ``mapping``: a run's values in MLflow's terms (params, metric names, a summary's split);
- ``datasets``: the run's data as dataset inputs;
- ``reaper``: RUNNING runs whose process is gone marked KILLED (``reap_stale_runs``), the
  process tags that make it possible;
- ``run``: the tracker of a training run (``open_run``; a store that fails mid-run never stops
  the run) and ``log_record_run``;
- ``selection``: a study stage's selected stepsizes as a run;
- ``sweep``: the Hydra callback of a multirun (``conf/config.yaml``) and its comparison.
"""

from pipeline.compose.options import STORE_LOCATION
from pipeline.tracking.datasets import dataset_inputs
from pipeline.tracking.mapping import RESULT_METRICS
from pipeline.tracking.reaper import process_tags, reap_stale_runs
from pipeline.tracking.run import (
    PARENT_ENV,
    PARENT_URI_ENV,
    MlflowTracker,
    NullTracker,
    log_record_run,
    make_tracker,
    open_run,
    run_name,
)
from pipeline.tracking.selection import log_selection
from pipeline.tracking.store import (
    UI_QUERY,
    client_for,
    ensure_experiment,
    resolve_uri,
    retrying,
    sqlite_path,
)
from pipeline.tracking.sweep import SweepCallback

__all__ = [
    "PARENT_ENV",
    "PARENT_URI_ENV",
    "RESULT_METRICS",
    "STORE_LOCATION",
    "UI_QUERY",
    "MlflowTracker",
    "NullTracker",
    "SweepCallback",
    "client_for",
    "dataset_inputs",
    "ensure_experiment",
    "log_record_run",
    "log_selection",
    "make_tracker",
    "open_run",
    "process_tags",
    "reap_stale_runs",
    "resolve_uri",
    "retrying",
    "run_name",
    "sqlite_path",
]
