"""Starting and reaping the worker processes of ``engine=rpc`` (the server's side).

Two launchers: ``spawn`` starts ``n`` fresh interpreters here (``python -m
pipeline.engines.rpc.worker``; spawned, never forked, so nothing of the server's process leaks in)
on a port whose store the server binds before anyone starts, with their output in
``workers.log``; ``torchrun`` takes the ranks from the environment (torchrun started every
rank; the workers' output comes through the rendezvous store into ``workers.log``). On one
machine the group stays on the loopback interface. However a run ends, every process started
here is reaped.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch.distributed as dist

from pipeline import PROJECT_ROOT, ConfigError
from pipeline.engines.rpc import protocol
from pipeline.engines.rpc.protocol import RunFailure

WORKER_MODULE = "pipeline.engines.rpc.worker"


def free_port(addr: str) -> int:
    with socket.socket() as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


def loopback_only(addr: str) -> dict[str, str]:
    """Environment that keeps TensorPipe and gloo on the loopback interface when the group's
    address is a loopback one (one machine): nothing listens beyond this host."""
    if addr not in ("127.0.0.1", "localhost", "::1"):
        return {}
    return {k: os.environ.get(k, "lo") for k in ("TP_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME")}


class PortUnavailable(ConfigError, RunFailure):
    """``engine.master_port`` cannot be bound (taken, or privileged): a configuration this
    machine cannot run (``ConfigError``: one line, exit code 2), found before any worker
    starts. Also a ``RunError`` for callers that catch a failed run."""


def bind_store(
    addr: str, fixed_port: int | None, world_size: int, timeout: float
) -> tuple[dist.TCPStore, int]:
    """Bind the rendezvous store before any worker starts: a given port that cannot be bound
    is :class:`PortUnavailable` at once; a port we chose that was taken meanwhile is a reason
    to choose another."""
    for _ in range(1 if fixed_port else 5):
        port = fixed_port or free_port(addr)
        try:
            return protocol.bind_master_store(addr, port, world_size, timeout), port
        except Exception as e:
            text = " ".join(str(e).split())
            taken = "in use" in text.lower() or "EADDRINUSE" in text
            if fixed_port and taken:
                raise PortUnavailable(
                    f"port {port} on {addr} is taken (engine.master_port)"
                ) from None
            if fixed_port:
                why = text[:200]
                if "EACCES" in text:
                    why = "permission denied"
                    if port < 1024:
                        why += " (a port below 1024 needs root or CAP_NET_BIND_SERVICE)"
                raise PortUnavailable(
                    f"cannot listen on {addr}:{port} (engine.master_port): {why}"
                ) from None
            if not taken:
                raise RunFailure(f"cannot listen on {addr}:{port}: {text[:200]}") from None
    raise RunFailure(f"no free port on {addr} after 5 tries")


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def oversubscription(processes: int, cores: int) -> str | None:
    """The one warning line for a wall-clock run with more processes of the run on this machine
    than cores it may use; None when each has a core."""
    if processes <= cores:
        return None
    return (
        f"{processes} processes of this run (the server and its workers) share {cores} CPU "
        f"core{'s' if cores != 1 else ''}: wall-clock times (run_time_s, the time column, "
        "jobs.csv's durations) and gradients_per_s measure the contention for the CPU, not "
        "the emulated worker times of the topology alone"
    )


def torchrun_store(n: int, timeout: float) -> tuple[str, int, dist.TCPStore]:
    """Under torchrun: this process must be rank 0 of n + 1; the store is torchrun's."""
    world = int(os.environ.get("WORLD_SIZE", "0"))
    if int(os.environ.get("RANK", "-1")) != 0 or world != n + 1:
        raise RunFailure(
            f"engine.launcher=torchrun needs this process to be rank 0 of a world of "
            f"n_workers + 1 = {n + 1} (RANK={os.environ.get('RANK')}, "
            f"WORLD_SIZE={os.environ.get('WORLD_SIZE')}); see README, several machines"
        )
    addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    return addr, port, protocol.client_store(addr, port, timeout)


def spawn_command(rank: int, world_size: int, url: str, start_timeout: float) -> list[str]:
    """``python -m pipeline.engines.rpc.worker RANK WORLD_SIZE URL START_TIMEOUT PARENT``."""
    args = (rank, world_size, url, start_timeout, os.getpid())
    return [sys.executable, "-m", WORKER_MODULE, *map(str, args)]


class Workers:
    """The worker processes this server started (none under torchrun) and ``workers.log``."""

    def __init__(self, n: int, log_path: Path):
        self.n = n
        self.log_path = log_path
        self.procs: list[subprocess.Popen] = []
        self._log = None

    def spawn(self, url: str, start_timeout: float, env: dict[str, str]) -> None:
        """Ranks 1..n as fresh interpreters (no ``__main__`` guard needed in scripts that call
        the pipeline), their output appended to ``workers.log``."""
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        for r in range(1, self.n + 1):
            self.procs.append(
                subprocess.Popen(
                    spawn_command(r, self.n + 1, url, start_timeout),
                    cwd=PROJECT_ROOT,
                    stdin=subprocess.DEVNULL,
                    stdout=self._log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **env, "TORCH_CPP_LOG_LEVEL": "ERROR"},
                )
            )

    def exit_code(self, w: int) -> int | None:
        """Worker w's exit code once its process (started here) has exited, else None."""
        if w >= len(self.procs):
            return None
        return self.procs[w].poll()

    def check(self, when: str) -> None:
        for w in range(len(self.procs)):
            code = self.exit_code(w)
            if code is not None:
                raise RunFailure(f"worker {w} exited with code {code} {when} (see workers.log)")

    def kill(self, w: int) -> None:
        if w < len(self.procs) and self.procs[w].poll() is None:
            self.procs[w].kill()

    def write_output(self, store: dist.TCPStore | None) -> None:
        """torchrun: ``workers.log`` from the output each worker sent through the store (up to
        its ``stop``; a worker on another machine also prints it on its own console)."""
        parts = []
        for r in range(1, self.n + 1):
            try:
                data = protocol.read_output(store, r) if store is not None else b""
            except Exception as e:  # the store is gone (torchrun stopped): say so
                data = f"(output not available: {' '.join(str(e).split())[:200]})\n".encode()
            if data and not data.endswith(b"\n"):
                data += b"\n"
            parts.append(f"-- worker {r - 1} (rank {r}) --\n".encode() + data)
        with open(self.log_path, "ab") as f:
            f.write(b"".join(parts))

    def reap(self, deadline: float, clean: bool) -> None:
        """Wait for every process started here until ``deadline`` (at most 2 s more after an
        abnormal end, which terminates them first), then kill; never hang."""
        if not clean:  # an abnormal end: no reason to wait for anyone
            for p in self.procs:
                if p.poll() is None:
                    p.terminate()
            deadline = min(deadline, time.monotonic() + 2.0)
        for p in self.procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
        stuck = []
        for p in self.procs:
            try:
                p.wait(2.0)
            except subprocess.TimeoutExpired:  # not even SIGKILL helped: say so, never hang
                stuck.append(p.pid)
        self.procs = []
        if self._log is not None:
            self._log.close()
            self._log = None
        if stuck:
            raise RunFailure(f"worker processes {stuck} would not die")
