"""Bad input, class by class, is one line and exit 2 before any work: every numeric key of every
schema, every file input, degenerate model shapes, and runs that cannot fit in memory."""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import fields, is_dataclass
from pathlib import Path

import numpy as np
import pytest

from pipeline import ConfigError
from pipeline.compose.build import build_experiment
from pipeline.compose.datafiles import existing_data
from pipeline.compose.inputs import inspect_npz
from pipeline.compose.preflight import preflight
from pipeline.compose.resources import GiB, check, estimate, model_size
from pipeline.compose.schema import SCHEMAS, Config
from pipeline.compose.validate import numeric_fields
from pipeline.core.trace import JOB_COLUMNS
from pipeline.runner import run_experiment
from tests.conftest import compose_cfg, run_cli

SMALL = ("~experiment", "optimizer=asgd", "optimizer.lr=0.1", "topology.n_workers=4",
         "batch_size=8", "budget.gradients=40", "tracking=none")  # fmt: skip
RESOURCE_REFUSAL = "this run needs about "


def _args(*overrides: str) -> list[str]:
    """Overrides as a user types them, later ones replacing earlier ones for the same key."""
    out: dict[str, str] = {}
    for o in overrides:
        out[o.split("=", 1)[0]] = o
    return list(out.values())


def _assert_one_line(e: ConfigError, *parts: str) -> str:
    text = str(e)
    assert "\n" not in text and text.strip() == text
    for p in parts:
        assert p in text, (p, text)
    return text


# ------------------------------------------------------------------------ numeric keys
@pytest.fixture(scope="module")
def trace_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("trace")
    rows = ["0,0,0,0.0,1.0,arrived,0.1", "1,0,0,0.0,1.5,arrived,0.1",
            "0,1,1,1.0,2.0,arrived,0.1", "1,1,2,1.5,3.0,arrived,0.1"]  # fmt: skip
    (d / "jobs.csv").write_text(",".join(JOB_COLUMNS) + "\n" + "\n".join(rows) + "\n")
    return d


def _extras(group: str, option: str | None, trace: Path) -> list[str]:
    """What a group option needs to compose into a valid small run."""
    return {
        ("objective", "noisy_quadratic"): ["dataset=none"],
        ("objective", "logreg"): ["dataset=wine"],
        ("objective", "mlp"): ["dataset=wine"],
        ("objective", "cnn"): ["dataset=digits", "objective.channels=2"],
        ("objective", "torch_module"): ["dataset=wine"],
        ("topology", "native"): ["engine=rpc"],
        ("topology", "trace"): [f"topology.trace_path={trace}", "topology.n_workers=null"],
        ("topology", "custom"): ["topology.times=[1.0,2.0,3.0,4.0]"],
    }.get((group, option), [])


def _is_int(group: str, option: str | None, key: str) -> bool:
    schema: type = SCHEMAS[group][option] if option else Config
    parts = key.split(".")[1:] if option else key.split(".")
    for part in parts:
        f = {f.name: f for f in fields(schema)}[part]
        if isinstance(f.default_factory, type) and is_dataclass(f.default_factory):
            schema = f.default_factory
            continue
        return str(f.type).startswith("int")
    raise AssertionError(key)


def _in_range(v: float | None, meta: dict) -> bool:
    if v is None:
        return meta["nullable"]
    if not math.isfinite(v):
        return False
    low, high, gt, lt = meta["range"]
    return ((low is None or v >= low) and (high is None or v <= high)
            and (gt is None or v > gt) and (lt is None or v < lt))  # fmt: skip


def _cases(everything: bool) -> list:
    """(group, option, key, text, value, metadata); unless ``everything``, a field inherited by
    several options (optimizer.lr, topology.jitter, ...) is tried on its first option only."""
    out, seen = [], set()
    for group, option, key, meta in numeric_fields():
        ident = (key, meta["range"], meta["nullable"])
        if not everything and ident in seen:
            continue
        seen.add(ident)
        big = "1" + "0" * 30 if _is_int(group, option, key) else "1e30"
        values = [("nan", math.nan), ("inf", math.inf), ("-inf", -math.inf), ("0", 0.0),
                  ("-1", -1.0), (big, 1e30)]  # fmt: skip
        if not meta["nullable"]:
            values.append(("null", None))
        out += [(group, option, key, text, v, meta) for text, v in values]
    return out


