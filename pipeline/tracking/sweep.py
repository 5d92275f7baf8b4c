"""A Hydra multirun sweep in MLflow: ``SweepCallback`` makes one parent run before any job starts
(the jobs find it through ``PARENT_ENV``) and, when the sweep ends, gives it the job counts, the
tags its children share and ``sweep_comparison``: a figure and a table of the children."""

from __future__ import annotations

import csv
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from pipeline.core.runs import rank_key
from pipeline.tracking.mapping import CURVES, PROGRESS, RESULTS
from pipeline.tracking.reaper import process_tags, reap_quietly
from pipeline.tracking.run import PARENT_ENV, PARENT_URI_ENV, one_line
from pipeline.tracking.store import client_for, ensure_experiment, resolve_uri

log = logging.getLogger(__name__)


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
    carries the comparison of its children (``sweep_comparison``). The parent carries its
    process's tags, so a sweep whose process dies is marked KILLED by the next run (``reaper``);
    stale runs are reaped before the parent is created. A store that fails when the sweep ends
    (a tracking server that went down) is one warning line, not the sweep's failure: the jobs'
    records are written."""

    def __init__(self) -> None:
        self.parent: str | None = None
        self.uri: str | None = None

    def on_multirun_start(self, config, **kwargs) -> None:
        if not config.tracking.enabled:
            return
        self.uri = resolve_uri(config.tracking.uri)  # no client kept: launchers pickle callbacks
        client = client_for(self.uri)
        exp = ensure_experiment(client, config.tracking.experiment)
        reap_quietly(client, exp)  # runs and sweeps whose process died: KILLED
        sweep_dir = str(config.hydra.sweep.dir)
        name = config.tracking.get("sweep_name") or f"sweep {Path(sweep_dir).name}"
        tags = {**process_tags(), "sweep": "parent", "sweep_dir": sweep_dir}
        run = client.create_run(exp, run_name=name, tags=tags)
        self.parent = run.info.run_id
        os.environ[PARENT_ENV] = self.parent
        os.environ[PARENT_URI_ENV] = self.uri

    def on_multirun_end(self, config, **kwargs) -> None:
        if self.parent is None:
            return
        from mlflow.entities import Metric

        client = client_for(self.uri)
        failed: Exception | None = None
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
        except Exception as e:  # the store failed (a server that went down): the jobs' records
            failed = e  # are written; the sweep does not fail for its mirror
        finally:
            try:
                # the sweep itself finished; diverged or failed jobs are counted, not propagated
                client.set_terminated(self.parent, status="FINISHED")
            except Exception as e:
                failed = failed or e
            os.environ.pop(PARENT_ENV, None)
            os.environ.pop(PARENT_URI_ENV, None)
        if failed is not None:
            log.warning("MLflow: the sweep's run %s is incomplete on %s (%s)", self.parent,
                        self.uri, one_line(failed))  # fmt: skip
