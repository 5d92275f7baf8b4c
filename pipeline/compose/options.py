"""The reference of every config group, option and key, written from the schemas
(:mod:`pipeline.compose.schema`), ``conf/`` and the one-line meanings below: the README's option
tables, ``docs/options.md`` and the group and key lines of ``python -m pipeline.train --help``
are generated from it, so the docs cannot drift from the code.

    python -m pipeline.compose.options --write    # rewrite them
    python -m pipeline.compose.options --check    # exit 1 if either is out of date (tests do this)
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import MISSING, fields, is_dataclass

from pipeline import CONF_DIR, PROJECT_ROOT
from pipeline.compose.schema import GROUPS, SCHEMAS, Config

#: where the runs' MLflow store is, said the same way in README.md, --help and conf/
STORE_LOCATION = (
    "tracking.uri, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the project root"
)

#: one line per key of every schema (tests require one for each key, and no stale ones)
KEY_HELP: dict[str, str] = {
    "objective.dtype": "float32 | float64",
    "objective.device": "cpu | cuda | cuda:N | auto: where the event engine computes",
    "objective.dim": "noisy_quadratic: dimension",
    "objective.sigma": "noisy_quadratic: gradient noise scale",
    "objective.cond": "noisy_quadratic: condition number",
    "objective.l2": "L2 regularisation (null: 1e-3 for logreg, 0 for the others)",
    "objective.init_seed": "the model's initial weights",
    "objective.hidden": "mlp: layer widths, e.g. [64,64]",
    "objective.channels": "cnn: convolution channels",
    "objective.module": "torch_module: {_target_: pkg.Class, args}; in/out sizes from the data",
    "objective.loss": "torch_module: cross_entropy | mse | {_target_: pkg.loss_fn}",
    "dataset.path": "an .npz with X and y (and X_test, y_test); default data/<name>.npz",
    "dataset.seed": "the data's own seed",
    "dataset.split": "none | iid | label_sorted | dirichlet (dataset.alpha)",
    "dataset.alpha": "dirichlet split: concentration",
    "dataset.params": "the data builder's arguments (n_rows, dim, ...)",
    "dataset.factory": "callable: {_target_: pkg.fn, args} returning X, y[, X_test, y_test]",
    "topology.n_workers": "number of workers",
    "topology.noise": "per-job time noise: none | exponential | gamma | halfnormal",
    "topology.gamma_shape": "gamma noise: shape",
    "topology.jitter": "halfnormal noise: scale, times tau_i",
    "topology.tau": "mean job time (homogeneous, linear, sqrt, straggler)",
    "topology.stragglers": "straggler: how many workers are slow",
    "topology.factor": "straggler: how many times slower",
    "topology.fraction_fast": "two_class: share of fast workers (tau_fast; the rest tau_slow)",
    "topology.tau_fast": "two_class: mean job time of the fast workers",
    "topology.tau_slow": "two_class: mean job time of the slow workers",
    "topology.times": "custom: one mean time per worker, e.g. [1.0,1.5,2.0,3.0]",
    "topology.trace_path": "trace: the directory of an engine=rpc run to replay",
    "optimizer.lr": "stepsize (default: the preset's lr_table entry times lr_scale)",
    "optimizer.threshold": "asgd_drop, asgd_random: drop delays above it; ringmaster: R",
    "optimizer.stepsize": "asgd_random: constant | adaptive | drop",
    "optimizer.cancel": "rennala, ringmaster, malenia: cancel stale running jobs (true/false)",
    "optimizer.sigma2": "rennala, ringmaster: sigma^2 for S, R = ceil(sigma^2/target)",
    "optimizer.batch": "rennala: S, averaged per step (default ceil(sigma^2/target), or n); "
    "malenia: S, a step once the harmonic mean of the counts reaches S/n (default n)",
    "optimizer.radius": "picky: apply a delayed gradient only if ||x_k - x_{k-d}|| <= radius",
    "engine.checkpoint_every": "seconds between checkpoints for resume=<run dir> (null: none)",
    "engine.time_scale": "rpc: wall seconds per unit of worker time",
    "engine.ordered": "rpc: apply arrivals in the simulated clock's order",
    "engine.device": "rpc: cpu | cuda | auto, where workers compute (worker i on cuda:i mod k)",
    "engine.launcher": "rpc: spawn (workers started here) | torchrun (ranks from the environment)",
    "engine.job_timeout": "rpc: seconds a job may take beyond its wait before its worker is lost",
    "engine.start_timeout": "rpc: seconds for start-up and rendezvous",
    "engine.shutdown_timeout": "rpc: seconds workers get to leave before they are killed",
    "engine.on_worker_failure": "rpc, synchronous methods: continue (with n - 1) | abort",
    "engine.master_addr": "rpc: where the group meets (one machine: loopback only)",
    "engine.master_port": "rpc: its port (null: a free one)",
    "engine.worker_threads": "rpc: torch threads per worker process",
    "tracking.enabled": "log the run to MLflow",
    "tracking.uri": "the MLflow store (default: $MLFLOW_TRACKING_URI, else mlflow.db)",
    "tracking.experiment": "the MLflow experiment",
    "tracking.artifacts": "attach the run's record files to its MLflow run",
    "tracking.sweep_name": "a multirun's parent run name (default: sweep <dir>)",
    "budget.gradients": "stop after this many gradients",
    "budget.time": "stop at this time (simulated seconds; engine=rpc unordered: wall)",
    "batch_size": "rows per gradient; null for full-batch gradients",
    "eval_every": "updates between evaluations (default about 200 per run)",
    "seed": "the run's seed (job times, samples, random assignment)",
    "target": "F - F* to reach: time to target and the theory's eps",
    "lr_table": "the preset's tuned stepsize per method",
    "lr_scale": "multiplies the preset's stepsize (a tuning grid sweeps it)",
    "progress": "auto | on | off",
    "threads": "torch threads of this process",
}
#: the keys --help lists, in its order
MAIN_KEYS = (
    "optimizer.lr", "optimizer.threshold", "optimizer.batch", "optimizer.cancel",
    "optimizer.stepsize", "topology.n_workers", "topology.tau", "topology.noise",
    "topology.times", "topology.stragglers", "topology.factor", "topology.fraction_fast",
    "topology.trace_path", "objective.dtype", "objective.device", "objective.l2",
    "objective.hidden", "objective.channels", "objective.dim", "dataset.path", "dataset.seed",
    "dataset.split", "engine.time_scale", "engine.ordered", "engine.device", "budget.gradients",
    "budget.time", "batch_size", "target", "eval_every", "seed", "lr_scale", "tracking.uri",
    "progress",
)  # fmt: skip
#: the first key of a schema group's option is its name, not a key to set
_NOT_KEYS = ("name",)

OPTIONS_BEGIN = "<!-- options:begin (generated by python -m pipeline.compose.options --write) -->"
OPTIONS_END = "<!-- options:end -->"
RPC_BEGIN = "<!-- rpc-keys:begin (generated by python -m pipeline.compose.options --write) -->"
RPC_END = "<!-- rpc-keys:end -->"
#: the groups in the order the docs present them (the choices a user makes first, first)
DOC_GROUPS = ("optimizer", "topology", "objective", "dataset", "engine", "tracking", "experiment")
assert sorted(DOC_GROUPS) == sorted(GROUPS)
HELP_GROUPS = "== Config groups: group=option =="
HELP_KEYS = "== Main keys: key=value =="
HELP_AFTER = "A typo, a wrong value or a bad input file is one line on stderr and exit code 2."


def options(group: str) -> list[str]:
    """A group's options: its conf/<group>/*.yaml, in the schemas' order, then the others."""
    names = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
    order = list(SCHEMAS.get(group, {}))
    return [n for n in order if n in names] + [n for n in names if n not in order]


def _walk(schema: type, prefix: str) -> list[tuple[str, object]]:
    out = []
    for f in fields(schema):
        if f.name in _NOT_KEYS and prefix:
            continue
        sub = f.default_factory if isinstance(f.default_factory, type) else None
        if sub is not None and is_dataclass(sub):
            out += _walk(sub, f"{prefix}{f.name}.")
            continue
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = MISSING
        out.append((f"{prefix}{f.name}", default))
    return out


def plugin_options(group: str = "optimizer") -> dict[str, dict[str, object]]:
    """The options of conf/<group>/ given by ``_target_`` (rules written against pipeline.api,
    checked against their class's signature): option -> {key: default} from the YAML."""
    from omegaconf import OmegaConf

    out = {}
    for path in sorted((CONF_DIR / group).glob("*.yaml")):
        node = OmegaConf.to_container(OmegaConf.load(path))
        if "_target_" in node:
            out[path.stem] = {k: v for k, v in node.items() if k not in ("_target_", "name")}
    return out


def keys() -> dict[str, dict[str, object]]:
    """Every settable key -> {option (or "" for a group without options): default}."""
    out: dict[str, dict[str, object]] = {}
    for group, opts in SCHEMAS.items():
        for option, schema in opts.items():
            for key, default in _walk(schema, f"{group}."):
                out.setdefault(key, {})[option] = default
    for option, own in plugin_options().items():
        for key, default in own.items():
            out.setdefault(f"optimizer.{key}", {})[option] = default
    for key, default in _walk(Config, ""):
        if key.split(".")[0] not in SCHEMAS:
            out.setdefault(key, {})[""] = default
    return out


def _code(items) -> str:
    return " ".join(f"`{i}`" for i in items)


def _fmt(v: object) -> str:
    if v is MISSING or v == "???":  # OmegaConf's MISSING
        return "(required)"
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float) and v == int(v) and abs(v) < 1e15:
        return f"{v:g}"
    if isinstance(v, int) and abs(v) >= 10_000:
        return f"{v:,}"
    return str(v) if v not in ({}, []) else "{}" if v == {} else "[]"