def _case_id(case) -> str:
    group, option, key, text, _, _ = case
    return f"{key}={text}" + (f"[{group}={option}]" if option else "")


def _numeric_args(group, option, key, text, trace) -> list[str]:
    choice = [f"{group}={option}"] if option else []
    return _args(*SMALL, *choice, *_extras(group, option, trace), f"{key}={text}")


def _check_numeric(group, option, key, text, value, meta, trace):
    args = _numeric_args(group, option, key, text, trace)
    if not _in_range(value, meta):
        with pytest.raises(ConfigError) as info:
            preflight(args)
        _assert_one_line(info.value, key)
        return
    try:
        preflight(args)
    except ConfigError as e:  # a value in range may still not fit this run: it says which key
        message = _assert_one_line(e)
        assert key in message or message.startswith(RESOURCE_REFUSAL), message


NUMERIC = _cases(everything=False)


def test_every_numeric_key_is_tried():
    keys = {(c[0], c[1], c[2]) for c in _cases(everything=True)}
    assert len(keys) == len(numeric_fields()) > 60
    tried = {c[2] for c in NUMERIC}
    assert tried == {k for _, _, k, _ in numeric_fields()}


def _params(cases: list) -> list:
    return [pytest.param(*c, id=_case_id(c)) for c in cases]


@pytest.mark.parametrize("group,option,key,text,value,meta", _params(NUMERIC))
def test_numeric_value_is_refused_naming_the_key_or_accepted(
    group, option, key, text, value, meta, trace_dir
):
    _check_numeric(group, option, key, text, value, meta, trace_dir)


@pytest.mark.slow
@pytest.mark.parametrize(
    "group,option,key,text,value,meta",
    _params([c for c in _cases(everything=True) if c not in NUMERIC]),
)
def test_numeric_value_on_every_option(group, option, key, text, value, meta, trace_dir):
    _check_numeric(group, option, key, text, value, meta, trace_dir)


@pytest.mark.slow
@pytest.mark.parametrize(
    "group,option,key,text,value,meta",
    _params([c for c in _cases(everything=True) if _in_range(c[4], c[5])]),
)
def test_an_accepted_value_builds_and_runs(group, option, key, text, value, meta, trace_dir,
                                           tmp_path):  # fmt: skip
    """What preflight accepts never ends in a traceback: it builds, and (event engine) runs to a
    status, or is refused as one line."""
    args = _numeric_args(group, option, key, text, trace_dir)
    try:
        preflight(args)
    except ConfigError:
        return  # refused up front, checked by the tests above
    cfg = compose_cfg(*args)
    if cfg.engine.name != "sim":
        assert build_experiment(cfg).n_workers >= 1
        return
    summary, _ = run_experiment(cfg, tmp_path)
    assert summary["status"] in ("finished", "diverged")


def test_type_errors_name_the_key():
    for args, message in (
        (["seed=nan"], "seed must be an integer, got nan"),
        (["topology.n_workers=1.5"], "topology.n_workers must be an integer, got 1.5"),
        (["optimizer.lr=fast"], "optimizer.lr must be a number, got fast"),
        (["seed=null"], "seed must be set, got null"),
        (["tracking.enabled=maybe"], "tracking.enabled must be true or false, got maybe"),
        (
            ["objective=mlp", "objective.hidden=[8,nan]"],
            "objective.hidden must be a list of integers, got [8,nan]",
        ),
        (
            ["topology=custom", "topology.times=[1,x,2,3]"],
            "topology.times must be a list of numbers, got [1,x,2,3]",
        ),
    ):
        with pytest.raises(ConfigError) as info:
            preflight(args)
        assert _assert_one_line(info.value) == message


# -------------------------------------------------------------------------- data files
def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


RNG = np.random.default_rng(0)
X = RNG.standard_normal((20, 3))
Y_REAL = RNG.standard_normal(20)
Y_LABELS = np.arange(20) % 3


def _with(a: np.ndarray, index, value) -> np.ndarray:
    a = a.copy()
    a[index] = value
    return a


