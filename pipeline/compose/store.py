"""Where the MLflow store is (``STORE_LOCATION``: ``tracking.uri``, else ``$MLFLOW_TRACKING_URI``,
else the project's ``mlflow.db``) and whether it can be opened, checked before any run starts
(:func:`check_store`, called by the preflight). No MLflow here: the tracking layer
(:mod:`pipeline.tracking.store`) opens the store; this module only says where it is and refuses,
in one line, a store that cannot be created or reached."""

from __future__ import annotations

import os
import socket
import sqlite3
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from pipeline import PROJECT_ROOT, ConfigError

URI_ENV = "MLFLOW_TRACKING_URI"
CONNECT_TIMEOUT_S = 3.0  # a tracking server that does not answer a TCP connect in this is refused


def resolve_uri(uri: str | None = None) -> str:
    """The store the runs go to (``STORE_LOCATION``: ``uri``, else ``$MLFLOW_TRACKING_URI``, else
    the project's ``mlflow.db``); a relative sqlite path is made absolute (from the working
    directory)."""
    uri = uri or os.environ.get(URI_ENV) or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"
    db = sqlite_path(uri)
    if db is not None and not db.is_absolute():
        uri = f"sqlite:///{db.resolve()}"
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other stores and in-memory)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def _why(e: OSError) -> str:
    return e.strerror or str(e) or type(e).__name__


def _writable_folder(folder: Path) -> str | None:
    """Why files cannot be created in ``folder`` (created for the probe if missing, and removed
    again with any parent the probe created), or None when they can."""
    missing = []
    p = folder
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    if p.exists() and not p.is_dir():
        return f"{p} is not a folder"
    created: list[Path] = []
    try:
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:  # another process made it meanwhile
                continue
            except OSError as e:
                return f"cannot create the folder {d} ({_why(e)})"
            created.append(d)
        try:
            fd, probe = tempfile.mkstemp(prefix=".store-probe-", dir=folder)
        except OSError as e:
            return f"cannot write in {folder} ({_why(e)})"
        os.close(fd)
        os.unlink(probe)
        return None
    finally:
        for d in reversed(created):  # leave the disk as it was: the run creates the store
            try:
                d.rmdir()
            except OSError:
                pass


def _sqlite_problem(db: Path) -> str | None:
    if db.exists():
        if db.is_dir():
            return f"{db} is a folder, not a database file"
        try:
            con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
            try:
                con.execute("PRAGMA schema_version").fetchone()
            finally:
                con.close()
        except sqlite3.DatabaseError as e:
            if "locked" not in str(e):  # a busy store is a store
                return f"{db} is not an sqlite database ({e})"
        if not os.access(db, os.R_OK | os.W_OK):
            return f"{db} cannot be written (permission denied)"
    return _writable_folder(db.parent)  # journal, lock file and mlartifacts/ go beside it


def _host_port(uri: str, default_port: int) -> tuple[str | None, int]:
    parts = urlsplit(uri)
    return parts.hostname, parts.port or default_port


def _server_problem(uri: str, timeout: float) -> str | None:
    """Why a TCP connection to the tracking server (or to the proxy the environment names for
    it, as MLflow's requests would use) cannot be made within ``timeout`` seconds."""
    from urllib.request import getproxies, proxy_bypass

    scheme = urlsplit(uri).scheme
    try:
        host, port = _host_port(uri, 443 if scheme == "https" else 80)
    except ValueError as e:
        return f"bad port ({e})"
    if not host:
        return "no host in the address"
    via = ""
    proxy = getproxies().get(scheme)
    if proxy and not proxy_bypass(host):
        try:
            host, port = _host_port(proxy if "://" in proxy else f"http://{proxy}", 80)
        except ValueError as e:
            return f"bad port in the proxy {proxy} ({e})"
        if not host:
            return f"no host in the proxy {proxy}"
        via = f" (the proxy of ${scheme}_proxy)"
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except socket.gaierror as e:
        return f"cannot resolve the host {host}{via} ({e.strerror or e})"
    except TimeoutError:
        return f"no answer from {host}:{port}{via} within {timeout:g} s"
    except OSError as e:
        return f"cannot connect to {host}:{port}{via} ({_why(e)})"


def check_store(uri: str | None, timeout: float = CONNECT_TIMEOUT_S) -> str:
    """The resolved store of ``uri`` (``tracking.uri``; None: ``$MLFLOW_TRACKING_URI`` or the
    default), refused with a one-line ConfigError when it cannot be created or opened: a sqlite
    file whose folder cannot be created or written, a file that is not a database, a tracking
    server that does not accept a connection within ``timeout`` seconds. Other kinds of store
    (``file:``, databases) are left to MLflow."""
    resolved = resolve_uri(uri)
    source = "tracking.uri" if uri else (f"${URI_ENV}" if os.environ.get(URI_ENV) else "default")
    db = sqlite_path(resolved)
    problem = None
    if db is not None:
        problem = _sqlite_problem(db)
    elif resolved.startswith(("http://", "https://")):
        problem = _server_problem(resolved, timeout)
    elif resolved.startswith("file:") or "://" not in resolved:
        path = Path(urlsplit(resolved).path if resolved.startswith("file:") else resolved)
        if path.exists() and not path.is_dir():
            problem = f"{path} is not a folder"
        else:
            problem = _writable_folder(path)
    if problem:
        raise ConfigError(f"the MLflow store {resolved} ({source}) cannot be used: {problem}")
    return resolved