def group_table() -> str:
    """Group | options | keys (with the options that have them, where not all do)."""
    all_keys = keys()
    rows = ["| group | options | keys |", "| --- | --- | --- |"]
    for group in DOC_GROUPS:
        opts = options(group)
        own = [k for k in all_keys if k.startswith(group + ".")]
        parts = []
        for k in own:
            having = [o for o in all_keys[k] if o]
            which = "" if not having or set(having) >= set(SCHEMAS.get(group, {})) else having
            parts.append(f"`{k}`" + (f" ({', '.join(which)})" if which else ""))
        rows.append(f"| `{group}` | {_code(opts)} | {', '.join(parts) or 'presets'} |")
    top = [k for k in all_keys if "." not in k or k.split(".")[0] == "budget"]
    rows.append(f"| (top level) | | {', '.join(f'`{k}`' for k in top)} |")
    return "\n".join(rows)


def rpc_table() -> str:
    """engine=rpc's keys: default and meaning."""
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]
    for key, default in _walk(SCHEMAS["engine"]["rpc"], "engine."):
        meaning = KEY_HELP[key].removeprefix("rpc: ").removeprefix("rpc, ")
        rows.append(f"| `{key}` | {_fmt(default)} | {_cell(meaning)} |")
    return "\n".join(rows)


