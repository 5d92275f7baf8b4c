"""Will the run fit in memory? An estimate made before any data is built or loaded.

The estimate adds up what a run holds at its peak, from the composed config and the data file's
headers (or, for a default file not built yet, the builder's parameters), never from the arrays:

- data: the arrays as loaded, a converted copy where the objective's dtype differs, and the
  working set of F* and the theory constants (least squares: two more copies of X);
- evaluation: a full-batch forward and backward pass of a torch model (activations x rows);
- iterates: the event engine keeps up to n_workers + 1 versions of the d parameters pinned;
- samplers: a row sampler keeps a permutation of its shard (8 bytes a row, per worker), a noise
  sampler a block of draws; plus per-worker bookkeeping (random generators, job-time blocks);
- engine=rpc: every worker is its own process (interpreter and torch, about 350 MB) holding its
  own copy of the data and the objective.

d is counted without allocating anything: a torch model is built on the "meta" device. The
estimate is compared with the memory this machine has available now (MemAvailable, or a
cgroup's limit when lower); a run that cannot fit is refused with both numbers.
"""

from __future__ import annotations

import inspect
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import ConfigError
from pipeline.compose.datafiles import data_key, default_data_file
from pipeline.compose.inputs import DataShape, check_image_shape

MiB = 2**20
GiB = 2**30
RPC_WORKER_BYTES = 350 * MiB  # a spawned worker interpreter with torch imported
WORKER_BOOKKEEPING = 6 * 1024  # measured: per-worker generators, sampler and time blocks (sim)
#: sizes of the bundled datasets (rows, features, classes, image shape) before a split
BUNDLED = {
    "digits": (1797, 64, 10, (1, 8, 8)),
    "breast_cancer": (569, 30, 2, None),
    "wine": (178, 13, 3, None),
}


@dataclass
class DataSize:
    rows: int
    features: int
    test_rows: int = 0
    classes: int | None = None
    file_bytes: int = 0  # the arrays as loaded
    x_itemsize: int = 8
    image_shape: tuple | None = None
    path: Path | None = None


@dataclass
class Estimate:
    parts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def add(self, name: str, nbytes: float) -> None:
        if nbytes > 0:
            self.parts[name] = self.parts.get(name, 0) + int(nbytes)

    def describe(self) -> str:
        parts = sorted(self.parts.items(), key=lambda kv: -kv[1])
        return ", ".join(f"{name} {_gib(v)}" for name, v in parts)


def _gib(n: float) -> str:
    g = n / GiB
    if g >= 100:
        return f"{g:,.0f} GiB"
    return f"{g:.3g} GiB" if g >= 0.01 else f"{n / MiB:.3g} MiB"


def _builder_defaults(name: str) -> dict[str, Any]:
    from models import datasets

    if name not in datasets.BUILDERS:
        return {}
    sig = inspect.signature(datasets.BUILDERS[name])
    return {k: p.default for k, p in sig.parameters.items() if p.default is not p.empty}


def data_size(cfg: Any, shape: DataShape | None) -> DataSize | None:
    """Rows, features and classes of the run's data: from the file's headers (and its small
    arrays y and image_shape), or from the builder's parameters when it is not built yet."""
    ds = cfg.dataset
    if ds.name == "none" or cfg.objective.name == "noisy_quadratic":
        return None
    if shape is not None:
        size = DataSize(
            shape.rows, shape.features, shape.test_rows, file_bytes=shape.total_bytes,
            x_itemsize=shape.arrays["X"][1].itemsize, path=shape.path,
        )  # fmt: skip
        try:  # the two small arrays: the number of classes and the image shape
            with np.load(shape.path, allow_pickle=False) as f:
                y = f["y"]
                if y.dtype.kind in "biu" and len(y):
                    size.classes = max(2, int(y.max()) + 1)
                if "image_shape" in f.files:
                    size.image_shape = tuple(np.asarray(f["image_shape"]).ravel().tolist())
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise ConfigError(f"{shape.path} ({data_key(cfg)}) cannot be read: {e}") from None
        return size
    p = {**_builder_defaults(ds.name), **dict(ds.params or {})}
    frac = float(p.get("test_fraction", 0.2))
    if ds.name in BUNDLED:
        rows, features, classes, image = BUNDLED[ds.name]
    elif ds.name == "mnist1d":
        rows, features, classes, image = int(p.get("num_samples", 5000)), 40, 10, None
    else:
        rows, features = int(p.get("n_rows", 0)), int(p.get("dim", 0))
        classes, image = (int(p["classes"]) if "classes" in p else None), None
        if classes is None:
            frac = 0.0  # regression builders have no test split
    test = int(round(rows * frac))
    train = rows - test
    nbytes = (train + test) * (features + 1) * 8
    return DataSize(train, features, test, classes, nbytes, 8, image)


def model_size(cfg: Any, data: DataSize | None) -> tuple[int, int]:
    """(parameters d, activation values per row of a forward pass), allocating nothing."""
    oc = cfg.objective
    if oc.name == "noisy_quadratic":
        return int(oc.dim), 0
    if data is None:
        return 0, 0
    if oc.name == "quadratic":
        return data.features, 0
    if oc.name == "torch_module":
        return _user_module_size(cfg, data)
    module = _meta_module(cfg, data)
    params = sum(p.numel() for p in module.parameters())
    return int(params), _activations_per_row(module, data.features)


def _user_module_size(cfg: Any, data: DataSize) -> tuple[int, int]:
    """objective=torch_module: the user's module built on the meta device (or, where its code
    cannot run there, for real: a constructor error is then the one-line ConfigError);
    activations 0 where a forward pass on the meta device fails."""
    from pipeline.compose.usermodel import build_module

    outputs = (data.classes or 2) if cfg.objective.loss == "cross_entropy" else 1
    try:
        module = build_module(cfg.objective, data.features, outputs, device="meta")
    except ConfigError:
        module = build_module(cfg.objective, data.features, outputs)
    params = sum(p.numel() for p in module.parameters())
    try:
        return int(params), _activations_per_row(module, data.features)
    except Exception:  # the user's forward pass needs real values (or other shapes)
        return int(params), 0


