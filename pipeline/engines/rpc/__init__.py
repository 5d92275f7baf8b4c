"""``engine=rpc``: the parameter server in this process, worker processes over
torch.distributed.rpc. ``server`` (the engine and its loop), ``worker`` (the worker process),
``protocol`` (what both share), ``launch`` (starting and reaping workers), ``faults`` (fault
injection for tests and drills)."""