def _valid(key: str) -> str:
    """The valid range from the schema field's metadata (``num``), as text."""
    group, _, leaf = key.rpartition(".")
    schemas = list(SCHEMAS.get(group, {}).values()) or [Config]
    for schema in schemas:
        for f in fields(schema) if group in SCHEMAS else []:
            if f.name == leaf and "range" in f.metadata:
                return _range(f.metadata)
    node = Config
    for part in key.split(".")[:-1] if group not in SCHEMAS else []:
        node = next(f.default_factory for f in fields(node) if f.name == part)
    for f in fields(node) if group not in SCHEMAS else []:
        if f.name == leaf and "range" in f.metadata:
            return _range(f.metadata)
    return ""


def _range(meta: dict) -> str:
    low, high, gt, lt = meta["range"]
    bounds = ((">=", low), (">", gt), ("<=", high), ("<", lt))
    text = ", ".join(f"{op} {_fmt(_num(b))}" for op, b in bounds if b is not None) or "finite"
    return text + (", or null" if meta["nullable"] else "")


def _num(b: float) -> float | int:
    return int(b) if float(b).is_integer() else b


def _cell(text: str) -> str:
    """Table cells keep their pipes as text."""
    return text.replace("|", "\\|")


def _defaults(by: dict[str, object]) -> str:
    """The default most options share, then the exceptions: ``40; null (trace)``."""
    texts = {o: _fmt(v) for o, v in by.items()}
    common = max(sorted(set(texts.values())), key=list(texts.values()).count)
    others: dict[str, list[str]] = {}
    for o, v in texts.items():
        if v != common:
            others.setdefault(v, []).append(o)
    return "; ".join([common] + [f"{v} ({', '.join(os)})" for v, os in others.items()])