class _Built(Exception):
    def __init__(self, module):
        super().__init__()
        self.module = module


def _meta_module(cfg: Any, data: DataSize):
    """The objective's torch module, built by the objective's own constructor on the meta device
    (no memory), stopped before the data would be copied."""
    import torch

    from models.objectives import CNN, MLP, LogReg, ModuleObjective

    class Capture(ModuleObjective):
        def __init__(self, module, *args, **kwargs):
            raise _Built(module)

    oc = cfg.objective
    cls = {"logreg": LogReg, "mlp": MLP, "cnn": CNN}[oc.name]
    probe = type(f"Meta{cls.__name__}", (cls, Capture), {})
    X = np.empty((0, data.features))
    y = np.array([(data.classes or 2) - 1])
    kwargs: dict[str, Any] = {}
    if oc.name == "mlp":
        kwargs["hidden"] = tuple(oc.hidden)
    if oc.name == "cnn":
        kwargs["channels"] = oc.channels
        where = f"{data.path or default_data_file(cfg.dataset)} ({data_key(cfg)})"
        kwargs["image_shape"] = check_image_shape(data.image_shape, data.features, where)
    try:
        with torch.device("meta"):
            probe(X, y, **kwargs)
    except _Built as b:
        return b.module
    raise AssertionError(f"{cls.__name__} did not build its module")  # pragma: no cover


def _activations_per_row(module, features: int) -> int:
    import torch

    total = 0

    def hook(_m, _inp, out):
        nonlocal total
        total += out.numel()

    leaves = [m for m in module.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            module(torch.empty(1, features, device="meta", dtype=next(module.parameters()).dtype))
    finally:
        for h in handles:
            h.remove()
    return int(total)


def estimate(cfg: Any, n_workers: int, shape: DataShape | None) -> Estimate:
    """Peak memory of the run (bytes, by part) beyond what this process holds now."""
    oc, est = cfg.objective, Estimate()
    item = 8 if oc.dtype == "float64" else 4
    data = data_size(cfg, shape)
    d, act = model_size(cfg, data)
    n = int(n_workers)
    rpc = cfg.engine.name == "rpc"
    local_workers = n if not (rpc and cfg.engine.get("launcher") == "torchrun") else 0
    batch = cfg.batch_size
    per_worker: dict[str, float] = {}  # what every worker holds (its own process under rpc)

    own_data = 0.0
    if data is not None:
        rows, feats = data.rows, data.features
        own_data = data.file_bytes
        if data.x_itemsize != item:
            own_data += (rows + data.test_rows) * feats * item  # the objective's converted copy
        est.add("data", own_data)
        if oc.name == "quadratic":  # F* (lstsq) and the theory's per-row gradients
            est.add("F* and theory", 2 * rows * feats * 8 + feats * feats * 8)
        elif oc.name == "logreg":  # L-BFGS on a float64 copy
            est.add("F* and theory", rows * feats * 8 + 3 * rows * (data.classes or 2) * 8)
        if act:  # a full-batch forward and backward pass (evaluation, full gradients)
            est.add("evaluation", 2 * max(rows, data.test_rows) * act * item)
        b = rows if batch is None else min(int(batch), rows)
        per_worker["minibatch"] = b * feats * item + 2 * b * act * item
        if batch is not None:  # a row sampler's permutation of its shard
            shard = rows if cfg.dataset.split == "none" else rows / max(n, 1)
            per_worker["sampler"] = shard * 8
        if cfg.dataset.split != "none":
            est.add("shards", rows * 8)
    elif oc.name == "noisy_quadratic" and oc.sigma > 0:
        per_worker["sampler"] = d * item  # one job's noise, drawn from counters (models/noise.py)
    # the server's iterates: up to n + 1 pinned versions, and a few working vectors
    est.add("iterates", (n + 1) * d * item + 4 * d * item)
    if rpc:
        per_worker["process"] = RPC_WORKER_BYTES + own_data + 3 * d * item
    else:
        per_worker["bookkeeping"] = WORKER_BOOKKEEPING
        est.add("minibatch", per_worker.pop("minibatch", 0))  # one process computes them all
    for name, v in per_worker.items():
        est.add(f"{name} x {local_workers} workers" if local_workers > 1 else name,
                v * local_workers)  # fmt: skip
    return est


def available_memory() -> tuple[int, str]:
    """(bytes, where the number comes from): MemAvailable, or a cgroup's limit when lower."""
    best: tuple[int, str] | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                best = (int(line.split()[1]) * 1024, "MemAvailable")
    except OSError:
        pass
    v1 = "/sys/fs/cgroup/memory/memory."
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (v1 + "limit_in_bytes", v1 + "usage_in_bytes"),
    ):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:
            free = max(0, int(limit) - usage)
            if best is None or free < best[0]:
                best = (free, "cgroup memory limit")
    return best or (2**62, "unknown")  # no /proc: nothing to compare with


def check(
    cfg: Any, n_workers: int, shape: DataShape | None, available: int | None = None
) -> Estimate:
    """Refuse a run whose estimate does not fit in the memory available now."""
    est = estimate(cfg, n_workers, shape)
    source = "given"
    if available is None:
        available, source = available_memory()
    if est.total > available:
        raise ConfigError(
            f"this run needs about {_gib(est.total)} of memory ({est.describe()}); this machine "
            f"has {_gib(available)} available ({source})"
        )
    return est
