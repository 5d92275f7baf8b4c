"""The preflight of ``python -m pipeline.train``: every job of a command line (one, or each job
of a ``-m`` sweep, the way Hydra's basic sweeper splits it) is composed and checked before
Hydra starts any, so a bad value anywhere in a sweep is one line and nothing runs. Hydra's
composition errors are turned into one line naming the key (and the closest valid one)."""

from __future__ import annotations

import re

from omegaconf import OmegaConf

from pipeline import CONF_DIR, ConfigError

MAX_PREFLIGHT_JOBS = 512
#: mappings whose keys the user chooses (a user's module, loss and data factory: their arguments)
FREE_DICTS = ("lr_table", "dataset.params", "objective.module", "objective.loss", "dataset.factory")
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
        elif a.startswith("hydra.searchpath=") or a.startswith("+hydra.searchpath="):
            args.append(a)  # a user's config directories: their rules' and models' YAML
        elif not (a.startswith("hydra.") or a.startswith("hydra/") or a.startswith("+hydra")):
            args.append(a)
    parsed = OverridesParser.create().parse_overrides(args)
    return BasicSweeper.split_arguments(parsed, None)[0], config_name


def _compose_error(e: BaseException, overrides: list[str], config_name: str) -> ConfigError:
    """One line for a failed composition; an unknown key names the closest valid one."""
    from hydra import compose

    from pipeline.compose.validate import unknown_key_message

    text = _one_line(e)
    m = re.search(r"Could not override '([^']+)'", text) or re.search(
        r"Key '([^']+)' (?:is )?not in", text
    )
    if m and ("not in" in text or "No match in config" in text):
        key = m.group(1)
        groups_only = [
            o for o in overrides
            if "=" in o and ("." not in o.split("=", 1)[0] or "hydra.searchpath=" in o)
        ]  # fmt: skip
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

    from pipeline.compose.validate import unknown_key_message

    for o in overrides:
        if o.startswith("+") and "=" in o:
            key = o.lstrip("+").split("=", 1)[0]
            if any(key.startswith(d + ".") for d in FREE_DICTS):
                continue
            plain = [x for x in overrides if not x.startswith("+") or "hydra.searchpath" in x]
            try:
                base = compose(config_name=config_name, overrides=plain)
            except Exception:
                base = None
            if base is not None and OmegaConf.select(base, key, default=_ABSENT) is not _ABSENT:
                raise ConfigError(f"{key} exists: set it with {key}=..., without '+'")
            if base is not None and key.startswith("optimizer.") and key.count(".") == 1:
                if "_target_" in base.optimizer:  # a rule's key: checked against its signature
                    continue
            raise ConfigError(unknown_key_message(key, base) + " (keys cannot be added with '+')")


def preflight(argv: list[str]) -> int:
    """Compose and check every job before any runs (config, input files, memory, data; see
    :func:`pipeline.compose.build.check_job`), then the MLflow store of every job that tracks
    (:func:`pipeline.compose.store.check_store`: it can be created or reached); returns the
    number of jobs checked."""
    from hydra import compose, initialize_config_dir

    from pipeline.compose.build import check_job
    from pipeline.compose.store import check_store

    try:
        jobs, config_name = _job_overrides(argv)
    except Exception as e:
        raise ConfigError(f"cannot parse overrides: {_one_line(e)}") from None
    cache: dict = {}  # data files the jobs share are read once
    stores: dict = {}  # tracking.uri -> checked (a sweep's jobs share one store)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        for overrides in jobs[:MAX_PREFLIGHT_JOBS]:
            _refuse_additions(overrides, config_name)
            try:
                cfg = compose(config_name=config_name, overrides=overrides)
            except Exception as e:
                raise _compose_error(e, overrides, config_name) from None
            check_job(cfg, cache)
            if cfg.tracking.enabled:
                stores.setdefault(cfg.tracking.uri, None)
    for uri in stores:
        check_store(uri)
    return len(jobs)
