"""Run one composed configuration: build, run the engine, write the records, log to MLflow."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from pipeline import PROJECT_ROOT, RunError, tracking
from pipeline.compose.build import Experiment, build_experiment
from pipeline.core.progress import progress_enabled
from pipeline.core.records import RUN_FILE, RunRecorder, read_history, write_summary
from pipeline.core.theory import predict
from pipeline.engines import TIME_KINDS, RunControl, RunResult, engine_class
from pipeline.engines.base import BY_FAILURE, BY_SIGNAL, CHECKPOINT_FILE, Checkpoints

log = logging.getLogger(__name__)


def make_engine(exp: Experiment, recorder: RunRecorder, trace: bool = False):
    """The configured engine (from the registry) with its run control."""
    cfg = exp.cfg
    control = RunControl(
        exp.evaluator,
        recorder,
        exp.eval_every,
        cfg.budget.gradients,
        cfg.budget.time,
        progress=progress_enabled(cfg.progress),
        desc=f"{exp.rule.name} {cfg.engine.name}",
        background=TIME_KINDS[cfg.engine.name] == "wall",
    )
    return engine_class(cfg.engine.name).create(exp, control, trace_iterates=trace)


def run_experiment(
    cfg: Any,
    outdir: str | Path,
    choices: dict[str, str] | None = None,
    trace: bool = False,
    resume: bool = False,
) -> tuple[dict, RunResult | None]:
    """Run ``cfg`` and write its records into ``outdir``; returns (summary, result).
    ``resume``: ``outdir`` holds this configuration's killed or failed run: go on from its
    checkpoint (start over where it has none)."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    exp = build_experiment(cfg)  # raises ConfigError before any work
    torch.set_num_threads(cfg.threads)
    time_kind = TIME_KINDS[cfg.engine.name]
    run_name = tracking.run_name(cfg, exp)
    checkpoint = outdir / CHECKPOINT_FILE
    loaded = None
    if resume and checkpoint.exists():
        loaded = torch.load(checkpoint, weights_only=False)
    recorder = RunRecorder(outdir, extra_history=exp.evaluator.extra_columns,
                           resume=loaded["recorder"] if loaded else None)  # fmt: skip
    tracker, engine = tracking.NullTracker(), None
    started = time.perf_counter()
    circumstances = circumstances_at_start(exp, outdir if resume else None, loaded)
    write_summary(outdir, summarize(exp, None, recorder, "running", time_kind, None))
    write_summary(outdir, circumstances, RUN_FILE)
    result: RunResult | None = None
    status, error = "failed", None
    try:  # from here on, whatever happens, the records and the MLflow run are closed
        resume_id = circumstances["mlflow_run_id"] if resume else None
        tracker = tracking.open_run(cfg, exp, choices, outdir=outdir, resume_id=resume_id)
        if tracker.run_id is not None:
            circumstances["mlflow_run_id"] = tracker.run_id
            write_summary(outdir, circumstances, RUN_FILE)
        recorder.on_history = tracker.log_history
        engine = make_engine(exp, recorder, trace=trace)
        every = cfg.engine.get("checkpoint_every")
        if hasattr(engine, "checkpoints") and not trace:
            engine.checkpoints = Checkpoints(checkpoint, every, loaded)
        result = engine.run()
        status = result.status
    except KeyboardInterrupt as e:
        status, error = "killed", getattr(e, "reason", "interrupted (SIGINT)")
        raise
    except RunError as e:
        error = str(e)
        raise
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
        raise
    finally:
        result = result or (engine.control.result if engine is not None else None)
        try:
            recorder.close()
        finally:
            summary = summarize(exp, result, recorder, status, time_kind, error)
            write_summary(outdir, summary)
            if status in ("finished", "diverged") and checkpoint.exists():
                checkpoint.unlink()  # nothing to resume
            circumstances["wall_time_s"] = (circumstances["wall_time_s"] or 0.0) + (
                time.perf_counter() - started)  # fmt: skip
            circumstances["ended_at"] = _now()
            write_summary(outdir, circumstances, RUN_FILE)
            names = ("summary.json", RUN_FILE, "history.csv", "events.csv", "jobs.csv",
                     "workers.log")  # fmt: skip
            files = [outdir / f for f in names] + [outdir / ".hydra" / "config.yaml"]
            tracker.finish({**summary, **circumstances}, outdir, files)
    if status == "diverged":
        log.warning("%s diverged (loss not finite); see %s", run_name, outdir / "summary.json")
    return summary, result


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def circumstances_at_start(
    exp: Experiment, resumed: Path | None = None, loaded: dict | None = None
) -> dict:
    """``run.json`` when the run starts: what differs between two runs of one configuration.
    ``wall_time_s`` and ``ended_at`` are added when it ends, ``mlflow_run_id`` once it has one.
    A resumed run keeps the earlier file's start, run id and wall time, and adds to its list
    ``resumed`` when, where and from which arrival it went on."""
    now = {"host": socket.gethostname(), "pid": os.getpid()}
    old = {}
    if resumed is not None and (resumed / RUN_FILE).exists():
        old = json.loads((resumed / RUN_FILE).read_text())
    info = {
        "started_at": old.get("started_at", _now()),
        **now,
        "dataset_path": str(Path(exp.data_path).resolve()) if exp.data_path else None,
        "mlflow_run_id": old.get("mlflow_run_id"),
        "wall_time_s": old.get("wall_time_s"),
        "ended_at": None,
    }
    if resumed is not None:
        at = {"at": _now(), **now, "from_gradients": loaded["done"] if loaded else 0}
        info["resumed"] = [*old.get("resumed", []), at]
    return info