DATA_FILES = {  # id -> (objective, writer(dir) -> path, what the message says)
    "missing": ("quadratic", lambda d: d / "nope.npz", "data file not found"),
    "a directory": ("quadratic", lambda d: d, "is a directory, not a data file"),
    "empty": ("quadratic", lambda d: _touch(d / "e.npz", b""), "is empty"),
    "text, not a zip": (
        "quadratic", lambda d: _touch(d / "t.npz", b"X,y\n1,2\n"),
        "is not an .npz file (not a zip archive)",
    ),
    "a zip that is not an npz": (
        "quadratic", lambda d: _zip(d / "z.npz", {"notes.txt": b"hello"}),
        "is a zip archive but not an .npz (it holds notes.txt)",
    ),
    "a broken array inside": (
        "quadratic", lambda d: _zip(d / "b.npz", {"X.npy": b"garbage", "y.npy": b"garbage"}),
        "X.npy is not a numpy array",
    ),
    "a truncated array": (
        "quadratic", lambda d: _truncated(_npz(d / "a.npz", X=X, y=Y_REAL)), "cannot be read",
    ),
    "no X and y": ("quadratic", lambda d: _npz(d / "a.npz", A=X), "has no arrays X and y"),
    "no y": ("quadratic", lambda d: _npz(d / "a.npz", X=X), "has no array y (it holds X)"),
    "X 1-d": ("quadratic", lambda d: _npz(d / "a.npz", X=Y_REAL, y=Y_REAL),
              "X must be 2-d (rows x features), got shape (20,)"),
    "y 2-d": ("quadratic", lambda d: _npz(d / "a.npz", X=X, y=X), "y must be 1-d"),
    "y length": ("quadratic", lambda d: _npz(d / "a.npz", X=X, y=Y_REAL[:19]),
                 "y has 19 entries but X has 20 rows"),
    "X_test columns": (
        "quadratic",
        lambda d: _npz(d / "a.npz", X=X, y=Y_REAL, X_test=X[:5, :2], y_test=Y_REAL[:5]),
        "X_test has 2 columns but X has 3",
    ),
    "y_test length": (
        "quadratic", lambda d: _npz(d / "a.npz", X=X, y=Y_REAL, X_test=X[:5], y_test=Y_REAL[:4]),
        "y_test has 4 entries but X_test has 5 rows",
    ),
    "X_test without y_test": (
        "quadratic", lambda d: _npz(d / "a.npz", X=X, y=Y_REAL, X_test=X[:5]),
        "has only one of X_test and y_test",
    ),
    "no rows": ("quadratic", lambda d: _npz(d / "a.npz", X=X[:0], y=Y_REAL[:0]), "X has no rows"),
    "no feature columns": ("quadratic", lambda d: _npz(d / "a.npz", X=X[:, :0], y=Y_REAL),
                           "X has no feature columns"),
    "text values": ("quadratic", lambda d: _npz(d / "a.npz", X=X, y=Y_REAL.astype(str)),
                    "array y is not numeric"),
    "complex values": ("quadratic", lambda d: _npz(d / "a.npz", X=X + 1j, y=Y_REAL),
                       "array X is not numeric"),
    "NaN in X": ("quadratic", lambda d: _npz(d / "a.npz", X=_with(X, (3, 1), np.nan), y=Y_REAL),
                 "X holds 1 non-finite value (NaN or Inf)"),
    "Inf in y": ("quadratic", lambda d: _npz(d / "a.npz", X=X, y=_with(Y_REAL, 4, -np.inf)),
                 "y holds 1 non-finite value (NaN or Inf)"),
    "NaN in X_test": (
        "logreg", lambda d: _npz(d / "a.npz", X=X, y=Y_LABELS, X_test=_with(X[:6], 0, np.nan),
                                 y_test=Y_LABELS[:6]),
        "X_test holds 3 non-finite values",
    ),
    "labels where a regression target is needed": (
        "quadratic", lambda d: _npz(d / "a.npz", X=X, y=Y_LABELS),
        "y holds integer class labels but objective=quadratic needs real-valued targets",
    ),
    "regression targets for a classifier": (
        "mlp", lambda d: _npz(d / "a.npz", X=X, y=Y_REAL),
        "objective mlp is a classifier but dataset targets y are real-valued",
    ),
    "one class only": ("logreg", lambda d: _npz(d / "a.npz", X=X, y=np.zeros(20, np.int64)),
                       "y has a single class (0); a classifier trained on it is constant"),
    "negative labels": ("logreg", lambda d: _npz(d / "a.npz", X=X, y=Y_LABELS - 1),
                        "y holds negative labels (-1)"),
    "test labels unseen in training": (
        "logreg",
        lambda d: _npz(d / "a.npz", X=X, y=Y_LABELS, X_test=X[:2], y_test=np.array([0, 7])),
        "y_test holds labels outside y's 0..2 (0..7)",
    ),
    "tabular data for the CNN": ("cnn", lambda d: _npz(d / "a.npz", X=X, y=Y_LABELS),
                                 "objective cnn needs image-shaped data"),
    "image too small for the CNN's pooling": (
        "cnn", lambda d: _npz(d / "a.npz", X=X, y=Y_LABELS, image_shape=np.array([3, 1, 1])),
        "images of 1 x 1 are too small for the CNN's 2 x 2 pooling",
    ),
    "image shape not matching the columns": (
        "cnn", lambda d: _npz(d / "a.npz", X=X, y=Y_LABELS, image_shape=np.array([1, 2, 2])),
        "image_shape 1 x 2 x 2 = 4 values but X has 3 columns",
    ),
}  # fmt: skip


