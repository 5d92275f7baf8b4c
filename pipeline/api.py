"""The public API: what a user's package may import to plug in a method or a model.

Stable from 0.1 on: the names below keep their meaning and signatures; everything else in
``pipeline`` is internal and may move. The guide, from an empty package to a method compared in
the MLflow UI, is docs/extending.md; the protocol's semantics are in the docstrings here.

**A method** is a :class:`ServerRule`: ``__init__(self, n_workers, lr, **its_keys)`` and
``on_gradient(worker, version) -> Decision``; a method whose decision is a stepsize of the
worker and the delay alone, the worker going on at once, is a :class:`DelayRule`
(``weight_for(worker, delay)``), which the event engine schedules in bulk. Engines tell a rule
"a gradient computed at ``version`` arrived from ``worker``" and carry out its
:class:`Decision` in this order: add the gradient with coefficient ``weight`` (0 = discard); if
``step``, apply the sum (``scale``: one factor per worker, for rules that declare
``scales_steps``); cancel the jobs of the workers in ``cancel``; give each worker in ``assign``
a job at the new version (queued FIFO behind a running one). A rule that declares
``reads_iterates`` may call ``self.iterates`` (an
:class:`IterateView`) inside ``on_gradient``.

What a rule may assume of every engine (the event engine, ``engine=sim``, and real processes,
``engine=rpc``):

- ``on_gradient`` is called once per arrival, one at a time, in the order the gradients arrive
  (the simulated clock's order; ties by worker index); a cancelled job never arrives;
- ``start()`` is called once before any arrival; ``on_worker_lost`` only under ``engine=rpc``;
- ``self.version`` is the rule's own count of steps and the engines check after every step
  that the server agrees;
- the arguments named ``rng`` (a seeded ``numpy.random.Generator``, the rule's own stream) and
  ``worker_times`` (each worker's mean job time, or None) are filled in when ``__init__`` asks
  for them; nothing else about the clock or the transport reaches a rule.

**A model** is any ``torch.nn.Module``: ``objective=torch_module`` wraps it (docs/extending.md);
an objective of your own implements :class:`Objective`.
"""

from __future__ import annotations

from models.objectives.base import DataObjective, Objective
from models.objectives.modules import ModuleObjective
from pipeline.core.methods.base import Decision, DelayRule, IterateView, ServerRule

__all__ = [
    "DataObjective",
    "Decision",
    "DelayRule",
    "IterateView",
    "ModuleObjective",
    "Objective",
    "ServerRule",
]
