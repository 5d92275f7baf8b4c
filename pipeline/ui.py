"""Open the MLflow UI on exactly the store the runs went to, from any directory.

    python -m pipeline.ui                          # the store training uses by default
    python -m pipeline.ui tracking.uri=sqlite:////abs/path/mlflow.db
    python -m pipeline.ui --port 5001

The store is resolved as training resolves it (``pipeline.tracking.STORE_LOCATION``, which
``--help`` prints; the project's ``mlflow.db`` by absolute path, wherever this is typed).
``mlflow ui`` is then started on 127.0.0.1 (loopback only), and the address of the experiment's
runs (MLflow 3's "Model training" view) is printed. A sqlite store that does not exist yet is
refused (no empty store is created).

A tracking server (``tracking.uri=http://host:port``) serves the UI itself: nothing is started
(``--port`` does not apply); the server is asked for the experiment and the address of its runs
on that server is printed, exit code 0. A server that does not answer is one line on stderr,
exit code 1. ``--print-only`` contacts nothing.

Before the server starts, RUNNING runs of the store whose process on this machine is gone are
marked KILLED with their records attached (:func:`pipeline.tracking.reap_stale_runs`), so the
UI does not show a dead run as running for ever.
"""

from __future__ import annotations

import argparse
import os
import sys

from pipeline import EXPERIMENT, ConfigError
from pipeline.compose.store import check_store
from pipeline.tracking import STORE_LOCATION, UI_QUERY, resolve_uri, sqlite_path
from pipeline.tracking.run import one_line
from pipeline.tracking.store import is_server

HOST = "127.0.0.1"


class UIError(RuntimeError):
    pass


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.ui",
        description="Start `mlflow ui` on 127.0.0.1 on the store the pipeline's runs went to:\n"
        f"  {STORE_LOCATION}.",
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the store's line as it is
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="tracking.KEY=VALUE",
        help="tracking.uri=URI and tracking.experiment=NAME, as given to pipeline.train",
    )
    p.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (default 5000)")
    p.add_argument(
        "--print-only", action="store_true", help="print the store and the command; start nothing"
    )
    a = p.parse_args(argv)
    a.uri, a.experiment = None, EXPERIMENT
    for o in a.overrides:
        key, sep, value = o.partition("=")
        if not sep or key.lstrip("+") not in ("tracking.uri", "tracking.experiment"):
            p.error(f"unknown argument {o!r}: only tracking.uri=... and tracking.experiment=...")
        if key.lstrip("+") == "tracking.uri":
            a.uri = value or None
        else:
            a.experiment = value
    return a


def command(uri: str, port: int) -> list[str]:
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
           "--host", HOST, "--port", str(port), "--workers", "1"]  # fmt: skip
    db = sqlite_path(uri)
    if db is not None:  # artifacts of experiments created through the UI go beside the store
        cmd += ["--artifacts-destination", str(db.parent / "mlartifacts")]
    return cmd


def runs_url(base: str, experiment_id: str | None) -> str:
    """The UI's address of an experiment's runs (None: of the experiment list) at ``base``."""
    base = base.rstrip("/") + "/"
    if experiment_id is None:
        return f"{base}#/experiments?{UI_QUERY}"
    return f"{base}#/experiments/{experiment_id}/runs?{UI_QUERY}"


def experiment_url(uri: str, port: int, experiment: str) -> str:
    """The address of the experiment's runs, or of the experiment list when it is absent."""
    try:
        from pipeline.tracking import client_for

        exp = client_for(uri).get_experiment_by_name(experiment)
    except Exception:
        exp = None
    return runs_url(f"http://{HOST}:{port}/", exp.experiment_id if exp is not None else None)


def server_url(uri: str, experiment: str) -> str:
    """The address of the experiment's runs on the tracking server ``uri``, which is asked for
    it; UIError, in one line, when it does not answer (as MLflow)."""
    from pipeline.tracking import client_for

    try:
        check_store(uri)  # a TCP connect, bounded: one line when nothing listens
    except ConfigError as e:
        raise UIError(str(e)) from e
    try:
        exp = client_for(uri).get_experiment_by_name(experiment)
    except Exception as e:
        raise UIError(f"the tracking server {uri} does not answer as MLflow: {one_line(e)}") from e
    return runs_url(uri, exp.experiment_id if exp is not None else None)


def reap(uri: str) -> list[str]:
    """Mark KILLED the RUNNING runs of every experiment of the store whose process is gone;
    one line each on stdout. Never stops the UI from starting."""
    from pipeline.tracking import client_for, reap_stale_runs

    try:
        client = client_for(uri)
        ids = [e.experiment_id for e in client.search_experiments()]
        reaped = reap_stale_runs(client, ids)
        for run_id in reaped:
            run = client.get_run(run_id)
            print(f"marked KILLED: {run.info.run_name} ({run_id}): {run.data.tags['reaped_by']}")
        return reaped
    except Exception as e:
        print(f"warning: stale runs not checked: {type(e).__name__}: {e}", file=sys.stderr)
        return []


def prepare(a: argparse.Namespace) -> tuple[str, list[str] | None]:
    """The resolved store and the command that serves it (None: a server already does)."""
    uri = resolve_uri(a.uri)
    if is_server(uri):
        return uri, None
    db = sqlite_path(uri)
    if db is not None and not db.exists() and not a.print_only:
        raise UIError(
            f"no MLflow store at {db}: no run has been logged there yet (run "
            "`python -m pipeline.train` first, or pass tracking.uri=... / set MLFLOW_TRACKING_URI "
            "to the store the runs went to)"
        )
    return uri, command(uri, a.port)


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    try:
        uri, cmd = prepare(a)
    except UIError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"store: {uri}")
    if cmd is None:
        print("the tracking server serves the UI itself: nothing to start")
        if a.print_only:
            print(f"open: {runs_url(uri, None)}")
            return
        try:
            url = server_url(uri, a.experiment)
        except UIError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)
        reap(uri)
        print(f"open: {url}")
        return
    print(f"command: {' '.join(cmd)}")
    if a.print_only:
        return
    reap(uri)
    print(f"open: {experiment_url(uri, a.port, a.experiment)}", flush=True)
    os.execv(sys.executable, cmd)  # the server replaces this process: Ctrl-C stops it


if __name__ == "__main__":
    main()