def reference() -> str:
    """docs/options.md: every key with the options that have it, its default and its range."""
    all_keys = keys()
    out = [
        "# Every option and key",
        "",
        "Generated from the schemas (`pipeline/compose/schema.py`), `conf/` and the meanings in "
        "`pipeline/compose/options.py` by `python -m pipeline.compose.options --write`; a test "
        "fails when this page is out of date. A value outside its range is one line on stderr "
        "and exit code 2 before anything runs.",
        "",
        f"The MLflow store: {STORE_LOCATION}.",
    ]
    for group in (*DOC_GROUPS, ""):
        own = [k for k in all_keys if (k.split(".")[0] == group if group else
                                       "." not in k or k.split(".")[0] == "budget")]  # fmt: skip
        out += ["", f"## `{group}`" if group else "## Top-level keys", ""]
        if group:
            out += [f"Options: {_code(options(group))}.", ""]
        if not own:
            out.append("Presets: each sets a whole experiment; `~experiment` for none.")
            continue
        out += ["| key | options | default | valid | meaning |", "| --- | --- | --- | --- | --- |"]
        for k in own:
            by = all_keys[k]
            which = [o for o in by if o]
            which_text = "all" if not which or set(which) >= set(SCHEMAS.get(group, {})) else (
                ", ".join(which))  # fmt: skip
            row = [f"`{k}`", which_text, _defaults(by), _valid(k), _cell(KEY_HELP[k])]
            out.append("| " + " | ".join(row) + " |")
    return "\n".join(out) + "\n"


def help_lines() -> list[str]:
    """The group and main-key lines of --help (conf/config.yaml's hydra.help.template)."""
    out = [HELP_GROUPS]
    for group in DOC_GROUPS:
        out.append(f"{group:<12} {' '.join(options(group))}")
    out += ["", HELP_KEYS]
    out += [f"{k:<24} {KEY_HELP[k]}" for k in MAIN_KEYS]
    out += ["", f"The MLflow store: {STORE_LOCATION}."]
    return out


def _replace(text: str, begin: str, end: str, body: str, where: str) -> str:
    i, j = text.find(begin), text.find(end)
    if i < 0 or j < i:
        raise SystemExit(f"error: {where} has no block {begin!r} ... {end!r}")
    return text[:i] + begin + "\n" + body + "\n" + text[j:]


def readme_text(text: str) -> str:
    text = _replace(text, OPTIONS_BEGIN, OPTIONS_END, group_table(), "README.md")
    return _replace(text, RPC_BEGIN, RPC_END, rpc_table(), "README.md")


def config_text(text: str) -> str:
    """conf/config.yaml with the help template's group and key lines regenerated."""
    lines = text.split("\n")
    start = next(i for i, ln in enumerate(lines) if ln.strip() == HELP_GROUPS)
    stop = next(i for i, ln in enumerate(lines) if ln.strip() == HELP_AFTER)
    indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
    # Hydra's help template is a string.Template: a literal $ is written $$
    body = [indent + ln.replace("$", "$$") if ln else "" for ln in help_lines()]
    return "\n".join(lines[:start] + body + [""] + lines[stop:])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m pipeline.compose.options", description=__doc__)
    p.add_argument(
        "--write", action="store_true", help="rewrite README.md, docs/options.md, conf/config.yaml"
    )
    p.add_argument("--check", action="store_true", help="exit 1 if either is out of date")
    a = p.parse_args(argv)
    files = {
        PROJECT_ROOT / "README.md": readme_text,
        CONF_DIR / "config.yaml": config_text,
        PROJECT_ROOT / "docs" / "options.md": lambda _old: reference(),
    }
    stale = []
    for path, render in files.items():
        old = path.read_text() if path.exists() else ""
        new = render(old)
        if new != old:
            stale.append(path.name)
            if a.write:
                path.write_text(new)
    if a.check and stale:
        print(f"out of date: {', '.join(stale)} (python -m pipeline.compose.options --write)")
        sys.exit(1)
    if not a.check:
        print(("rewrote " + ", ".join(stale)) if a.write and stale else "up to date")
    if not (a.write or a.check):
        print(group_table())


if __name__ == "__main__":
    main()
