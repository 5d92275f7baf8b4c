"""The MLflow store: where it is (``pipeline.compose.options.STORE_LOCATION``, resolved by
:func:`pipeline.compose.store.resolve_uri`), its clients, its experiment.

Store creation (schema migrations and the experiment) is serialised by a file lock beside a
sqlite store, so any number of processes may start at once on a fresh store; every write is
retried with bounded backoff while sqlite reports 'database is locked'.

A tracking server (``http://``, ``https://``) is reached with MLflow's HTTP retries bounded
(``HTTP_LIMITS``, unless the environment sets them): a server that is down costs seconds per
call, not MLflow's default of minutes.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from contextlib import contextmanager

from pipeline import signals_deferred
from pipeline.compose.store import resolve_uri, sqlite_path
from pipeline.tracking.logs import quiet_library_logs

log = logging.getLogger(__name__)

# the experiment's type as MLflow 3 records it: model training, not GenAI (the UI still opens in
# its GenAI view unless the address asks for the "Model training" one: UI_QUERY)
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
UI_QUERY = "workflowType=machine_learning"

#: MLflow's HTTP settings for a tracking server where the environment does not set them: 3
#: attempts (the second at once, the third 2-3 s later), each given 30 s to connect and to
#: answer. MLflow's defaults (8 attempts, backoff doubling from 4 s up to 120 s, 120 s each)
#: make a server that is down cost minutes per call.
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def is_server(uri: str) -> bool:
    """Whether the store is a tracking server (reached over HTTP)."""
    return uri.startswith(("http://", "https://"))


def bound_http_retries() -> None:
    """``HTTP_LIMITS`` into the environment, where it does not set them (MLflow reads them at
    each request; processes started from here inherit them)."""
    for key, value in HTTP_LIMITS.items():
        os.environ.setdefault(key, value)


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
    """An MlflowClient whose calls retry while sqlite is locked by another process, and are
    not cut by a run's signal (it is raised when the call returns)."""

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
        call = retrying(attr, also=also)

        def deferred(*args, **kwargs):
            # a run's signal waits for the call: cut inside a transaction, it would leave the
            # sqlite store locked for the run's own finish (pipeline.signals_deferred)
            with signals_deferred():
                return call(*args, **kwargs)

        return deferred


def client_for(uri: str | None = None) -> RetryingClient:
    """An MlflowClient on the resolved store; the store is created (migrations) under a file
    lock, so concurrent first starts are safe. A tracking server's retries are bounded
    (:func:`bound_http_retries`)."""
    from mlflow.tracking import MlflowClient

    quiet_library_logs()  # before the store's creation logs its first line
    uri = resolve_uri(uri)
    if is_server(uri):
        bound_http_retries()
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
