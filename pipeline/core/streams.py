"""Seeded random streams, one per purpose: a run's randomness comes only from these generators,
each derived from the run's seed and a fixed purpose number (never from global state), so a
purpose's draws do not depend on how many draws another purpose made.

A stream is ``default_rng(SeedSequence(seed, spawn_key=(purpose, *key)))``; the numbers below are
part of the record contract (changing one changes every record)."""

from __future__ import annotations

import numpy as np

TIMES = 1  # job times, per worker: (1, worker)
SAMPLES = 2  # minibatch samples, per worker: (2, worker)
SPLIT = 3  # the split of data rows among workers: (3,)
RULE = 7  # a rule's own randomness (asgd_random's assignment): (7,)


def stream(seed: int, purpose: int, *key: int) -> np.random.Generator:
    """The generator for ``purpose`` (and ``key``, e.g. the worker) under the run's ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(purpose, *key)))
