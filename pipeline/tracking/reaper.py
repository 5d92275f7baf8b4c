"""Runs whose process died: a RUNNING MLflow run whose process is gone (SIGKILL, a lost machine
session, the OOM killer) is marked KILLED, with the records its folder holds attached, by the
next run, sweep or ``python -m pipeline.ui`` on the store (:func:`reap_stale_runs`).

Every run (and sweep parent) records, when it is created, who runs it (:func:`process_tags`):
``process.host``, ``process.pid``, ``process.start`` (the process's start time in clock ticks
after boot, from ``/proc/<pid>/stat``), ``process.boot_id`` and, for a training run,
``records_dir`` (its output folder). A run is stale when its host is this host and its process
is gone: no process with that pid, or one that started at another time or in another boot (the
pid was reused). Runs on other hosts are left alone: whether their process lives cannot be told
from here (a container that shares a hostname with another but not its pid namespace counts as
the same host: give such containers their own hostnames). Runs without these tags (logged
before they existed) are left alone too.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from pathlib import Path

from pipeline.tracking.store import store_lock

log = logging.getLogger(__name__)

HOST, PID, START, BOOT, RECORDS_DIR = (
    "process.host",
    "process.pid",
    "process.start",
    "process.boot_id",
    "records_dir",
)
REAPED_BY = "reaped_by"
#: a run's record files, attached under ``records/`` as ``MlflowTracker.finish`` does
RECORD_FILES = ("summary.json", "history.csv", "events.csv", "jobs.csv", "workers.log",
                ".hydra/config.yaml")  # fmt: skip


def hostname() -> str:
    return socket.gethostname()


def start_ticks(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks after boot, field 22 of ``/proc/<pid>/stat``);
    None where there is no ``/proc`` or no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces or ')'
    return stat[stat.rfind(")") + 2 :].split()[19]


def boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def process_tags(records_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """The tags that say which process runs a run (and where its records go)."""
    pid = os.getpid()
    tags = {HOST: hostname(), PID: str(pid)}
    for key, value in ((START, start_ticks(pid)), (BOOT, boot_id())):
        if value is not None:
            tags[key] = value
    if records_dir is not None:
        tags[RECORDS_DIR] = str(Path(records_dir).resolve())
    return tags


def process_gone(tags: dict[str, str]) -> str | None:
    """Why the process a run's tags name is gone (None: it may be alive, or it is not on this
    host, or the tags do not say)."""
    if tags.get(HOST) != hostname():
        return None
    try:
        pid = int(tags[PID])
    except (KeyError, ValueError):
        return None
    if pid <= 0:
        return None
    if tags.get(BOOT) and boot_id() and tags[BOOT] != boot_id():
        return f"process {pid} ran before this machine rebooted"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"process {pid} is gone"
    except PermissionError:  # alive, another user's
        pass
    except OSError:
        return None
    started = start_ticks(pid)
    if tags.get(START) and started is not None and started != tags[START]:
        return f"process {pid} is gone (the pid now belongs to another process)"
    return None


def reaper_name() -> str:
    argv0 = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    module = sys.modules.get("__main__")
    spec = getattr(module, "__spec__", None)
    what = f"python -m {spec.name}" if spec is not None and spec.name else argv0
    return f"{what} (pid {os.getpid()} on {hostname()})"


def _attach_records(client, run) -> int:
    folder = run.data.tags.get(RECORDS_DIR)
    if not folder or str(run.data.params.get("tracking.artifacts", "True")).lower() == "false":
        return 0
    attached = 0
    for name in RECORD_FILES:
        f = Path(folder) / name
        if f.is_file():
            client.log_artifact(run.info.run_id, str(f), artifact_path="records")
            attached += 1
    return attached


def reap_stale_runs(client, experiment_ids: str | list[str]) -> list[str]:
    """Mark KILLED every RUNNING run of the experiment(s) whose process on this host is gone
    (:func:`process_gone`): end time now, the record files of its ``records_dir`` attached under
    ``records/``, the tag ``reaped_by`` saying which process did it, when and why; returns their
    ids. A run that another reaper ends meanwhile is left to it."""
    from mlflow.entities import RunStatus

    ids = [experiment_ids] if isinstance(experiment_ids, str) else list(experiment_ids)
    if not ids:
        return []
    running = client.search_runs(
        ids,
        filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST}` = '{hostname()}'",
        max_results=10000,
    )
    reaped = []
    for run in running:
        why = process_gone(run.data.tags)
        if why is None:
            continue
        with store_lock(client.tracking_uri):  # one reaper per run, however many start at once
            fresh = client.get_run(run.info.run_id)
            if fresh.info.status != RunStatus.to_string(RunStatus.RUNNING):
                continue  # another process ended it meanwhile
            _reap(client, fresh, why)
        reaped.append(run.info.run_id)
    return reaped


def _reap(client, run, why: str) -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    client.set_tag(run.info.run_id, REAPED_BY, f"{reaper_name()} at {now}: {why}")
    try:
        attached = _attach_records(client, run)
    except Exception as e:  # the records are a bonus; the status is what matters
        log.warning("run %s: records not attached: %s", run.info.run_id, e)
        attached = 0
    client.set_tag(run.info.run_id, "status", "killed")
    client.set_terminated(run.info.run_id, status="KILLED", end_time=int(time.time() * 1000))
    log.info(
        "MLflow run %s (%s) marked KILLED: %s; %d record file(s) attached",
        run.info.run_id,
        run.info.run_name,
        why,
        attached,
    )


def reap_quietly(client, experiment_ids: str | list[str]) -> list[str]:
    """:func:`reap_stale_runs` that never fails its caller (a run, a sweep, the UI)."""
    try:
        return reap_stale_runs(client, experiment_ids)
    except Exception as e:
        log.warning("stale MLflow runs not checked: %s: %s", type(e).__name__, e)
        return []
