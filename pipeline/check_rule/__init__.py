"""A conformance kit for server rules (issue #20): does a rule keep the protocol of
:mod:`pipeline.api`, and do the engines run it as documented?

``python -m pipeline.check_rule their_pkg.TheirRule [key=value ...] [--workers N]
[--gradients G] [--rpc/--no-rpc]``, or from a test::

    from pipeline.check_rule import assert_conforms, check_rule
    assert_conforms("their_pkg.TheirRule", {"threshold": 3}, rpc=False)

The rule is built the way the pipeline builds it: an optimizer config ``{_target_: <path>,
name: <derived>, lr: 0.05, **keys}`` written into a temporary config directory on
``hydra.searchpath``, composed with a 64 x 4 least-squares problem (``dataset=small_lstsq``),
``batch_size=8`` and exponential job times, and built by ``build_experiment``. Then:

1. **protocol**: the rule is driven through the real :class:`Dispatcher` (with a
   :class:`ParameterServer`, so the dispatcher's own version check is on) on three worker-time
   settings (homogeneous, linear tau_i = i, one straggler 10x slower) and a few seeds; every
   decision is checked as it is made (type and field types, delay, weight, version, worker
   indices, scale), the run must reach its gradient budget (a stall is named), the measured
   updates per gradient are compared with ``updates_per_gradient`` (WARN beyond 4x), a fresh
   rule loses a worker mid-run, and ``describe()`` must be JSON-serialisable;
2. **determinism**: two ``engine=sim`` runs with the same seed give the same events and iterates;
3. **plain loop**: the event engine's rows and iterates equal those of :func:`plain_loop`, a
   loop written here from docs/methods.md that calls the rule directly (no engine code);
4. **rpc** (``--rpc``, the default; real processes, ~10 s): ``engine=rpc engine.ordered=true``
   gives the simulator's rows (without the time) and iterates within 1e-12.

One line per check (``PASS``/``FAIL``/``WARN``); exit code 0 when nothing fails, 1 otherwise,
2 for a bad dotted path or key (one line, the pipeline's own message).

The package: :mod:`.setup` builds the rule and each run's config, :mod:`.invariants` checks each
decision, :mod:`.protocol` runs check 1, :mod:`.loop` is the plain loop, :mod:`.compare` runs
checks 2 to 4, :mod:`.report` holds the lines, :mod:`.kit` the entry functions and :mod:`.cli`
the command line (``__main__``).
"""

from pipeline.check_rule.cli import main
from pipeline.check_rule.compare import RPC_GRADIENTS, RPC_WORKERS, check_rpc, check_runs
from pipeline.check_rule.invariants import INVARIANTS, Violation, check_decision
from pipeline.check_rule.kit import assert_conforms, check_rule
from pipeline.check_rule.loop import plain_loop
from pipeline.check_rule.protocol import Drive, check_protocol, drive
from pipeline.check_rule.report import FAIL, PASS, WARN, Check, Report
from pipeline.check_rule.setup import LR, SETTINGS, Setup, derived_name, parse_keys

__all__ = [
    "FAIL", "INVARIANTS", "LR", "PASS", "RPC_GRADIENTS", "RPC_WORKERS", "SETTINGS", "WARN",
    "Check", "Drive", "Report", "Setup", "Violation", "assert_conforms", "check_decision",
    "check_protocol", "check_rpc", "check_rule", "check_runs", "derived_name", "drive", "main",
    "parse_keys", "plain_loop",
]  # fmt: skip
