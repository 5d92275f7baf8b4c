"""A private single-node SLURM cluster for the tests (``tests/study/test_slurm.py``): munged,
slurmctld and slurmd from Debian's ``munge`` and ``slurm-wlm`` packages, started as root in the
foreground under one folder (key, socket, ``slurm.conf``, state, spool, logs) and reached by the
clients through ``SLURM_CONF``; nothing under ``/etc`` is read or written. No cgroups (the
container has none): ``proctrack/linuxproc``, ``task/none``, no accounting (``sacct`` answers
"accounting storage is disabled", which submitit bypasses: it waits for each job's result file).

By hand, for a look at a failing test's cluster::

    python tests/slurm/cluster.py /tmp/slurm-here     # starts it; Ctrl-C stops it
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

#: the programs the cluster needs, and the packages that hold them
PROGRAMS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol")
PACKAGES = ("slurm-wlm", "munge")
#: the partition the cluster has (the default one)
PARTITION = "debug"
NODE = "localhost"


class ClusterError(RuntimeError):
    """The cluster cannot be installed or started here (the reason, with the daemons' logs)."""


def missing_programs() -> list[str]:
    return [p for p in PROGRAMS if shutil.which(p) is None and not Path("/usr/sbin", p).exists()]


def _which(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def install() -> None:
    """``apt-get install slurm-wlm munge`` (root, or passwordless sudo)."""
    if shutil.which("apt-get") is None:
        raise ClusterError("SLURM is not installed and there is no apt-get to install it")
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if not sudo or subprocess.run([sudo, "-n", "true"], capture_output=True).returncode:
            raise ClusterError("SLURM is not installed; not root and no passwordless sudo")
        prefix = ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        out = subprocess.run([*prefix, *cmd], capture_output=True, text=True, env=env,
                             timeout=900)  # fmt: skip
        if out.returncode != 0:
            tail = " | ".join((out.stderr or out.stdout).strip().splitlines()[-3:])
            raise ClusterError(f"{' '.join(cmd)} failed ({out.returncode}): {tail}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_hardware() -> tuple[int, int]:
    """(CPUs, RealMemory in MB) as slurmd sees them (``slurmd -C``)."""
    out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, timeout=60)
    fields = dict(f.split("=", 1) for f in out.stdout.split() if "=" in f)
    try:
        return int(fields["CPUs"]), int(fields["RealMemory"])
    except (KeyError, ValueError):
        msg = f"slurmd -C: no CPUs/RealMemory in {out.stdout!r} {out.stderr!r}"
        raise ClusterError(msg) from None


class Cluster:
    """The cluster under ``root``: :meth:`start`, :meth:`stop`; :attr:`env` is what a client
    needs (``SLURM_CONF``)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.conf = self.root / "slurm.conf"
        self.logs = self.root / "log"
        self.socket = self.root / "munge" / "munge.socket"
        self.procs: dict[str, subprocess.Popen] = {}
        self.cpus = self.memory = 0

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def _write_conf(self) -> None:
        # at least what conf/hydra/launcher/slurm.yaml asks of a job (2 CPUs, 8 GB), so that
        # its defaults run here as they are; config_overrides: slurmd takes the node as this
        # file describes it, not draining a smaller machine
        cpus, memory = _node_hardware()
        self.cpus, self.memory = max(cpus, 2), max(memory, 9 * 1024)
        r = self.root
        lines = [
            "ClusterName=asgdtest",
            f"SlurmctldHost={NODE}",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.socket}",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.logs / 'slurmctld.log'}",
            f"SlurmdLogFile={self.logs / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "SchedulerType=sched/backfill",
            "MpiDefault=none",
            "SlurmdParameters=config_overrides",
            "ReturnToService=2",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=30",
            "InactiveLimit=0",
            "MinJobAge=600",  # finished jobs stay in scontrol's view for the test's checks
            "KillWait=5",
            "Waittime=0",
            f"NodeName={NODE} NodeAddr=127.0.0.1 CPUs={self.cpus} "
            f"RealMemory={self.memory} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.logs / f"{name}.out", "ab")  # noqa: SIM115 - the daemon's, closed by stop
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                            env=self.env, start_new_session=True)  # fmt: skip
        log.close()

    def logs_tail(self, lines: int = 8) -> str:
        out = []
        for f in sorted(self.logs.glob("*")) + sorted((self.root / "munge").glob("*.log")):
            text = f.read_text(errors="replace").strip().splitlines()[-lines:]
            out.append(f"--- {f.name}: " + " | ".join(text))
        return "\n".join(out)

    def _fail(self, what: str) -> None:
        self.stop()
        raise ClusterError(f"{what} (logs in {self.root})\n{self.logs_tail()}")

    def start(self, deadline_s: float = 60) -> Cluster:
        """munged, slurmctld, slurmd; back when the node is idle, or :class:`ClusterError`
        (the daemons stopped) after ``deadline_s``."""
        if os.geteuid() != 0:
            raise ClusterError("a private SLURM needs root (slurmd runs as root)")
        missing = missing_programs()
        if missing:
            raise ClusterError(f"SLURM is not installed (no {', '.join(missing)})")
        for d in ("munge", "state", "spool", "log"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "munge", 0o700)
        self._write_conf()
        m = self.root / "munge"
        key = m / "munge.key"
        out = subprocess.run([_which("mungekey"), "--create", "--force", f"--keyfile={key}"],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        if out.returncode != 0:
            self._fail(f"mungekey failed: {out.stderr.strip()}")
        self._spawn("munged", [_which("munged"), "--foreground", "--force", f"--key-file={key}",
                               f"--socket={self.socket}", f"--pid-file={m / 'munged.pid'}",
                               f"--log-file={m / 'munged.log'}",
                               f"--seed-file={m / 'munged.seed'}"])  # fmt: skip
        end = time.monotonic() + deadline_s
        while not self.socket.exists():
            if time.monotonic() > end or self.procs["munged"].poll() is not None:
                self._fail("munged did not come up")
            time.sleep(0.2)
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i"])
        self._spawn("slurmd", [_which("slurmd"), "-D", "-N", NODE])
        while True:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    self._fail(f"{name} exited ({p.returncode})")
            state = subprocess.run(["sinfo", "-h", "-n", NODE, "-o", "%T"], capture_output=True,
                                   text=True, env=self.env, timeout=30).stdout.strip()  # fmt: skip
            if state == "idle":
                return self
            if time.monotonic() > end:
                self._fail(f"the node is not idle after {deadline_s:.0f} s (sinfo: {state!r})")
            time.sleep(0.5)

    def stop(self) -> None:
        """Cancel every job, then stop the daemons (TERM, then KILL), slurmd first."""
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--full", "--user=root"], capture_output=True,
                           env=self.env, timeout=30)  # fmt: skip
            end = time.monotonic() + 15
            while time.monotonic() < end:
                q = subprocess.run(["squeue", "-h"], capture_output=True, text=True,
                                   env=self.env, timeout=30)  # fmt: skip
                if q.returncode != 0 or not q.stdout.strip():
                    break
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.pop(name, None)
            if p is None or p.poll() is not None:
                continue
            p.terminate()
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=15)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python tests/slurm/cluster.py <folder>", file=sys.stderr)
        return 2
    cluster = Cluster(Path(argv[0]).resolve())
    try:
        cluster.start()
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"export SLURM_CONF={cluster.conf}   # partition {PARTITION}; Ctrl-C stops the cluster")
    try:
        while all(p.poll() is None for p in cluster.procs.values()):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
