"""Entry point: ``python -m pipeline.train [overrides]`` (add ``-m`` for a multirun sweep).

Before Hydra starts any job, every job's configuration is composed and checked (a preflight):
an unknown option, a typo, a wrong type or a bad value is reported as one line on stderr with
exit code 2, and nothing runs. The default data file is built here too, once, before parallel
jobs could race for it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

# quiet torch's C++ warnings (e.g. TensorPipe's "eof" when a worker leaves); set before torch loads
os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")

from pipeline import CONF_DIR, ConfigError, RunError, Terminated  # noqa: E402
from pipeline.compose.schema import register

register()
log = logging.getLogger("pipeline.train")
MAX_PREFLIGHT_JOBS = 512
FREE_DICTS = ("lr_table", "dataset.params")  # mappings whose keys the user chooses
_ABSENT = object()


def _one_line(e: BaseException) -> str:
    from hydra.errors import MissingConfigException

    if isinstance(e, MissingConfigException) and e.options:
        head = str(e).strip().splitlines()[0]
        options = sorted(o for o in e.options if not o.startswith("schema_"))  # typed bases
        return f"{head}; available: {', '.join(options)}"
    parts = []
    while e is not None:
        text = " ".join(str(e).split())
        if text and text not in parts:
            parts.append(text)
        e = e.__cause__ or (e.__context__ if not e.__suppress_context__ else None)
    return ": ".join(parts) or "invalid configuration"


def _job_overrides(argv: list[str]) -> tuple[list[list[str]], str]:
    """Split command-line overrides into one list per job, the way Hydra's basic sweeper does."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    config_name = "config"
    args: list[str] = []
    it = iter(argv)
    for a in it:
        if a in ("-cn", "--config-name"):
            config_name = next(it, config_name)
        elif a.startswith("--config-name="):
            config_name = a.split("=", 1)[1]
        elif a in ("-cp", "--config-path", "-cd", "--config-dir"):
            next(it, None)
        elif a.startswith("-"):
            continue
        elif not (a.startswith("hydra.") or a.startswith("hydra/") or a.startswith("+hydra")):
            args.append(a)
    parsed = OverridesParser.create().parse_overrides(args)
    return BasicSweeper.split_arguments(parsed, None)[0], config_name


def _compose_error(e: BaseException, overrides: list[str], config_name: str) -> ConfigError:
    """One line for a failed composition; an unknown key names the closest valid one."""
    import re

    from hydra import compose

    from pipeline.compose.schema import unknown_key_message

    text = _one_line(e)
    m = re.search(r"Could not override '([^']+)'", text) or re.search(
        r"Key '([^']+)' (?:is )?not in", text
    )
    if m and ("not in" in text or "No match in config" in text):
        key = m.group(1)
        groups_only = [o for o in overrides if "=" in o and "." not in o.split("=", 1)[0]]
        try:
            base = compose(config_name=config_name, overrides=groups_only)
        except Exception:
            base = None
        return ConfigError(unknown_key_message(key.lstrip("+~"), base))
    m = re.search(r"An item is already at '([^']+)'", text)
    if m:
        return ConfigError(f"{m.group(1)} exists: set it with {m.group(1)}=..., without '+'")
    m = re.search(r"Error merging override ([^=\s]+)=(.*?): (.*?)full_key", text + "full_key")
    if m:  # a value of the wrong type: name the key, say what it takes
        key, value, why = m.group(1).lstrip("+~"), m.group(2), m.group(3)
        if "is not Optional" in why:
            return ConfigError(f"{key} must be set, got null")
        kind = re.search(r"could not be converted to (\w+)|is not a valid (bool)", why)
        if kind:
            what = {"Integer": "an integer", "Float": "a number", "bool": "true or false"}
            name = what.get(kind.group(1) or kind.group(2), kind.group(1))
            if re.search(r"full_key: \S+\[\d+\]", text):  # an element of a list
                name = "a list of " + {"an integer": "integers", "a number": "numbers"}.get(
                    name, name
                )
            return ConfigError(f"{key} must be {name}, got {value}")
    return ConfigError(_one_line(e))


def _refuse_additions(overrides: list[str], config_name: str) -> None:
    """``+key=value`` adds a key outside the schemas: refused, naming the closest valid key."""
    from hydra import compose

    from pipeline.compose.schema import unknown_key_message

    for o in overrides:
        if o.startswith("+") and "=" in o:
            key = o.lstrip("+").split("=", 1)[0]
            if key.rpartition(".")[0] in FREE_DICTS:
                continue
            plain = [x for x in overrides if not x.startswith("+")]
            try:
                base = compose(config_name=config_name, overrides=plain)
            except Exception:
                base = None
            if base is not None and OmegaConf.select(base, key, default=_ABSENT) is not _ABSENT:
                raise ConfigError(f"{key} exists: set it with {key}=..., without '+'")
            raise ConfigError(unknown_key_message(key, base) + " (keys cannot be added with '+')")


def preflight(argv: list[str]) -> int:
    """Compose and check every job before any runs (config, input files, memory, data; see
    :func:`pipeline.compose.build.check_job`); returns the number of jobs checked."""
    from hydra import compose, initialize_config_dir

    from pipeline.compose.build import check_job

    try:
        jobs, config_name = _job_overrides(argv)
    except Exception as e:
        raise ConfigError(f"cannot parse overrides: {_one_line(e)}") from None
    cache: dict = {}  # data files the jobs share are read once
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        for overrides in jobs[:MAX_PREFLIGHT_JOBS]:
            _refuse_additions(overrides, config_name)
            try:
                cfg = compose(config_name=config_name, overrides=overrides)
            except Exception as e:
                raise _compose_error(e, overrides, config_name) from None
            check_job(cfg, cache)
    return len(jobs)


_FAILED_JOBS: list[str] = []


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base=None)
def hydra_main(cfg: DictConfig) -> float | None:
    from hydra.types import RunMode

    from pipeline.runner import run_experiment

    hc = HydraConfig.get()
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


def _g4(v) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def _on_signal(signum, frame):
    """The first SIGINT/SIGTERM/SIGHUP ends the run like Ctrl-C (records kept, run marked
    killed); a second one while that cleanup runs exits at once."""
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _second_signal)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)


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
