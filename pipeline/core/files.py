"""Input files: the checks every file a user names goes through first (exists, a file, readable,
not empty; one line naming the file and the key that chose it), ``.npz`` headers read without
loading the arrays, and content digests.

One place for all of them: the input checks (:mod:`pipeline.compose.inputs`), traces
(:mod:`pipeline.core.trace`), the F* cache (:mod:`pipeline.compose.constants`) and MLflow's
dataset inputs (:mod:`pipeline.tracking`).
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np

from pipeline import ConfigError

NPY = ".npy"


def where(path: Path, key: str) -> str:
    """How messages name a file: the path and the config key that chose it."""
    return f"{path} ({key})"


def check_file(path: Path, key: str, what: str) -> None:
    """``path`` exists, is a file, can be opened and is not empty; else a one-line ConfigError
    (``what`` names the kind of file: "data file", "trace")."""
    if not path.exists():
        raise ConfigError(f"{what} not found: {where(path, key)}")
    if path.is_dir():
        raise ConfigError(f"{where(path, key)} is a directory, not a {what}")
    try:
        size = path.stat().st_size
        with open(path, "rb"):
            pass
    except OSError as e:
        raise ConfigError(f"{where(path, key)} cannot be read: {e.strerror or e}") from None
    if size == 0:
        raise ConfigError(f"{where(path, key)} is empty")


def npz_headers(path: str | Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of each array of an ``.npz``, read from the headers (no data loaded).

    Raises ``zipfile.BadZipFile``, ``OSError``, ``EOFError`` or ``ValueError`` (a member that is
    not a numpy array, named in the message); callers turn those into their own messages."""
    out: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if info.is_dir() or not info.filename.endswith(NPY):
                continue
            with zf.open(info) as f:
                try:
                    version = np.lib.format.read_magic(f)
                    read = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    dims, _, dtype = read(f)
                except ValueError as e:
                    raise ValueError(f"{info.filename} is not a numpy array ({e})") from None
            out[info.filename[: -len(NPY)]] = (tuple(int(s) for s in dims), np.dtype(dtype))
    return out


_DIGESTS: dict[tuple, str] = {}


def file_digest(path: Path) -> str:
    """First 16 hex digits of the file's sha256 (cached per path, size and mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()[:16]
    return _DIGESTS[key]
