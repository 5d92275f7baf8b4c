"""What every benchmark's JSON carries besides its figures: the command, the machine (CPU, cores,
memory, GPU, the load average at the start, at the end and its maximum in between), the versions
(Python, torch, numpy, torch threads), the UTC dates and the git commit.

    m = Measurement("bench_sim", argv, case="scale", params={...})
    ...  # measure
    write(out_file(a.out, "bench_sim-scale-asgd-w10000.json"), m.finish(figures, units))

A record's ``figures`` hold every number BENCHMARKS.md or README.md shows for it; ``units`` gives
the unit of each numeric key of ``figures`` (of the rows too, for a table); ``source`` is
``measured`` (a record transcribed from an older document would say so there)."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import subprocess
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SCHEMA = 1
#: the keys every record has (tests check the committed records for them)
REQUIRED = ("schema", "bench", "case", "source", "command", "params", "started_utc",
            "finished_utc", "wall_s", "machine", "software", "git", "figures", "units")  # fmt: skip
MACHINE_KEYS = ("cpu", "logical_cores", "usable_cores", "memory_gib", "gpu", "os", "load")
LOAD_KEYS = ("start", "end", "max_1min")
SOFTWARE_KEYS = ("python", "torch", "numpy", "torch_threads")


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Unix
        return []


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover - not on Linux
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:  # pragma: no cover - not on Linux
        pass
    return None


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def gpu_name() -> str | None:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:  # a broken CUDA set-up: no GPU for the record
        pass
    return None


def git_state(root: Path = ROOT) -> dict:
    """Short commit of HEAD and whether tracked files differ from it (None outside git)."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                 timeout=60)  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "--short", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def software() -> dict:
    import numpy
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "torch_threads": torch.get_num_threads(),
    }


class _LoadSampler(threading.Thread):
    """The 1-minute load average every ``every`` seconds, in the background."""

    def __init__(self, every: float):
        super().__init__(daemon=True)
        self.every = every
        self.samples: list[float] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while True:
            la = load_average()
            if la:
                self.samples.append(la[0])
            if self._stop_event.wait(self.every):
                return

    def stop(self) -> list[float]:
        self._stop_event.set()
        self.join()
        return self.samples


class Measurement:
    """Started when a benchmark starts; :meth:`finish` returns its record."""

    def __init__(self, bench: str, argv: list[str], case: str, params: dict | None = None,
                 load_every: float = 5.0):  # fmt: skip
        import time

        self.bench, self.case, self.params = bench, case, dict(params or {})
        self.command = shlex.join(["python", f"bench/{bench}.py", *argv])
        self.started = utc_now()
        self._t0 = time.monotonic()
        self.load_start = load_average()
        self.git = git_state()
        self._sampler = _LoadSampler(load_every)
        self._sampler.start()

    def finish(self, figures: dict, units: dict, git: dict | None = None) -> dict:
        import time

        samples = self._sampler.stop()
        end = load_average()
        peak = max([*samples, *(end[:1]), *(self.load_start[:1])], default=None)
        return {
            "schema": SCHEMA,
            "bench": self.bench,
            "case": self.case,
            "source": "measured",
            "command": self.command,
            "params": self.params,
            "started_utc": self.started,
            "finished_utc": utc_now(),
            "wall_s": round(time.monotonic() - self._t0, 3),
            "machine": {
                "cpu": cpu_model(),
                "logical_cores": os.cpu_count(),
                "usable_cores": usable_cores(),
                "memory_gib": memory_gib(),
                "gpu": gpu_name(),
                "os": platform.platform(),
                "load": {"start": self.load_start, "end": end, "max_1min": peak},
            },
            "software": software(),
            "git": git or self.git,
            "figures": figures,
            "units": units,
        }


def out_file(out: str | Path | None, default_name: str) -> Path:
    """``--out``: a ``.json`` path is the file itself; anything else is the folder that gets
    ``default_name`` (default: bench/results/)."""
    if out is None:
        return RESULTS / default_name
    out = Path(out)
    return out if out.suffix == ".json" else out / default_name


def write(path: Path, record: dict) -> Path:
    import json

    problems = check_record(record)
    if problems:
        raise ValueError(f"incomplete benchmark record: {'; '.join(problems)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {path}", flush=True)
    return path


def _numeric_keys(value, prefix: str = "") -> set[str]:
    """Keys of numeric leaves (rows of a list count by their own keys)."""
    keys: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, bool) or v is None or isinstance(v, str):
                continue
            if isinstance(v, (int, float)):
                keys.add(k)
            elif (
                isinstance(v, list)
                and v
                and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
            ):
                keys.add(k)
            else:
                keys |= _numeric_keys(v)
    elif isinstance(value, list):
        for v in value:
            keys |= _numeric_keys(v)
    return keys


def check_record(record: dict) -> list[str]:
    """What a record lacks: required keys, machine and software facts, a unit for each
    numeric figure. Empty when complete."""
    problems = [f"no {k!r}" for k in REQUIRED if k not in record]
    problems += [f"no machine.{k}" for k in MACHINE_KEYS if k not in record.get("machine", {})]
    load = record.get("machine", {}).get("load", {})
    problems += [f"no machine.load.{k}" for k in LOAD_KEYS if k not in load]
    problems += [f"no software.{k}" for k in SOFTWARE_KEYS if k not in record.get("software", {})]
    problems += [f"no git.{k}" for k in ("commit", "dirty") if k not in record.get("git", {})]
    units = record.get("units", {})
    numeric = sorted(_numeric_keys(record.get("figures", {})))
    problems += [f"no unit for figure {k!r}" for k in numeric if k not in units]
    return problems
