"""The MLflow UI: ``python -m pipeline.ui`` opens the store training wrote to, and a sweep can be
compared in a real headless Chromium (Debian's ``chromium``, driven by Playwright)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from models import datasets
from pipeline import PROJECT_ROOT
from pipeline.tracking import STORE_LOCATION, client_for
from tests.conftest import run_cli

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
SCREENSHOTS = PROJECT_ROOT / "docs"  # the README's mlflow_compare.png, mlflow_sweep_parent.png
UPDATE_SCREENSHOT = "ASGD_UPDATE_SCREENSHOTS"  # set to 1 to refresh them (else: tmp only)


def ui(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m pipeline.ui`` as a user types it, from ``cwd``, with this checkout's code."""
    full_env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **(env or {})}
    if not env or "MLFLOW_TRACKING_URI" not in env:  # the suite points it at a temp store
        full_env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "pipeline.ui", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def store_of(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 0, out.stderr
    return re.search(r"^store: (\S+)$", out.stdout, re.M).group(1)


def test_ui_opens_the_store_training_uses(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # the default store is the project's mlflow.db by absolute path, wherever it is typed
    default = store_of(ui("--print-only", cwd=elsewhere))
    assert default == f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"
    assert not (elsewhere / "mlflow.db").exists()
    # MLFLOW_TRACKING_URI (a relative sqlite path: from where it is typed) and tracking.uri
    env = {"MLFLOW_TRACKING_URI": "sqlite:///runs/mlflow.db"}
    assert store_of(ui("--print-only", cwd=elsewhere, env=env)) == (
        f"sqlite:///{elsewhere / 'runs' / 'mlflow.db'}"
    )
    uri = f"sqlite:///{tmp_path / 'other.db'}"
    out = ui("--print-only", f"tracking.uri={uri}", "--port", "5123", cwd=elsewhere, env=env)
    assert store_of(out) == uri
    assert f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5123" in out.stdout
    # a store that does not exist is refused, and not created
    out = ui(f"tracking.uri={uri}", cwd=elsewhere)
    assert out.returncode == 1 and "no MLflow store at" in out.stderr
    assert not (tmp_path / "other.db").exists()
    out = ui("tracking.nope=1", cwd=elsewhere)
    assert out.returncode == 2 and "only tracking.uri" in out.stderr


def test_help_says_where_the_store_is(tmp_path):
    """--help names the store in the one sentence the code keeps (STORE_LOCATION), on a line of
    its own; the test above checks that it is what resolve_uri does."""
    out = ui("--help", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"  {STORE_LOCATION}." in out.stdout.splitlines()


def test_ui_marks_runs_of_dead_processes_killed(tmp_path):
    """Before the server starts, a RUNNING run whose process is gone is marked KILLED with its
    records attached, and said so; a run whose process lives is left RUNNING."""
    from pipeline.tracking import ensure_experiment, process_tags
    from pipeline.tracking.reaper import PID, REAPED_BY, START, start_ticks

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = client_for(uri)
    exp = ensure_experiment(client, "async-sgd")
    (tmp_path / "history.csv").write_text("update,loss\n0,1.0\n")
    gone = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        while (started := start_ticks(gone.pid)) is None:
            time.sleep(0.05)
    finally:
        gone.kill()
        gone.wait()
    dead = client.create_run(exp, run_name="dead run", tags={
        **process_tags(tmp_path), PID: str(gone.pid), START: started}).info.run_id  # fmt: skip
    alive = client.create_run(exp, run_name="live run", tags=process_tags()).info.run_id
    server, port, log = _start_ui(uri, tmp_path)
    try:
        deadline = time.monotonic() + 240
        while not re.search(r"^open: ", log.read_text(), re.M):  # printed once it has reaped
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
    finally:
        _stop(server)
    text = log.read_text()
    run = client.get_run(dead)
    assert run.info.status == "KILLED"
    assert f"marked KILLED: dead run ({dead}): {run.data.tags[REAPED_BY]}" in text.splitlines()
    assert run.data.tags[REAPED_BY].startswith("python -m pipeline.ui (pid ")
    assert {a.path for a in client.list_artifacts(dead, "records")} == {"records/history.csv"}
    assert client.get_run(alive).info.status == "RUNNING" and "live run" not in text
    client.set_terminated(alive, "FINISHED")


# ------------------------------------------------------------------------------- the browser


@pytest.fixture(scope="module")
def browser_path() -> str:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("no browser driver: pip install playwright (the dev extra has it)")
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    pytest.skip("no headless browser: install Debian's chromium (apt-get install -y chromium)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_ui(uri: str, tmp_path: Path) -> tuple[subprocess.Popen, int, Path]:
    """``python -m pipeline.ui`` on ``uri`` and a free port, its output in ``ui.log``."""
    port = _free_port()
    log = tmp_path / "ui.log"
    with open(log, "w") as f:
        server = subprocess.Popen(
            [sys.executable, "-m", "pipeline.ui", f"tracking.uri={uri}", "--port", str(port)],
            cwd=PROJECT_ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    return server, port, log


def _wait_healthy(port: int, server: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                if r.read().strip() == b"OK":
                    return
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"mlflow ui did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def _stop(server: subprocess.Popen) -> None:
    """The server and everything it started (its own session) are gone, in every case."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _panels(page) -> dict[str, int]:
    """Chart sections on the page and their number of panels: {"curves": 3, ...}."""
    text = page.locator("body").inner_text()
    return {m[1]: int(m[2]) for m in re.finditer(r"^([\w /]+?)\s*\((\d+)\)$", text, re.M)}


@pytest.mark.slow
def test_compare_a_sweep_in_the_mlflow_ui(tmp_path, browser_path):
    """A new user's path: a sweep, `python -m pipeline.ui`, the runs page in Chromium, the sweep's
    children in the chart view (curves first), a child's chart view with its suboptimality
    panel, the parent's comparison artifacts."""
    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep_name = "compare sqrt"
    data = datasets.build("lstsq_paper", tmp_path / "lstsq_paper.npz", seed=0)  # the paper's
    out = run_cli(
        "-m", "optimizer=minibatch,asgd,asgd_adaptive,rennala", "topology=sqrt",
        "topology.n_workers=16", f"dataset.path={data}",
        "budget.gradients=4000", "target=0.01", f"tracking.sweep_name={sweep_name}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}", "progress=off",
        env={"MLFLOW_TRACKING_URI": uri},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    client = client_for(uri)
    exp_id = client.get_experiment_by_name("async-sgd").experiment_id
    (parent,) = client.search_runs([exp_id], "tags.sweep = 'parent'")
    assert parent.info.run_name == sweep_name
    children = client.search_runs([exp_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    names = sorted(c.info.run_name for c in children)
    assert len(names) == 4 and all(" sqrt n=16 lr=" in n for n in names)
    swept = time.monotonic()

    server, port, log = _start_ui(uri, tmp_path)
    try:
        _wait_healthy(port, server, log)
        served = time.monotonic()
        url = re.search(r"^open: (\S+)$", log.read_text(), re.M).group(1)
        assert url == (
            f"http://127.0.0.1:{port}/#/experiments/{exp_id}/runs?workflowType=machine_learning"
        )
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=browser_path, headless=True,
                                         args=["--no-sandbox", "--disable-gpu"])  # fmt: skip
            try:
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                page.set_default_timeout(90_000)
                # the printed address: the experiment's runs ("Model training"), the parent
                page.goto(url)
                page.get_by_text(sweep_name, exact=True).wait_for()
                # the same from the home page, as a user who opens the bare address clicks
                page.goto(f"http://127.0.0.1:{port}/")
                page.get_by_role("button", name="Model training", exact=True).click()
                page.get_by_role("link", name="async-sgd", exact=True).click()
                page.get_by_text(sweep_name, exact=True).wait_for()
                assert page.url.startswith(url)
                assistant = page.get_by_role("button", name="Close")
                if assistant.count():
                    assistant.first.click()  # the assistant panel takes a third of the page
                # expand the parent: its children, by name
                page.locator('button[data-component-id*="runnamecellrenderer"]').first.click()
                for name in names:
                    page.get_by_text(name, exact=True).first.wait_for()
                html = page.content()
                assert all(name in html for name in names)
                # the chart view: the curves first, one line per child
                page.locator('label:has(input[name="runs-view-mode"][value="CHART"])').click()
                page.get_by_text("curves/suboptimality", exact=True).first.wait_for()
                sections = _panels(page)
                assert list(sections)[0] == "curves", sections
                page.wait_for_function(  # the plots are drawn: a line per child and chart
                    "() => document.querySelectorAll('.js-plotly-plot').length >= 3 &&"
                    f" document.querySelectorAll('.js-plotly-plot path.js-line').length >= {3 * 4}"
                )
                page.wait_for_timeout(500)
                shot = tmp_path / "mlflow_compare.png"
                page.screenshot(path=str(shot))
                assert shot.stat().st_size > 20_000
                # a child's own chart view: its suboptimality panel, among a handful
                page.get_by_role("link", name=names[0], exact=True).first.click()
                page.get_by_role("tab", name="Model metrics").click()
                page.wait_for_url(re.compile(r"/model-metrics"))
                page.get_by_text("suboptimality", exact=True).first.wait_for()
                panels = _panels(page)
                assert list(panels)[0] == "curves" and panels["curves"] == 3, panels
                child_panels = sum(panels.values())
                assert child_panels <= 16, panels  # was 39
                # the parent (the child's overview links it): its comparison figure and table
                page.get_by_role("tab", name="Overview").click()
                page.get_by_role("link", name=sweep_name, exact=True).first.click()
                page.get_by_role("tab", name="Artifacts").click()
                page.get_by_text("comparison.csv", exact=True).first.wait_for()
                page.get_by_text("comparison.png", exact=True).first.click()
                page.wait_for_function(  # the figure is drawn, not just listed
                    "() => [...document.images].some(i => i.src.startsWith('blob:')"
                    " && i.complete && i.naturalWidth >= 1000)"
                )
                parent_shot = tmp_path / "mlflow_sweep_parent.png"
                page.screenshot(path=str(parent_shot))
            finally:
                browser.close()
    finally:
        _stop(server)
    assert server.poll() is not None
    if os.environ.get(UPDATE_SCREENSHOT):
        shutil.copyfile(shot, SCREENSHOTS / "mlflow_compare.png")
        shutil.copyfile(parent_shot, SCREENSHOTS / "mlflow_sweep_parent.png")
    done = time.monotonic()
    print(
        f"\nsweep {swept - started:.1f} s, server up {served - swept:.1f} s, browser "
        f"{done - served:.1f} s; a child's chart view: {child_panels} panels {panels}"
    )