def dataset_file(path: str | Path | None) -> str | None:
    """The data file as summary.json names it: relative to the project when it lies inside
    (so two clones write the same summary), else absolute (the full path is in run.json)."""
    if not path:
        return None
    p = Path(path).resolve()
    return str(p.relative_to(PROJECT_ROOT)) if p.is_relative_to(PROJECT_ROOT) else str(p)


def summarize(
    exp: Experiment,
    result: RunResult | None,
    recorder: RunRecorder,
    status: str,
    time_kind: str,
    error: str | None,
) -> dict:
    cfg = exp.cfg
    final = (result.final if result else None) or recorder.last_history or {}
    f_star = exp.evaluator.f_star
    summary = {
        "method": cfg.optimizer.name,
        "engine": cfg.engine.name,
        "objective": cfg.objective.name,
        "dataset": cfg.dataset.name,
        "topology": cfg.topology.name,
        "noise": cfg.topology.get("noise"),
        "n_workers": exp.n_workers,
        "seed": cfg.seed,
        "lr": exp.lr,
        "batch_size": cfg.batch_size,
        "eval_every": exp.eval_every,
        # a signal may land between an arrival being counted and its event row being written:
        # a killed run counts the gradients it recorded
        "gradients": result.gradients if result and status != "killed" else recorder.n_events,
        "updates": result.updates if result else None,
        "applied": recorder.n_applied,
        "discarded": recorder.n_events - recorder.n_applied,
        "cancelled": result.cancelled if result else None,
        "stopped_by": stopped_by(result, status, error),
        "failures": result.failures if result else [],
        "final_update": _int(final.get("update")),  # the iterate the finals are from
        "final_loss": final.get("loss"),
        "final_suboptimality": final.get("suboptimality"),
        "final_grad_norm_sq": final.get("grad_norm_sq"),
        "final_test_loss": final.get("test_loss"),
        "final_test_accuracy": final.get("test_accuracy"),
        "f_star": f_star,
        "time_kind": time_kind,
        "sim_time": (result.time if result else None) if time_kind == "simulated" else None,
        "max_delay": recorder.max_delay,
        "mean_delay": recorder.mean_delay,
        "dataset_file": dataset_file(exp.data_path),
        "split": cfg.dataset.split,
        "worker_rows": [exp.objective.n_rows if r is None else len(r) for r in exp.rows],
        "worker_class_counts": exp.class_counts(),
        "status": status,
    }
    summary.update({f"rule_{k}": v for k, v in exp.rule.describe().items() if k != "lr"})
    summary.update(theory_summary(exp))
    summary.update(time_to_target(recorder.outdir / "history.csv", cfg.target))
    if time_kind == "wall" and result:
        summary["run_time_s"] = result.time
    if result:
        summary.update(result.extra)
    if error:
        summary["error"] = error
    return summary


def _int(v) -> int | None:
    return None if v is None else int(v)


def stopped_by(result: RunResult | None, status: str, error: str | None) -> str | None:
    """Why the run ended: a signal or a failure caught here wins over what the engine's loop
    had set when it was interrupted (the event engine's default is "no jobs left")."""
    if status == "killed":
        return BY_SIGNAL
    if status == "failed" and (error or result is None or not result.stopped_by):
        return BY_FAILURE
    return result.stopped_by if result else None


def theory_summary(exp: Experiment) -> dict:
    """The fixed-model predictions for this run's worker times (keys ``theory_*``)."""
    consts = exp.constants or {}
    p = predict(exp.times.taus, eps=exp.cfg.target, **consts)
    out = {f"theory_{k}": v for k, v in p.items()}
    out.update({f"theory_{k}": v for k, v in consts.items()})
    return out


def time_to_target(history: Path, target: float | None) -> dict:
    """First evaluation at which F - F* (or the loss, where F* is unknown) is <= target."""
    if target is None or not history.exists():
        return {}
    for row in read_history(history):
        value = row["suboptimality"] if row["suboptimality"] is not None else row["loss"]
        if value is not None and value <= target:
            return {
                "target": target,
                "time_to_target": row["time"],
                "gradients_to_target": int(row["gradients"]),
                "updates_to_target": int(row["update"]),
            }
    return {"target": target, "time_to_target": None, "gradients_to_target": None,
            "updates_to_target": None}  # fmt: skip
