"""The study behind the report, driven by ``params.yaml``; every stage writes under
``results/<profile>/`` so that the profiles never overwrite each other.

    python -m pipeline.study tune       # tuning/, tuned_lr.json      (the paper's least squares)
    python -m pipeline.study runs       # runs/<topology>/<group>/    (seeds at the tuned lr)
    python -m pipeline.study paper      # paper/                      (the paper's own settings)
    python -m pipeline.study scaling    # scaling/, scaling_lr.json   (noisy quadratic, n grows)
    python -m pipeline.study nonconvex  # nonconvex/, nonconvex_lr.json (MLP and CNN)
    python -m pipeline.study hetero     # hetero/, hetero_lr.json     (heterogeneous data)
    python -m pipeline.study real       # real/rpc, real/replay, real/model, real/real.json
                                        #   (real processes, then their replay and the model)

Every sweep is a Hydra multirun of ``pipeline.train`` into a fixed directory, run in parallel
by Hydra's joblib launcher (one job per core; ``ASGD_STUDY_JOBS`` overrides the count). Records
do not depend on the launcher: same config and seed, same bytes.

**Tuning** (one seed, ``tune_seed``): per cell (a topology, or a worker count n) and method,
a log-spaced grid of ``lr_scale`` (the stepsize is the preset's ``lr_table`` entry times the
scale). The selected stepsize reaches the target in the least simulated time; ties, or no run
reaching the target, go to the lower final value; diverged or failed runs are never selected.
If the selected scale is the smallest or the largest tried, the grid is extended by one step
(the grid's own ratio) in that direction, and again, until the selection is interior (a point
at least as good as both neighbours, a worse or diverged point on each side) or the next step
would leave ``lr_scale_range`` (the cap; recorded as ``cap_hit``). A method with no stable
stepsize within the cap gets ``null`` and is left out of the runs.

**Runs**: each method at its own tuned stepsize, over ``seeds`` (disjoint from the tuning
seed), so the report's means and intervals are not measured on the seed that chose the lr.

**Variants** (``sweeps.VARIANTS``): Rennala's S and Ringmaster's R default to m* = ceil(sigma^2/eps)
(sigma^2 at the solution); ``rennala_n``/``ringmaster_n`` set them to n, ``rennala_n_cancel``
is Rennala at S = n with cancel-and-restart. Each is tuned and run like a method of its own.

The modules, each importing only those above it in this list: ``profile`` (params.yaml's
profile, the results folder), ``restore`` (a sweep whose every job is complete in an earlier
attempt, restored without launching), ``multirun`` (a sweep as one Hydra multirun, its summaries),
``sweeps`` (groups of methods and a sweep's cells), ``tuning`` (selection, bracketing, the tuning
rounds), ``stages`` (the stage functions, ``STAGES``), ``cli`` (``python -m pipeline.study``).
"""

from pipeline.study.cli import main
from pipeline.study.multirun import multirun
from pipeline.study.profile import StudyError
from pipeline.study.stages import STAGES
from pipeline.study.sweeps import Group, Sweep, make_groups
from pipeline.study.tuning import bracket, select, tune_sweep

__all__ = [
    "STAGES",
    "Group",
    "StudyError",
    "Sweep",
    "bracket",
    "main",
    "make_groups",
    "multirun",
    "select",
    "tune_sweep",
]
