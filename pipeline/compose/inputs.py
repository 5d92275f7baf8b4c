"""Every file a run reads, checked in one place before any work starts: the data file
(``dataset.path`` or a default ``<name>.npz``) and the trace (``topology.trace_path``).

Each problem is one line naming the file and what is wrong (a :class:`ConfigError`, exit code 2):
missing, empty, not a zip, a zip that is not an ``.npz``, arrays missing or of the wrong shape or
type, NaN or Inf inside, labels where a regression target is needed and the reverse, and data on
which the chosen model would only ever be constant (one class, no features, an image too small
for the CNN's pooling). :func:`inspect_npz` reads only the arrays' headers (for the resource
check); :func:`load_data` reads and checks everything.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline import ConfigError
from pipeline.core.files import NPY, check_file, npz_headers
from pipeline.core.files import where as _where

#: objectives that need integer class labels; ``quadratic`` needs real-valued targets
CLASSIFIERS = ("logreg", "mlp", "cnn")
ARRAYS = ("X", "y", "X_test", "y_test")
#: the smallest image side the CNN's 2 x 2 max-pool leaves something of
CNN_MIN_SIDE = 2


@dataclass
class DataShape:
    """What the headers of a data file say, without reading its arrays."""

    path: Path
    arrays: dict[str, tuple[tuple[int, ...], np.dtype]] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.arrays["X"][0][0]

    @property
    def features(self) -> int:
        return self.arrays["X"][0][1]

    @property
    def test_rows(self) -> int:
        return self.arrays["X_test"][0][0] if "X_test" in self.arrays else 0

    def nbytes(self, name: str) -> int:
        shape, dtype = self.arrays[name]
        return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize

    @property
    def total_bytes(self) -> int:
        return sum(self.nbytes(n) for n in self.arrays)


def inspect_npz(path: str | Path, key: str = "dataset.path") -> DataShape:
    """Open ``path`` as an ``.npz`` and check its arrays' names, shapes and types from their
    headers only (no array is read)."""
    path = Path(path)
    check_file(path, key, "data file")
    where = _where(path, key)
    if not zipfile.is_zipfile(path):
        raise ConfigError(f"{where} is not an .npz file (not a zip archive)")
    shape = DataShape(path)
    try:
        with zipfile.ZipFile(path) as zf:
            members = [i.filename for i in zf.infolist() if not i.is_dir()]
        if not any(m.endswith(NPY) for m in members):
            names = ", ".join(members[:5]) or "nothing"
            raise ConfigError(f"{where} is a zip archive but not an .npz (it holds {names})")
        shape.arrays.update(npz_headers(path))
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{where}: {e}") from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ConfigError(f"{where} is not a readable .npz file: {e}") from None
    _check_shapes(shape, where)
    return shape


def _check_shapes(shape: DataShape, where: str) -> None:
    a = shape.arrays
    missing = [n for n in ("X", "y") if n not in a]
    if missing:
        have = ", ".join(sorted(a)) or "no arrays"
        raise ConfigError(
            f"{where} has no array{'s' if len(missing) > 1 else ''} {' and '.join(missing)} "
            f"(it holds {have}); a data file needs X (rows x features) and y (one per row)"
        )
    if ("X_test" in a) != ("y_test" in a):
        raise ConfigError(f"{where} has only one of X_test and y_test; give both or neither")
    for name in [n for n in ARRAYS if n in a] + (["image_shape"] if "image_shape" in a else []):
        dims, dtype = a[name]
        if dtype.kind not in "biuf":
            raise ConfigError(f"{where}: array {name} is not numeric (dtype {dtype})")
    dims = {"X": (2, "rows x features"), "y": (1, "one target per row"),
            "X_test": (2, "rows x features"), "y_test": (1, "one target per row")}  # fmt: skip
    for name, (ndim, what) in dims.items():
        if name in a and len(a[name][0]) != ndim and not _targets_2d(a, name):
            raise ConfigError(f"{where}: {name} must be {ndim}-d ({what}), got shape {a[name][0]}")
    rows, features = a["X"][0]
    if rows == 0:
        raise ConfigError(f"{where}: X has no rows")
    if features == 0:
        raise ConfigError(f"{where}: X has no feature columns (shape {a['X'][0]})")
    if a["y"][0][0] != rows:
        raise ConfigError(f"{where}: y has {a['y'][0][0]} entries but X has {rows} rows")
    if "X_test" in a:
        if a["X_test"][0][1] != features:
            raise ConfigError(
                f"{where}: X_test has {a['X_test'][0][1]} columns but X has {features}"
            )
        if a["y_test"][0][0] != a["X_test"][0][0]:
            raise ConfigError(
                f"{where}: y_test has {a['y_test'][0][0]} entries but X_test has "
                f"{a['X_test'][0][0]} rows"
            )


def _targets_2d(a: dict, name: str) -> bool:
    """Real-valued targets may be rows x k (objective=torch_module with a regression loss;
    :func:`check_targets` refuses them elsewhere); y_test then has y's k columns."""
    if name not in ("y", "y_test") or len(a["y"][0]) != 2 or a["y"][1].kind != "f":
        return False
    return len(a[name][0]) == 2 and a[name][0][1] == a["y"][0][1] >= 1


def _nonfinite(name: str, v: np.ndarray, where: str) -> None:
    if v.dtype.kind == "f":
        bad = int(np.size(v) - np.count_nonzero(np.isfinite(v)))
        if bad:
            s = "s" if bad > 1 else ""
            raise ConfigError(f"{where}: {name} holds {bad} non-finite value{s} (NaN or Inf)")


