"""What both sides of ``engine=rpc`` share: names, the bounded rendezvous, the start-up handshake
and the messages. The server (rank 0, :mod:`~pipeline.engines.rpc.server`) and the workers
(ranks 1..n, :mod:`~pipeline.engines.rpc.worker`) import this module, never each other.

Start-up handshake, through the rendezvous store (a TCP store whose every wait has a deadline),
before the RPC group forms: the server publishes the resolved configuration and the worker
builder (``"module:function"``, :attr:`Experiment.worker_builder`); each worker fetches both,
builds its part and reports ``ready`` (pid, device, host) or ``failed`` (why). Under torchrun a
worker also appends its console output to the store (:func:`send_output`), which the server
writes to ``workers.log``.

Messages, one per job each way (flat contiguous tensors), over torch.distributed.rpc:

- server -> worker ``run_job(seq, point, wait_s)`` (``@rpc.functions.async_execution``): the
  job is queued on the worker's job thread, which runs jobs strictly in ``seq`` order: it draws
  the job's sample (always, so the worker's sample stream stays aligned with the event
  engine's), computes the gradient unless the job was cancelled, then waits out the rest of
  ``wait_s`` (a cancellation interrupts the wait). The reply is ``(OK, seq, grad, compute_s)``,
  ``(CANCELLED, seq, compute_s)`` or ``(ERROR, seq, text)``.
- server -> worker ``cancel_job(seq)``, ``stop()``; worker -> server ``ping()``.
- worker -> server ``host_stopping(rank, signum)``, under torchrun: this worker's torchrun is
  stopping every rank of its host (one of them died, or torchrun itself was interrupted) and
  sent it ``signum``. On the server's host torchrun signals the server too; on another host
  nothing else would tell it, so the server ends the run as if it had been signalled.

The functions the messages name live here, so each side resolves them by this module's name; a
worker installs what answers them with :func:`serve_jobs`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from datetime import timedelta
from typing import Protocol
from urllib.parse import parse_qs, urlparse

import torch
import torch.distributed as dist
import torch.distributed.rpc as rpc

from pipeline import RunError

# torch's RPC start-up calls a deprecated gloo API of its own
warnings.filterwarnings("ignore", message="You are using a Backend", category=UserWarning)

SERVER = "server"
SCHEME = "asgdtcp"  # our rendezvous: a TCP store whose every wait has a deadline


def worker_name(rank: int) -> str:
    return f"worker{rank}"


class RunFailure(RunError):
    """The run cannot go on; the message is the one line the user sees."""


# -- the bounded rendezvous ------------------------------------------------------------------------
_MASTER_STORE: dist.TCPStore | None = None  # the server's bound store, until the rendezvous


def hand_over_store(store: dist.TCPStore | None) -> None:
    """The store the server bound before it started anyone, for rank 0's rendezvous (None:
    forget it)."""
    global _MASTER_STORE
    _MASTER_STORE = store


def _bounded_tcp_rendezvous(url: str, **kwargs):
    """Like torch's tcp:// rendezvous, but the store waits at most ``timeout`` seconds (from the
    URL) instead of 30 minutes for a rank that never comes. Rank 0 uses the store the server
    bound before it started anyone; under torchrun (an agent store already listens on the
    port) every rank is a client."""
    global _MASTER_STORE
    u = urlparse(url)
    q = {k: v[-1] for k, v in parse_qs(u.query).items()}
    rank, world_size = int(q["rank"]), int(q["world_size"])
    if rank == 0 and _MASTER_STORE is not None:
        store, _MASTER_STORE = _MASTER_STORE, None
    else:
        store = client_store(u.hostname, u.port, float(q.get("timeout", 120)))
    yield store, rank, world_size
    raise RuntimeError("the asgd rendezvous cannot be repeated")


def register_rendezvous() -> None:
    from torch.distributed.rendezvous import _rendezvous_handlers, register_rendezvous_handler

    if SCHEME not in _rendezvous_handlers:
        register_rendezvous_handler(SCHEME, _bounded_tcp_rendezvous)


def init_url(addr: str, port: int, timeout: float) -> str:
    return f"{SCHEME}://{addr}:{port}?timeout={timeout:g}"


def store_address(url: str) -> tuple[str, int]:
    u = urlparse(url)
    return u.hostname, u.port


#: TensorPipe transports: TCP (libuv) only, never ``shm``. Why: while the group forms, every
#: worker sends the leader (the server) one message at once (``init_rpc``'s all-gather), and
#: each such pipe opens about 3 connections to the server's ``shm`` listener, an AF_UNIX socket
#: that TensorPipe creates with a backlog of 128 (``listen(128)``, fixed in its source). On a
#: busy host the server accepts slower than 40 workers connect (measured: 120 of 128 slots
#: queued at once): a non-blocking AF_UNIX ``connect`` to a full backlog fails at once with
#: EAGAIN (``connect: Resource temporarily unavailable``, tensorpipe/common/socket.cc), the worker
#: exits, and its peers see ``Connection reset by peer`` (pytorch/pytorch#85607). A full TCP
#: backlog instead drops the SYN and the kernel retries it, so a slow accept only delays the
#: join. On one host the job messages (a few KiB) then go over loopback TCP instead of shared
#: memory; across hosts TCP was used anyway.
TRANSPORTS = ["uv"]


def backend_options(url: str, timeout: float, threads: int) -> rpc.TensorPipeRpcBackendOptions:
    return rpc.TensorPipeRpcBackendOptions(
        init_method=url, rpc_timeout=timeout, num_worker_threads=threads, _transports=TRANSPORTS
    )


def bind_master_store(addr: str, port: int, world_size: int, timeout: float) -> dist.TCPStore:
    """The rendezvous store, bound now (fails at once if the port is taken)."""
    return dist.TCPStore(
        addr,
        port,
        world_size,
        is_master=True,
        timeout=timedelta(seconds=timeout),
        wait_for_workers=False,
        multi_tenant=True,
    )


def client_store(addr: str, port: int, timeout: float) -> dist.TCPStore:
    return dist.TCPStore(
        addr, port, is_master=False, timeout=timedelta(seconds=timeout), wait_for_workers=False
    )


# -- the start-up handshake ------------------------------------------------------------------------
CONFIG_KEY = "asgd/config"
READY, FAILED = "ready", "failed"


def publish_config(store: dist.TCPStore, cfg: dict, worker_builder: str) -> None:
    """The resolved configuration and the ``"module:function"`` every worker builds with."""
    store.set(CONFIG_KEY, json.dumps({"config": cfg, "worker_builder": worker_builder}))


def fetch_config(store: dist.TCPStore) -> tuple[dict, str]:
    """``(config, worker_builder)``; waits (with the store's deadline) for the server."""
    message = json.loads(store.get(CONFIG_KEY))
    return message["config"], message["worker_builder"]


def report(store: dist.TCPStore, rank: int, kind: str, info) -> None:
    store.set(f"asgd/{kind}/{rank}", json.dumps(info))


def read_state(store: dist.TCPStore, rank: int) -> tuple[str, object] | None:
    """(READY, info) or (FAILED, text) once worker ``rank`` said so; else None."""
    for kind in (FAILED, READY):
        key = f"asgd/{kind}/{rank}"
        if store.check([key]):
            return kind, json.loads(store.get(key))
    return None


OUTPUT_LIMIT = 1 << 20  # bytes of a worker's output sent through the store, at most


def send_output(store: dist.TCPStore, rank: int, data: bytes) -> None:
    """Append a worker's console output (torchrun: the server writes it to ``workers.log``)."""
    store.append(f"asgd/output/{rank}", data)


def read_output(store: dist.TCPStore, rank: int) -> bytes:
    key = f"asgd/output/{rank}"
    return bytes(store.get(key)) if store.check([key]) else b""


# -- the messages ------------------------------------------------------------------------------
OK, CANCELLED, ERROR = "ok", "cancelled", "error"  # the first field of a job's reply


class JobHandler(Protocol):
    """What answers the server's messages in a worker process."""

    def submit(self, seq: int, point: torch.Tensor, wait_s: float) -> torch.futures.Future: ...

    def cancel(self, seq: int) -> None: ...

    def stop(self) -> None: ...


_HANDLER: JobHandler | None = None


def serve_jobs(handler: JobHandler | None) -> None:
    """Install (None: remove) what answers ``run_job``, ``cancel_job`` and ``stop`` here."""
    global _HANDLER
    _HANDLER = handler


@rpc.functions.async_execution
def run_job(seq: int, point: torch.Tensor, wait_s: float) -> torch.futures.Future:
    return _HANDLER.submit(seq, point, wait_s)


def cancel_job(seq: int) -> None:
    _HANDLER.cancel(seq)


def stop() -> None:
    if _HANDLER is not None:
        _HANDLER.stop()


def ping() -> bool:
    """Answered by the server: a worker under torchrun checks that its server is still there."""
    return True


_HOST_STOPPING: Callable[[int, int], None] | None = None


def on_host_stopping(callback: Callable[[int, int], None] | None) -> None:
    """Install (None: remove) what answers ``host_stopping`` on the server."""
    global _HOST_STOPPING
    _HOST_STOPPING = callback


def host_stopping(rank: int, signum: int) -> None:
    """Answered by the server: torchrun on worker ``rank``'s host sent it ``signum`` (it is
    stopping every rank there); ignored when no run is listening."""
    callback = _HOST_STOPPING
    if callback is not None:
        callback(rank, signum)
