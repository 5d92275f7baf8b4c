"""Reading ``.npz`` data files without loading them, and their content digests.

One place for both: the input checks (:mod:`pipeline.compose.inputs`), the F* cache
(:mod:`pipeline.compose.constants`) and MLflow's dataset inputs (:mod:`pipeline.tracking`) read
array shapes from the headers and key files by their content.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np

NPY = ".npy"


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
