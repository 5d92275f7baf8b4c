"""The README's two-machine torchrun recipe, run on two hosts: two network namespaces joined by a
veth pair (host A: the server and worker 0; host B: workers 1 and 2), each with its own address
and nothing in common but that link, and ``TP_SOCKET_IFNAME`` / ``GLOO_SOCKET_IFNAME`` set to
the veth as the README says. Needs root and ``ip netns`` (skipped, with the reason, elsewhere).
Every process of host A runs under ``ip netns exec <A>``, every one of host B under
``ip netns exec <B>``; the namespaces are deleted afterwards, whatever happened."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.records import read_events
from tests.conftest import PROJECT_ROOT
from tests.engines.test_rpc import _cmdline, _env_of, alive, assert_no_workers_left

pytestmark = pytest.mark.slow

#: seconds after which a run that should have ended counts as hung (never a speed assertion)
HANG_GUARD_S = 300
MASTER_PORT = 29500  # the README's: each host is a fresh namespace, where nothing else listens
_FIXTURES = itertools.count()


@dataclass(frozen=True)
class Host:
    ns: str  # the network namespace
    ifname: str  # its end of the veth pair
    addr: str  # its address on that link


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=60)


def _ns_pids(ns: str) -> list[int]:
    out = _ip("netns", "pids", ns)
    return [int(p) for p in out.stdout.split()]


@pytest.fixture
def two_hosts():
    """Hosts A and B: namespaces with unique names, ``lo`` up in each, a veth pair between
    them (10.231.X.1/24 on A, .2 on B). Afterwards any process still in them is killed (by its
    pid: every process in these namespaces is this test's) and both are deleted."""
    if os.geteuid() != 0:
        pytest.skip("two hosts as network namespaces need root (ip netns)")
    if shutil.which("ip") is None:
        pytest.skip("two hosts as network namespaces need the ip command (iproute2)")
    tag = f"{os.getpid():x}x{next(_FIXTURES)}"  # unique among live processes, and short: an
    # interface's name has at most 15 characters
    x = 20 + os.getpid() % 200  # 10.231.x.0/24: a link inside the two namespaces only
    a = Host(f"asgd-a-{tag}", f"asgda{tag}", f"10.231.{x}.1")
    b = Host(f"asgd-b-{tag}", f"asgdb{tag}", f"10.231.{x}.2")
    made: list[str] = []
    try:
        for h in (a, b):
            out = _ip("netns", "add", h.ns)
            if out.returncode != 0:
                pytest.skip(f"ip netns add failed: {out.stderr.strip()}")
            made.append(h.ns)
        steps = [
            ("link", "add", a.ifname, "type", "veth", "peer", "name", b.ifname),
            ("link", "set", a.ifname, "netns", a.ns),
            ("link", "set", b.ifname, "netns", b.ns),
        ]
        for h in (a, b):
            steps += [
                ("-n", h.ns, "addr", "add", f"{h.addr}/24", "dev", h.ifname),
                ("-n", h.ns, "link", "set", "lo", "up"),
                ("-n", h.ns, "link", "set", h.ifname, "up"),
            ]
        for step in steps:
            out = _ip(*step)
            if out.returncode != 0:
                pytest.skip(f"ip {' '.join(step)} failed: {out.stderr.strip()}")
        yield a, b
    finally:
        _kill_all(*made)
        _ip("link", "del", a.ifname)  # left in this namespace only if moving it failed
        for ns in made:
            _ip("netns", "del", ns)


def _torchrun_cmd() -> list[str]:
    """``torchrun``, the one of this interpreter."""
    script = Path(sys.executable).with_name("torchrun")
    return [str(script)] if script.exists() else [sys.executable, "-m", "torch.distributed.run"]


def _start(host: Host, master: Host, node_rank: int, cwd: Path, *args: str) -> subprocess.Popen:
    """The README's command for node ``node_rank``, run on ``host`` in ``cwd`` (its console in
    ``<cwd>.out``); ``master``: rank 0's host."""
    cmd = [
        "ip", "netns", "exec", host.ns, *_torchrun_cmd(), "--nnodes=2",
        f"--node-rank={node_rank}", "--nproc-per-node=2", f"--master-addr={master.addr}",
        f"--master-port={MASTER_PORT}", "-m", "pipeline.train", "engine=rpc",
        "engine.launcher=torchrun", *args,
    ]  # fmt: skip
    env = {
        **os.environ,
        "CI": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(PROJECT_ROOT),
        "TP_SOCKET_IFNAME": host.ifname,
        "GLOO_SOCKET_IFNAME": host.ifname,
    }
    cwd.mkdir()
    console = cwd.with_suffix(".out")  # a file: no pipe to fill, or held open by an orphan
    with open(console, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    proc.console = console
    return proc


def _run_args(tmp_path: Path, small_data: Path, *extra: str) -> list[str]:
    """Host A's configuration (host B gives none: rank 0's is used)."""
    return [
        "topology.n_workers=3", "dataset=small_lstsq", f"dataset.path={small_data}",
        "topology=linear", "batch_size=8", "optimizer.lr=0.01", "engine.time_scale=0.002",
        "eval_every=20", "tracking=none", f"hydra.run.dir={tmp_path / 'run'}", "progress=off",
        *extra,
    ]  # fmt: skip


def _kill_all(*namespaces: str) -> None:
    """SIGKILL to every process in these namespaces (all of them this test's), by pid."""
    for ns in namespaces:
        for pid in _ns_pids(ns):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _finish(procs: list[subprocess.Popen], hosts: tuple[Host, Host], timeout: float) -> list[str]:
    """Both torchruns' console, once both ended; past ``timeout``, every process of both hosts
    is killed and the test fails."""
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        _kill_all(*(h.ns for h in hosts))
        for p in procs:
            p.wait(timeout=60)
        pytest.fail(f"the run did not end within {timeout} s:\n" + "\n".join(_consoles(procs)))
    return _consoles(procs)


def _consoles(procs: list[subprocess.Popen]) -> list[str]:
    return [Path(p.console).read_text(errors="replace") for p in procs]


def _counter(host: Host, name: str) -> int:
    """A statistics counter of ``host``'s veth end (``rx_bytes``, ``tx_bytes``...)."""
    path = f"/sys/class/net/{host.ifname}/statistics/{name}"
    out = subprocess.run(
        ["ip", "netns", "exec", host.ns, "cat", path], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


def _tcp_peers(pid: int) -> set[tuple[str, str]]:
    """(local, remote) IPv4 addresses of the established TCP connections in ``pid``'s network
    namespace (``/proc/<pid>/net/tcp``)."""

    def addr(field: str) -> str:
        return socket.inet_ntoa(bytes.fromhex(field.split(":")[0])[::-1])

    peers = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[3] == "01":  # ESTABLISHED
            peers.add((addr(f[1]), addr(f[2])))
    return peers


def _assert_namespaces_empty(*hosts: Host) -> None:
    deadline = time.monotonic() + 10
    while any(_ns_pids(h.ns) for h in hosts) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = {h.ns: _ns_pids(h.ns) for h in hosts}
    assert not any(left.values()), f"processes left in the namespaces: {left}"


def test_two_hosts_run_the_readme_recipe(two_hosts, tmp_path, small_data):
    """Host A (node rank 0: the server and worker 0) and host B (node rank 1: workers 1 and
    2, no configuration of its own) each run the README's torchrun command; both end with 0,
    the records are complete, and the gradients of B's workers crossed the veth: B's torchrun
    printed their ready lines with the pids the server recorded, the server applied their
    gradients, and A's end of the link received at least their bytes."""
    a, b = two_hosts
    before = _counter(a, "rx_bytes")
    args = _run_args(tmp_path, small_data, "budget.gradients=400")
    procs = [_start(a, a, 0, tmp_path / "a", *args), _start(b, a, 1, tmp_path / "b")]
    outs = _finish(procs, two_hosts, HANG_GUARD_S)
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["gradients"] == 400
    events = read_events(run / "events.csv")
    assert len(events) == 400
    assert len(summary["workers"]) == 3
    assert list((tmp_path / "b").iterdir()) == []  # host B wrote nothing
    log = (run / "workers.log").read_text()
    for w, info in enumerate(summary["workers"]):
        ready = f"worker {w} (rank {w + 1}) ready: pid {info['pid']}"
        assert f"-- worker {w} (rank {w + 1}) --\n{ready}" in log, log
        assert ready in outs[0 if w == 0 else 1], outs  # on its own host's console
    per_worker = {w: 0 for w in range(3)}
    for e in events:
        per_worker[int(e["worker"])] += 1
    assert all(c > 0 for c in per_worker.values()), per_worker  # B's workers took part
    # each gradient applied from B's workers came through A's end of the veth: d values of at
    # least 4 bytes each (the link's only other traffic adds to that)
    d = np.load(small_data)["X"].shape[1]
    assert _counter(a, "rx_bytes") - before >= (per_worker[1] + per_worker[2]) * d * 4
    assert_no_workers_left(summary)
    _assert_namespaces_empty(a, b)


def test_two_hosts_with_a_rank_killed_on_b_end_cleanly(two_hosts, tmp_path, small_data):
    """SIGKILL to worker 1 (rank 2), a rank of host B, while it is connected to the server
    across the link: as on one host (test_rpc's test_torchrun_with_a_rank_killed_ends_cleanly),
    the server records the loss, the run ends like on SIGTERM with its records kept, and no
    process is left on either host."""
    a, b = two_hosts
    args = _run_args(tmp_path, small_data, "budget.gradients=1000000")
    procs = [_start(a, a, 0, tmp_path / "a", *args), _start(b, a, 1, tmp_path / "b")]
    try:
        jobs = tmp_path / "run" / "jobs.csv"
        deadline = time.monotonic() + HANG_GUARD_S
        while not (jobs.exists() and len(jobs.read_text().splitlines()) > 30):
            assert time.monotonic() < deadline, "never got going"
            assert all(p.poll() is None for p in procs), "a host ended before the kill"
            time.sleep(0.2)
        worker_pid = [
            p for p in _ns_pids(b.ns)
            if "pipeline.train" in _cmdline(p) and _env_of(p).get("RANK") == "2"
        ]  # fmt: skip
        assert len(worker_pid) == 1
        # the rank to be killed lives on B and talks to A over the link
        assert (b.addr, a.addr) in _tcp_peers(worker_pid[0])
        os.kill(worker_pid[0], signal.SIGKILL)
        outs = _finish(procs, two_hosts, HANG_GUARD_S)
    finally:
        if any(p.poll() is None for p in procs):  # a failed assertion before the end
            _kill_all(a.ns, b.ns)
            for p in procs:
                p.wait(timeout=60)
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] in ("killed", "failed"), outs[0][-3000:]
    # what ended it: B's torchrun stopping worker 2, passed on to the server (on one host the
    # server gets torchrun's SIGTERM itself)
    assert "terminated: torchrun on the host of worker 2 stopped its ranks" in outs[0], outs[0]
    assert all(p.returncode != 0 for p in procs)  # each torchrun reports its failed rank
    assert [f["worker"] for f in summary["failures"]] == [1], summary["failures"]
    assert len(read_events(run / "events.csv")) == summary["gradients"] > 0
    assert "worker 0 (rank 1) ready" in (run / "workers.log").read_text()
    assert not [p for p in worker_pid if alive(p)]
    assert_no_workers_left(summary)
    _assert_namespaces_empty(a, b)
