"""Entry point: ``python -m pipeline.train [overrides]`` (add ``-m`` for a multirun sweep).

Before Hydra starts any job, every job's configuration is composed and checked
(:mod:`pipeline.compose.preflight`): an unknown option, a typo, a wrong type or a bad value is
reported as one line on stderr with exit code 2, and nothing runs. The default data file is built
there too, once, before parallel jobs could race for it.

In a study sweep (``$ASGD_REUSE_FROM`` names the previous attempt's folder, ``$ASGD_REUSE_POOL``
the stage's earlier outputs), each job writes its key (:mod:`pipeline.core.jobkey`) into
``key.json`` and, when a complete job there has the same key, copies its records instead of
running (one log line, ``reused <folder>``; no
MLflow run). Wall-clock runs (engine=rpc) are measurements, never reused.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

# quiet torch's C++ warnings (e.g. TensorPipe's "eof" when a worker leaves); set before torch loads
os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")

from pipeline import CONF_DIR, ConfigError, RunError, Terminated, defer_signal  # noqa: E402
from pipeline.compose.keys import job_key
from pipeline.compose.preflight import preflight
from pipeline.compose.schema import register
from pipeline.core import jobkey

register()
log = logging.getLogger("pipeline.train")
_FAILED_JOBS: list[str] = []


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base=None)
def hydra_main(cfg: DictConfig) -> float | None:
    from hydra.types import RunMode

    from pipeline.runner import run_experiment

    hc = HydraConfig.get()
    previous = os.environ.get(jobkey.REUSE_ENV)
    if previous is not None and hc.mode == RunMode.MULTIRUN:
        reused = key_or_reuse(cfg, Path(hc.runtime.output_dir), Path(previous))
        if reused is not None:
            return reused.get("final_suboptimality")
    try:
        summary, _ = run_experiment(cfg, hc.runtime.output_dir, dict(hc.runtime.choices))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except RunError as e:
        print(f"error: {e} ({hc.runtime.output_dir})", file=sys.stderr)
        if hc.mode == RunMode.MULTIRUN:  # the sweep goes on; the exit code says it failed
            _FAILED_JOBS.append(hc.runtime.output_dir)
            return None
        sys.exit(1)
    log.info(
        "%s: %s after %d gradients, %d updates (stopped by %s); loss %s, F-F* %s -> %s",
        summary["method"],
        summary["status"],
        summary["gradients"],
        summary["updates"] or 0,
        summary.get("stopped_by"),
        _g4(summary["final_loss"]),
        _g4(summary["final_suboptimality"]),
        hc.runtime.output_dir,
    )
    return summary["final_suboptimality"]


def key_or_reuse(cfg: DictConfig, outdir: Path, previous: Path) -> dict | None:
    """Write this job's key; when a complete job of ``previous`` has the same key, copy its
    records here and return its summary (None: the job runs)."""
    from pipeline.engines import TIME_KINDS

    if TIME_KINDS.get(cfg.engine.name) != "simulated":  # a wall-clock run is a measurement
        return None
    try:
        key = job_key(cfg)
    except ConfigError:  # the run reports it, as one line
        return None
    outdir.mkdir(parents=True, exist_ok=True)
    jobkey.write_key(outdir, key)
    pool = [Path(p) for p in os.environ.get(jobkey.POOL_ENV, "").split(os.pathsep) if p]
    src = jobkey.find_reusable(previous, key["key"], pool)
    if src is None:
        return None
    jobkey.copy_records(src, outdir)
    log.info("reused %s", src)
    return json.loads((outdir / "summary.json").read_text())


def _g4(v) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def _on_signal(signum, frame):
    """The first SIGINT/SIGTERM/SIGHUP ends the run like Ctrl-C (records kept, run marked
    killed); a second one while that cleanup runs exits at once."""
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _second_signal)
    exc = KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)
    if not defer_signal(exc):  # inside a store write: raised when the write is done
        raise exc


def _second_signal(signum, frame):
    os._exit(128 + signum)


def install_signal_handlers() -> None:
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)


def main() -> None:
    argv = sys.argv[1:]
    if os.environ.get("TORCHELASTIC_RUN_ID") and os.environ.get("RANK", "0") != "0":
        # under torchrun, every rank but 0 is a worker of engine=rpc: no Hydra, no records
        from pipeline.engines.rpc.worker import torchrun_worker

        torchrun_worker(argv)
        return
    if os.environ.get("TORCHELASTIC_RUN_ID") and any(a in ("-m", "--multirun") for a in argv):
        print("error: under torchrun, pipeline.train runs one job (no -m)", file=sys.stderr)
        sys.exit(2)
    if any(a.startswith("resume=") for a in argv):
        sys.exit(resume_main(argv))
    info_only = any(
        a in ("--help", "-h", "--hydra-help", "--info", "--cfg", "-c")
        or a.startswith("--info")
        or a.startswith("--cfg")
        for a in argv
    )
    if not info_only:
        try:
            preflight(argv)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
    install_signal_handlers()
    try:
        hydra_main()
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        print(f"error: {getattr(e, 'reason', 'interrupted (SIGINT)')}", file=sys.stderr)
        _abort_sweep()
        sys.exit(128 + signum)
    if _FAILED_JOBS:
        print(f"error: {len(_FAILED_JOBS)} job(s) of the sweep failed", file=sys.stderr)
        sys.exit(1)


RESUMABLE = ("killed", "failed", "running")  # "running": a process killed by SIGKILL


def resume_main(argv: list[str]) -> int:
    """``python -m pipeline.train resume=<run dir>``: continue that run, in that folder, with
    the configuration it was started with (no other override: the records must stay one
    run's). Exit codes as for a run; a folder that cannot be resumed is one line, exit 2."""
    from pathlib import Path

    from omegaconf import OmegaConf

    from pipeline.core.records import RUN_FILE, SUMMARY_FILE
    from pipeline.runner import run_experiment

    if len(argv) != 1:
        print("error: resume=<run dir> takes no other argument (the run keeps its config)",
              file=sys.stderr)  # fmt: skip
        return 2
    run_dir = Path(argv[0].split("=", 1)[1]).expanduser()
    cfg_file, summary_file = run_dir / ".hydra" / "config.yaml", run_dir / SUMMARY_FILE
    if not all(f.exists() for f in (cfg_file, summary_file, run_dir / ".hydra/overrides.yaml")):
        print(f"error: resume: {run_dir} is not a run's folder (no .hydra/config.yaml and "
              f"summary.json)", file=sys.stderr)  # fmt: skip
        return 2
    import json

    status = json.loads(summary_file.read_text()).get("status")
    if status not in RESUMABLE:
        print(f"error: resume: the run in {run_dir} is {status}; only a killed, failed or "
              f"interrupted run can be resumed", file=sys.stderr)  # fmt: skip
        return 2
    # the run's own overrides, composed again: the typed config the run had (conf/ unchanged)
    from hydra import compose, initialize_config_dir

    overrides = list(OmegaConf.load(run_dir / ".hydra" / "overrides.yaml"))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name="config", overrides=overrides)
    if OmegaConf.to_yaml(cfg) != OmegaConf.to_yaml(OmegaConf.load(cfg_file)):
        print(f"error: resume: conf/ no longer composes the run's overrides to the config in "
              f"{cfg_file}; resume it with the code it was started with",
              file=sys.stderr)  # fmt: skip
        return 2
    pid = json.loads((run_dir / RUN_FILE).read_text()).get("pid") if (
        run_dir / RUN_FILE).exists() else None  # fmt: skip
    if status == "running" and pid and _alive(pid):
        print(f"error: resume: the run in {run_dir} is still running (pid {pid})",
              file=sys.stderr)  # fmt: skip
        return 2
    logging.basicConfig(
        level=logging.INFO,
        format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s",
        handlers=[logging.FileHandler(run_dir / "train.log"), logging.StreamHandler()],
    )
    install_signal_handlers()
    try:
        summary, _ = run_experiment(cfg, run_dir, resume=True)
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        print(f"error: {getattr(e, 'reason', 'interrupted (SIGINT)')}", file=sys.stderr)
        return 128 + signum
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunError as e:
        print(f"error: {e} ({run_dir})", file=sys.stderr)
        return 1
    log.info("%s resumed: %s after %d gradients, %d updates; loss %s, F-F* %s", summary["method"],
             summary["status"], summary["gradients"], summary["updates"] or 0,
             _g4(summary["final_loss"]), _g4(summary["final_suboptimality"]))  # fmt: skip
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _abort_sweep() -> None:
    """A multirun stopped by a signal: its MLflow parent run is KILLED too."""
    from pipeline.tracking import PARENT_ENV, PARENT_URI_ENV, client_for

    parent = os.environ.pop(PARENT_ENV, None)
    if not parent:
        return
    try:
        client_for(os.environ.pop(PARENT_URI_ENV, None)).set_terminated(parent, status="KILLED")
    except Exception as e:  # the store may be gone; the children carry their own status
        print(f"warning: could not mark the sweep's MLflow run killed: {e}", file=sys.stderr)


if __name__ == "__main__":
    main()
