"""``engine=rpc``: the parameter server in this process, worker processes over
torch.distributed.rpc."""
