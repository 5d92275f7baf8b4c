"""Wall time of the README's test command, ``python -m pytest``, with its counts (passed, failed,
skipped, deselected, errors) and the load average while it ran (sampled every 5 seconds).

By default in a fresh ``git clone`` of the committed HEAD in a temporary folder (what a user
runs first; uncommitted changes are not in it), with the clone's own code on the path;
``--in-place`` runs it in this working tree instead. ``--marker slow`` times the slow suite
(``python -m pytest -m slow``); paths after the options narrow the run. ``--hog N`` runs N busy
processes (a CPU hog, one core each) beside the suite for its whole duration: the check that no
assertion depends on timing (the suite must pass on a loaded machine).

    python bench/bench_tests.py [--in-place] [--marker EXPR] [--hog N] [--out bench/results/]
                                [PATH ...]

Writes bench/results/bench_tests-<marker, or default>[-hog<N>][-<paths>].json (``--out``: a
``.json`` file or a folder).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._clone import clone_env, fresh_clone  # noqa: E402
from bench._meta import ROOT, Measurement, git_state, out_file, write  # noqa: E402

UNITS = {
    "seconds": "s",
    "minutes": "min",
    "pytest_seconds": "s",
    "passed": "count",
    "failed": "count",
    "skipped": "count",
    "deselected": "count",
    "errors": "count",
    "xfailed": "count",
    "xpassed": "count",
    "warnings": "count",
    "exit_code": "exit code",
}
_COUNT = re.compile(r"(\d+) (passed|failed|skipped|deselected|xfailed|xpassed|errors?|warnings?)")
_SUMMARY = re.compile(r"^=+ (.+) in ([0-9.]+)s(?: \([^)]*\))? =+$")


def parse_summary(output: str) -> dict:
    """Counts and pytest's own seconds from its last summary line (zeros where absent)."""
    counts = {k: 0 for k in ("passed", "failed", "skipped", "deselected", "errors", "xfailed",
                             "xpassed", "warnings")}  # fmt: skip
    for line in reversed(output.splitlines()):
        m = _SUMMARY.match(line.strip())
        if m:
            for n, kind in _COUNT.findall(m.group(1)):
                kind = {"error": "errors", "warning": "warnings"}.get(kind, kind)
                counts[kind] = int(n)
            return {**counts, "pytest_seconds": float(m.group(2)), "summary": line.strip("= ")}
    return {**counts, "pytest_seconds": None, "summary": None}


def default_name(marker: str | None, paths: list[str], hog: int = 0) -> str:
    name = f"bench_tests-{re.sub(r'[^A-Za-z0-9_]+', '_', marker) if marker else 'default'}"
    if hog:
        name += f"-hog{hog}"
    if paths:
        name += "-" + "-".join(re.sub(r"[^A-Za-z0-9_]+", "_", Path(x).stem) for x in paths)
    return name + ".json"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--in-place", action="store_true", help="run in this tree, not a clone")
    p.add_argument("--marker", default=None, help="pytest -m EXPR (default: the fast suite)")
    p.add_argument("--out", default=None, help="a .json file, or a folder (default bench/results)")
    p.add_argument("--hog", type=int, default=0, help="busy processes beside the suite")
    p.add_argument("paths", nargs="*", help="test paths (default: the whole suite)")
    a = p.parse_args(argv)
    cmd = [sys.executable, "-m", "pytest", *(["-m", a.marker] if a.marker else []), *a.paths]
    shown = " ".join(["python", "-m", "pytest", *cmd[3:]])
    where = "in place" if a.in_place else "fresh clone"
    m = Measurement("bench_tests", argv, a.marker or "default",
                    {"test_command": shown, "where": where, "paths": a.paths,
                     "hog": a.hog})  # fmt: skip
    tmp = None
    if a.in_place:
        cwd, env, git = ROOT, clone_env(ROOT), None
    else:
        tmp = Path(tempfile.mkdtemp(prefix="bench_tests-"))
        cwd = tmp / "clone"
        sha = fresh_clone(cwd)
        env, git = clone_env(cwd), {"commit": sha[:7], "dirty": False}
    print(f"{shown} ({where}: {cwd})", flush=True)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(a.hog)]
    try:
        t0 = time.perf_counter()
        out = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)  # fmt: skip
        seconds = time.perf_counter() - t0
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    print("\n".join(out.stdout.splitlines()[-15:]), flush=True)
    if out.returncode not in (0, 1):  # 0: passed, 1: some failed; else pytest did not run them
        print(f"error: pytest exited {out.returncode}: no record written", file=sys.stderr)
        return out.returncode
    figures = {"seconds": seconds, "minutes": seconds / 60, "exit_code": out.returncode,
               **parse_summary(out.stdout)}  # fmt: skip
    record = m.finish(figures, UNITS, git=git or git_state())
    write(out_file(a.out, default_name(a.marker, a.paths, a.hog)), record)
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