def _truncated(path: Path) -> Path:
    """The same arrays with the end of every array's data cut off (headers intact)."""
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    return _zip(path, {name: data[: len(data) - 40] for name, data in members.items()})


def _touch(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _data_args(objective: str, path: Path) -> list[str]:
    return _args(*SMALL, f"objective={objective}", "dataset=small_lstsq", f"dataset.path={path}",
                 "objective.channels=2" if objective == "cnn" else "seed=0")  # fmt: skip


@pytest.mark.parametrize("case", sorted(DATA_FILES))
def test_bad_data_file_is_one_line_naming_the_file(case, tmp_path):
    objective, write, message = DATA_FILES[case]
    path = write(tmp_path)
    args = _data_args(objective, path)
    with pytest.raises(ConfigError) as info:
        preflight(args)
    _assert_one_line(info.value, f"{path} (dataset.path)", message)
    with pytest.raises(ConfigError) as info:  # the same check when a run builds its parts
        build_experiment(compose_cfg(*args))
    _assert_one_line(info.value, f"{path} (dataset.path)", message)


def test_a_good_small_file_passes_every_check(tmp_path):
    path = _npz(tmp_path / "good.npz", X=X, y=Y_LABELS, X_test=X[:5], y_test=Y_LABELS[:5])
    assert inspect_npz(path).rows == 20
    preflight(_data_args("logreg", path))
    summary, _ = run_experiment(compose_cfg(*_data_args("logreg", path)), tmp_path / "run")
    assert summary["status"] == "finished" and summary["final_test_accuracy"] is not None


def test_cli_bad_data_file_exits_2_before_any_run_directory(tmp_path):
    path = _touch(tmp_path / "data.npz", b"not a zip")
    out = run_cli(*_data_args("quadratic", path), f"hydra.run.dir={tmp_path}/run")
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"error: {path} (dataset.path) is not an .npz file (not a zip archive)"
    )
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------- traces
HEADER = ",".join(JOB_COLUMNS)
TRACES = {  # id -> (jobs.csv text or None for no file, message)
    "missing": (None, "no jobs.csv at"),
    "empty": ("", "is empty"),
    "header only": (HEADER + "\n", "holds no jobs"),
    "wrong columns": ("worker,start,end\n0,0,1\n", "is not a jobs.csv: columns worker,start,end"),
    "too few fields": (HEADER + "\n0,0,0,0.0,1.0\n", "line 2: expected 7 fields"),
    "non-numeric time": (HEADER + "\n0,0,0,soon,1.0,arrived,0.1\n",
                         "line 2: start is not a number: 'soon'"),
    "negative time": (HEADER + "\n0,0,0,-1.0,1.0,arrived,0.1\n", "line 2: start is negative"),
    "NaN time": (HEADER + "\n0,0,0,0.0,nan,arrived,0.1\n", "line 2: end is not finite"),
    "negative compute time": (HEADER + "\n0,0,0,0.0,1.0,arrived,-0.1\n",
                              "line 2: compute_s is negative"),
    "end before start": (HEADER + "\n0,0,0,0.0,1.0,arrived,0.1\n0,1,1,2.0,1.5,arrived,0.1\n",
                         "line 3: end 1.5 is before start 2.0"),
    "fractional worker": (HEADER + "\n0.5,0,0,0.0,1.0,arrived,0.1\n",
                          "line 2: worker is not an integer"),
    "unknown status": (HEADER + "\n0,0,0,0.0,1.0,done,0.1\n", "line 2: status 'done' is not one"),
    "arrived without an end": (HEADER + "\n0,0,0,0.0,,arrived,0.1\n",
                               "line 2: an arrived job needs its end time"),
    "jobs not numbered": (HEADER + "\n0,0,0,0.0,1.0,arrived,0.1\n0,2,1,1.0,2.0,arrived,0.1\n",
                          "worker 0's jobs are not numbered 0, 1, 2"),
    "a worker without jobs": (HEADER + "\n0,0,0,0.0,1.0,arrived,0.1\n2,0,0,0.0,1.5,arrived,0.1\n",
                              "worker 1 has no jobs, but the trace implies n_workers=3 (workers "
                              "0..2); a replay would leave it idle"),
    "workers without jobs": (HEADER + "\n3,0,0,0.0,1.0,unfinished,\n",
                             "workers 0, 1, 2 have no jobs, but the trace implies n_workers=4"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(TRACES))
def test_bad_trace_is_one_line_naming_the_file(case, tmp_path):
    text, message = TRACES[case]
    jobs = tmp_path / "jobs.csv"
    if text is not None:
        jobs.write_text(text)
    args = _args(*SMALL, "dataset=small_lstsq", "topology=trace", f"topology.trace_path={tmp_path}",
                 "topology.n_workers=null")  # fmt: skip
    with pytest.raises(ConfigError) as info:
        preflight(args)
    _assert_one_line(info.value, f"{jobs} (topology.trace_path)", message)
    with pytest.raises(ConfigError) as info:
        build_experiment(compose_cfg(*args))
    _assert_one_line(info.value, f"{jobs} (topology.trace_path)", message)


TRACE_ROWS = ["0,0,0,0.0,1.0,arrived,0.1", "1,0,0,0.0,1.5,arrived,0.1",
              "2,0,0,0.0,2.0,arrived,0.1", "0,1,1,1.0,2.0,arrived,0.1"]  # fmt: skip


def _trace_args(trace: Path, *extra: str) -> list[str]:
    return _args(*SMALL, "dataset=small_lstsq", "topology=trace", f"topology.trace_path={trace}",
                 "topology.n_workers=null", *extra)  # fmt: skip


def test_a_trace_missing_its_last_worker_is_told_by_its_summary(tmp_path):
    """Every row of the highest worker removed: jobs.csv alone looks like a smaller run, but the
    run's summary.json beside it says how many workers it had."""
    rows = [r for r in TRACE_ROWS if not r.startswith("2,")]
    (tmp_path / "jobs.csv").write_text(HEADER + "\n" + "\n".join(rows) + "\n")
    preflight(_trace_args(tmp_path))  # 2 workers, both with jobs: nothing says otherwise
    (tmp_path / "summary.json").write_text(json.dumps({"n_workers": 3, "engine": "rpc"}))
    with pytest.raises(ConfigError) as info:
        preflight(_trace_args(tmp_path))
    _assert_one_line(info.value, f"{tmp_path / 'jobs.csv'} (topology.trace_path): worker 2 has no "
                     "jobs, but the trace implies n_workers=3 (workers 0..2, as its summary.json "
                     "says)")  # fmt: skip
    (tmp_path / "jobs.csv").write_text(HEADER + "\n" + "\n".join(TRACE_ROWS) + "\n")
    preflight(_trace_args(tmp_path))  # complete again
    (tmp_path / "summary.json").write_text("{not json")  # a summary that says nothing: ignored
    preflight(_trace_args(tmp_path))


def test_cli_trace_with_a_worker_without_jobs_exits_2_before_anything(tmp_path):
    trace = tmp_path / "trace"
    trace.mkdir()
    rows = [r for r in TRACE_ROWS if not r.startswith("1,")]
    (trace / "jobs.csv").write_text(HEADER + "\n" + "\n".join(rows) + "\n")
    db = tmp_path / "mlflow.db"
    args = _trace_args(trace, "tracking=mlflow", f"tracking.uri=sqlite:///{db}")
    out = run_cli(*args, f"hydra.run.dir={tmp_path}/run")
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip() == (
        f"error: {trace / 'jobs.csv'} (topology.trace_path): worker 1 has no jobs, but the trace "
        "implies n_workers=3 (workers 0..2); a replay would leave it idle: give the complete "
        "jobs.csv of an engine=rpc run"
    )
    assert not (tmp_path / "run").exists() and not db.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trace"]


def test_binary_trace_is_refused(tmp_path):
    (tmp_path / "jobs.csv").write_bytes(b"\xff\xfe\x00\x01" * 8)
    with pytest.raises(ConfigError, match="is not a text file|is not a jobs.csv"):
        preflight(_args(*SMALL, "dataset=small_lstsq", "topology=trace",
                        f"topology.trace_path={tmp_path}", "topology.n_workers=null"))  # fmt: skip


# ---------------------------------------------------------- degenerate shapes and budgets
DEGENERATE = [
    (["objective=mlp", "dataset=wine", "objective.hidden=[8,0]"],
     "objective.hidden must be a list of positive layer widths, got [8, 0]"),
    (["optimizer=minibatch", "topology.n_workers=50"],
     "budget.gradients=40 ends the run before its first update: minibatch needs 50 gradients "
     "per update (topology.n_workers)"),
    (["optimizer=rennala", "optimizer.batch=41"],
     "rennala needs 41 gradients per update (optimizer.batch)"),
    (["batch_size=65"], "batch_size=65 is larger than the dataset (64 rows per worker)"),
    (["topology=linear", "topology.tau=2", "budget.time=1.5"],
     "budget.time=1.5 ends the run before its first update: the fastest worker's job takes 2"),
    (["optimizer=minibatch", "topology=linear", "budget.gradients=null", "budget.time=3"],
     "budget.time=3 ends the run before its first update: a minibatch round (the slowest "
     "worker) takes 4"),
    (["dataset.params.n_rows=0"], "dataset.params.n_rows must be >= 1, got 0"),
    (["dataset.params.dim=nan"], "dataset.params.dim must be finite, got nan"),
    (["dataset.params.noise=-1"], "dataset.params.noise must be >= 0, got -1"),
    (["+dataset.params.rows=10"], "unknown key dataset.params.rows: dataset small_lstsq takes "
     "n_rows, dim, noise"),
    (["objective=logreg", "dataset=synthetic_classification", "+dataset.params.classes=1"],
     "dataset.params.classes must be >= 2, got 1"),
]  # fmt: skip


@pytest.mark.parametrize("overrides,message", DEGENERATE, ids=lambda v: str(v))
def test_degenerate_runs_are_refused(overrides, message):
    with pytest.raises(ConfigError) as info:
        preflight(_args(*SMALL, "dataset=small_lstsq", *overrides))
    _assert_one_line(info.value, message)


def test_rennala_batch_resolved_from_sigma2_over_eps_is_checked_when_built():
    args = _args(*SMALL, "dataset=none", "objective=noisy_quadratic", "optimizer=rennala",
                 "objective.sigma=10", "target=0.01")  # fmt: skip
    cfg = compose_cfg(*args)
    with pytest.raises(ConfigError, match="rennala needs 100000 gradients per update"):
        build_experiment(cfg)


def test_a_changed_seed_or_size_builds_its_own_data_file():
    base = compose_cfg(*SMALL, "dataset=small_lstsq")
    preflight([*SMALL, "dataset=small_lstsq"])
    preflight([*SMALL, "dataset=small_lstsq", "dataset.params.n_rows=80"])
    other = compose_cfg(*SMALL, "dataset=small_lstsq", "dataset.params.n_rows=80")
    assert existing_data(base) != existing_data(other)
    assert inspect_npz(existing_data(base)).rows == 64
    assert inspect_npz(existing_data(other)).rows == 80


# ------------------------------------------------------------------------------ memory
def test_a_million_workers_on_the_paper_problem_is_refused_with_the_estimate():
    with pytest.raises(ConfigError) as info:
        preflight(["topology.n_workers=1000000"])
    text = _assert_one_line(info.value, "this run needs about ", " GiB available (")
    assert "iterates" in text and "sampler x 1000000 workers" in text
    # the breakdown: a permutation of all 10,000 rows per worker, 1,000,001 iterates of 400
    est = estimate(compose_cfg("topology.n_workers=1000000"), 10**6, None)
    assert est.parts["sampler x 1000000 workers"] == 10**6 * 10_000 * 8
    assert est.parts["iterates"] == (10**6 + 1 + 4) * 400 * 8
    assert est.total > 80 * GiB


def test_the_paper_problem_fits_and_the_limit_is_the_comparison():
    assert preflight([]) == 1
    cfg = compose_cfg()
    shape = inspect_npz(existing_data(cfg))
    est = estimate(cfg, 40, shape)
    assert 32 * 10**6 < est.total < 0.5 * GiB  # 10,000 x 400 doubles and a few copies
    check(cfg, 40, shape, available=est.total)
    with pytest.raises(ConfigError, match=r"this machine has .* available \(given\)$"):
        check(cfg, 40, shape, available=est.total - 1)


def test_engine_rpc_counts_a_process_per_worker():
    cfg = compose_cfg("engine=rpc", "topology.n_workers=4")
    est = estimate(cfg, 4, None)
    assert est.parts["process x 4 workers"] >= 4 * 350 * 2**20
    with pytest.raises(ConfigError, match="process x 2000 workers"):
        preflight(["engine=rpc", "topology.n_workers=2000"])


def test_a_default_data_file_too_big_to_build_is_refused_before_it_is_built():
    args = ["dataset.params.n_rows=1000000000"]
    with pytest.raises(ConfigError, match=r"^this run needs about [\d,]+ GiB .*\bdata [\d,]+ GiB"):
        preflight(args)
    assert existing_data(compose_cfg(*args)) is None  # nothing was built


@pytest.mark.parametrize(
    "objective,dataset,extra",
    [
        ("logreg", "wine", []),
        ("mlp", "digits", ["objective.hidden=[16,8]"]),
        ("cnn", "digits", ["objective.channels=3"]),
    ],  # fmt: skip
)
def test_parameters_are_counted_without_building_the_model(objective, dataset, extra):
    cfg = compose_cfg(*SMALL, f"objective={objective}", f"dataset={dataset}", *extra)
    preflight([*SMALL, f"objective={objective}", f"dataset={dataset}", *extra])
    from pipeline.compose.resources import data_size

    shape = inspect_npz(existing_data(cfg))
    d, per_row = model_size(cfg, data_size(cfg, shape))
    assert d == build_experiment(cfg).objective.dim
    assert per_row > 0


def test_the_estimate_is_recorded_nowhere_but_refuses_early(tmp_path):
    """A refused run writes nothing: no run directory, no data file."""
    out = run_cli("topology.n_workers=1000000", f"hydra.run.dir={tmp_path}/run", "tracking=none")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert out.stderr.startswith("error: this run needs about ")
    assert not (tmp_path / "run").exists()
    json.dumps(out.stderr)  # plain text


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["objective.device=gpu"], "objective.device must be cpu, cuda, cuda:N or auto, got 'gpu'"),
        (["objective.device=cuda:99"], r"CUDA is not available here|has \d+ CUDA device"),
        (["engine=rpc", "engine.device=cuda:99"], r"\(engine.device\)|engine.device=cuda:99"),
    ],
    ids=str,
)
def test_a_device_this_machine_does_not_have_is_refused_up_front(overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        preflight(_args(*SMALL, "dataset=small_lstsq", *overrides))
    _assert_one_line(info.value)