def load_data(path: str | Path, objective: str, key: str = "dataset.path", loss=None) -> dict:
    """Read a data file for ``objective`` (``loss``: objective=torch_module's) and check
    everything about it; returns its arrays."""
    path = Path(path)
    shape = inspect_npz(path, key)
    where = _where(path, key)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ConfigError(f"{where} cannot be read: {e}") from None
    for name in ARRAYS:
        if name in arrays:
            _nonfinite(name, arrays[name], where)
    check_targets(arrays, objective, where, loss)
    if objective == "cnn":
        check_image_shape(arrays.get("image_shape"), shape.features, where)
    return arrays


def target_kind(objective: str, loss=None) -> str:
    """What y must hold: ``labels`` (a classifier; torch_module with cross_entropy), ``real``
    (quadratic; torch_module with mse, where y may be rows x k) or ``any`` (torch_module with
    the user's own loss)."""
    if objective == "torch_module":
        return {"cross_entropy": "labels", "mse": "real"}.get(loss, "any")  # type: ignore[arg-type]
    return "labels" if objective in CLASSIFIERS else "real"


def check_targets(arrays: dict, objective: str, where: str, loss=None) -> None:
    """Labels for a classifier, real-valued targets for least squares."""
    y = arrays["y"]
    integer = y.dtype.kind in "biu"
    kind = target_kind(objective, loss)
    if y.ndim != 1 and not (objective == "torch_module" and kind != "labels"):
        raise ConfigError(f"{where}: y must be 1-d (one target per row), got shape {y.shape}")
    if kind == "any":
        return
    own = objective == "torch_module"
    if own:
        objective = f"torch_module with objective.loss={loss}"
    if kind == "real":
        if integer:
            other = "objective.loss=cross_entropy" if own else "objective=logreg, mlp or cnn"
            raise ConfigError(
                f"{where}: y holds integer class labels but objective={objective} needs "
                f"real-valued targets (use {other}, or store y as floats)"
            )
        return
    if not integer:
        other = "objective.loss=mse" if own else "objective=quadratic"
        raise ConfigError(
            f"{where}: objective {objective} is a classifier but dataset targets y are "
            f"real-valued ({y.dtype}); use {other}, or store integer labels 0..C-1"
        )
    if y.min() < 0:
        raise ConfigError(f"{where}: y holds negative labels ({int(y.min())}); labels are 0..C-1")
    classes = np.unique(y)
    if len(classes) < 2:
        raise ConfigError(
            f"{where}: y has a single class ({int(classes[0])}); a classifier trained on it "
            "is constant"
        )
    if "y_test" in arrays:
        yt = arrays["y_test"]
        if yt.dtype.kind not in "biu":
            raise ConfigError(f"{where}: y_test holds real values; a classifier needs labels")
        if len(yt) and (yt.min() < 0 or yt.max() > y.max()):
            raise ConfigError(
                f"{where}: y_test holds labels outside y's 0..{int(y.max())} "
                f"({int(yt.min())}..{int(yt.max())})"
            )


def check_image_shape(image_shape, features: int, where: str) -> tuple[int, int, int]:
    """``image_shape`` (C, H, W) for objective=cnn: matches the columns, big enough to pool."""
    if image_shape is None:
        raise ConfigError(
            f"{where}: objective cnn needs image-shaped data (an image_shape array C, H, W); "
            "this file is tabular (use dataset=digits, or objective=mlp)"
        )
    dims = np.asarray(image_shape).ravel()
    if len(dims) != 3 or dims.dtype.kind not in "iu" or (dims < 1).any():
        raise ConfigError(f"{where}: image_shape must be 3 positive integers C, H, W, got {dims}")
    c, h, w = (int(v) for v in dims)
    if c * h * w != features:
        raise ConfigError(
            f"{where}: image_shape {c} x {h} x {w} = {c * h * w} values but X has {features} "
            "columns"
        )
    if min(h, w) < CNN_MIN_SIDE:
        raise ConfigError(
            f"{where}: images of {h} x {w} are too small for the CNN's 2 x 2 pooling (it would "
            "leave no features); use objective=mlp"
        )
    return c, h, w


def check_builder_params(name: str, params: dict) -> dict:
    """``dataset.params`` for a dataset builder: known names, finite numbers, sizes >= 1."""
    import inspect

    from models import datasets

    if name not in datasets.BUILDERS:
        return params
    sig = inspect.signature(datasets.BUILDERS[name])
    known = [k for k in sig.parameters if k != "seed"]
    for k, v in params.items():
        key = f"dataset.params.{k}"
        if k not in known:
            raise ConfigError(
                f"unknown key {key}: dataset {name} takes {', '.join(known) or 'no parameters'}"
            )
        kind = sig.parameters[k].annotation
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{key} must be a number, got {v!r}")
        if not math.isfinite(v):
            raise ConfigError(f"{key} must be finite, got {v}")
        if kind in (int, "int") and v != int(v):
            raise ConfigError(f"{key} must be an integer, got {v}")
        low = {"classes": 2}.get(k, 1) if kind in (int, "int") else 0
        if v < low:
            raise ConfigError(f"{key} must be >= {low}, got {v}")
        if k == "test_fraction" and not 0 < v < 1:
            raise ConfigError(f"{key} must be between 0 and 1, got {v}")
    return {k: int(v) if sig.parameters[k].annotation in (int, "int") else v
            for k, v in params.items()}  # fmt: skip
