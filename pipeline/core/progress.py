"""A progress bar for runs that take more than a few seconds; quiet in CI or off a terminal."""

from __future__ import annotations

import os
import sys


def progress_enabled(mode: str = "auto") -> bool:
    if mode in ("on", "always", True):
        return True
    if mode in ("off", "never", False):
        return False
    return sys.stderr.isatty() and not os.environ.get("CI")


class Progress:
    """Counts units of work (gradients or simulated seconds); draws a bar after 2 s."""

    def __init__(self, total: float | None, desc: str, enabled: bool):
        self._bar = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, desc=desc, delay=2.0, unit="grad", dynamic_ncols=True, leave=False
            )

    def update_to(self, done: float) -> None:
        if self._bar is not None:
            self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
