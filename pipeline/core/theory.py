"""The fixed-computation-model predictions of docs/methods.md (section 5, "Theory").

Sort tau_1 <= ... <= tau_n; H_m = m / sum_{i<=m} 1/tau_i. With k = L Delta / eps and
s = sigma^2 L Delta / eps^2, up to constant factors:

    T_MB   = tau_n * (k + s / n)
    T_ASGD = H_n   * (k + s / n)
    T_opt  = min_m H_m * (k + s / m), attained at m*

tau_n / H_n (what asynchronous SGD gains over minibatch SGD) needs no constants; T_ASGD / T_opt
and m* need only sigma^2 / eps. Delay statistics of asynchronous SGD with fixed times: updates
arrive at rate Lambda = sum_i 1/tau_i, so a job of worker i sees about tau_i * Lambda - 1 other
updates: the mean delay over arrivals is about n - 1 and the largest about tau_n * Lambda - 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from pipeline.core.topology import harmonic_prefix


def predict(
    taus: Sequence[float],
    L: float | None = None,
    delta: float | None = None,
    sigma2: float | None = None,
    eps: float | None = None,
) -> dict[str, float | int | None]:
    t = np.sort(np.asarray(taus, dtype=np.float64))
    n = len(t)
    H = harmonic_prefix(t)
    rate = float(np.sum(1.0 / t))
    out: dict[str, float | int | None] = {
        "tau_n": float(t[-1]),
        "H_n": float(H[-1]),
        "ratio_mb_over_asgd": float(t[-1] / H[-1]),
        "updates_per_time_asgd": rate,
        "expected_mean_delay": float(n - 1),
        "expected_max_delay": float(max(0.0, t[-1] * rate - 1.0)),
        "m_star": None,
        "ratio_asgd_over_opt": None,
        "T_MB": None,
        "T_ASGD": None,
        "T_opt": None,
    }
    if sigma2 is None or eps is None:
        return out
    r = sigma2 / eps  # T_X / k depend on the constants only through sigma^2 / eps
    m = np.arange(1, n + 1)
    per_m = H * (1.0 + r / m)
    i = int(np.argmin(per_m))
    out["m_star"] = i + 1
    out["ratio_asgd_over_opt"] = float(H[-1] * (1.0 + r / n) / per_m[i])
    if L is not None and delta is not None:
        k = L * delta / eps
        out["T_MB"] = float(t[-1] * k * (1.0 + r / n))
        out["T_ASGD"] = float(H[-1] * k * (1.0 + r / n))
        out["T_opt"] = float(per_m[i] * k)
    return out


def optimal_batch(sigma2: float, eps: float) -> int:
    """Rennala's S and Ringmaster's R (docs/methods.md): max(1, ceil(sigma^2 / eps)).
    The quotient is rounded to 9 digits first, so 0.9 / 0.02 gives 45, not 46."""
    return max(1, math.ceil(round(sigma2 / eps, 9)))
