"""The MLflow UI, checked for real: a small sweep, `mlflow server`, and headless Debian chromium.

Playwright drives Debian's ``/usr/bin/chromium`` (``.ci/run`` installs it with apt-get); the browser
that Playwright would download is never used (``playwright install`` needs the internet). With
``SWEEPS_SAVE_SCREENSHOT=1`` the screenshots go to ``docs/img/`` for the README, else to a tmp dir.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SWEEP = "digits_lr"  # digits ships with scikit-learn: no download
FAMILIES = ("fixed", "triangular")
TRIALS = 2
CHROMIUM_ARGS = [
    # Without the background-networking flags the closed network makes chromium hang on lookups.
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
VIEWPORT = {"width": 1400, "height": 900}
UI_TIMEOUT_MS = 30_000
# The run-name links of the runs list (its Run Name column has another col-id in the chart view).
RUN_NAME_LINKS = '[role="gridcell"] a[href*="/runs/"]'
# Shades per family (trials first, then re-evaluations), so blue = fixed and orange = triangular.
SHADES = {
    "fixed": ("#2272b4", "#0e538b", "#4299e0", "#8acaff", "#115026", "#3ba65e"),
    "triangular": ("#de7921", "#93320b", "#f2be88", "#be501e", "#9e102c", "#e65b77"),
}

pytestmark = pytest.mark.slow


def _missing(what: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"CI must have {what} (.ci/run installs it)")
    pytest.skip(f"{what} is not installed here")


def chromium_path() -> str:
    found = os.environ.get("SWEEPS_CHROMIUM") or shutil.which("chromium")
    if not found:
        _missing("Debian's chromium (apt-get install chromium)")
    return str(found)


@dataclass
class Sweep:
    uri: str
    experiment_id: str
    parent_id: str
    parent_name: str
    children: dict[str, Any]  # run name -> Run, every run nested under the parent

    def names(self, family: str | None = None, role: str | None = None) -> set[str]:
        return {
            name
            for name, run in self.children.items()
            if (family is None or run.data.tags.get("sweeps.family") == family)
            and (role is None or run.data.tags.get("sweeps.role") == role)
        }


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, mlflow_store: Callable[[Path], str]) -> Sweep:
    work = tmp_path_factory.mktemp("ui-sweep")
    uri = mlflow_store(work / "mlflow.db")
    sets = [
        f"search.families=[{','.join(FAMILIES)}]", f"search.trials_per_family={TRIALS}",
        "train.epochs=4", "early_stopping.grace_period=2", "reeval.seeds=2",
    ]  # fmt: skip
    args = [sys.executable, "-m", "sweeps.run", SWEEP, "--tracking-uri", uri]
    for s in sets:
        args += ["--set", s]
    proc = subprocess.run(args, cwd=work, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]

    out = load_sweep(uri)
    # What the UI checks below compare against; a sweep that made other runs fails here.
    assert out.parent_name == f"{SWEEP}-sweep"
    assert out.names(role="trial") == {f"{f}-{i:03d}" for f in FAMILIES for i in (1, 2)}
    color_by_family(out)
    return out


def load_sweep(uri: str) -> Sweep:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(SWEEP)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    (parent,) = [r for r in runs if r.data.tags.get("sweeps.role") == "sweep"]
    children = {
        r.info.run_name: r
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    return Sweep(uri, exp.experiment_id, parent.info.run_id, parent.info.run_name, children)


def color_by_family(sweep: Sweep) -> None:
    """MLflow keeps a run's colour in its `mlflow.runColor` tag (the UI's colour picker sets it)."""
    client = MlflowClient(sweep.uri)
    for family, shades in SHADES.items():
        names = sorted(sweep.names(family, "trial")) + sorted(sweep.names(family, "reeval"))
        for name, color in zip(names, shades, strict=False):
            client.set_tag(sweep.children[name].info.run_id, "mlflow.runColor", color)
    client.set_tag(sweep.parent_id, "mlflow.runColor", "#5f7281")  # the parent in grey


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


@pytest.fixture(scope="module")
def server(sweep: Sweep, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 at a free port; always stopped, children included."""
    work = tmp_path_factory.mktemp("ui-server")
    log = work / "server.log"
    port = free_port()
    cmd = [
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri", sweep.uri,
        "--artifacts-destination", str(work / "mlartifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    # The server's background job runner (huey consumers, for GenAI features) is not needed here.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log.open("w") as out:
        # Its own session: uvicorn runs as a child process, and killpg stops the whole group.
        proc = subprocess.Popen(
            cmd, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode}:\n{_tail(log)}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server: no /health on {base} within 120 s:\n{_tail(log)}")
            time.sleep(0.5)
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright Python package (the dev extra)")
    pw = sync_playwright().start()
    try:
        # Playwright gives each launch a fresh temporary profile (--user-data-dir).
        b = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
    finally:
        pw.stop()


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport=VIEWPORT)  # fresh UI state (localStorage) per test
    pg = context.new_page()
    pg.set_default_timeout(UI_TIMEOUT_MS)
    try:
        yield pg
    finally:
        context.close()


@pytest.fixture()
def shots(tmp_path: Path) -> Path:
    if os.environ.get("SWEEPS_SAVE_SCREENSHOT") == "1":
        out = REPO / "docs" / "img"
        out.mkdir(parents=True, exist_ok=True)
        return out
    return tmp_path


# -- page helpers ---------------------------------------------------------------------------------
def open_runs(page: Any, base: str, sweep: Sweep, mode: str = "TABLE") -> None:
    """The experiment's training runs (MLflow 3 opens on the GenAI overview by default)."""
    # Oldest first: the trials in order, then the re-evaluations.
    query = "workflowType=machine_learning&orderByKey=attributes.start_time&orderByAsc=true"
    query += "&compareRunsMode=CHART" if mode == "CHART" else ""
    page.goto(f"{base}/#/experiments/{sweep.experiment_id}/runs?{query}")
    page.locator(RUN_NAME_LINKS, has_text=sweep.parent_name).first.wait_for(timeout=60_000)
    close = page.locator('[data-component-id="mlflow.assistant.chat_panel.close"]')
    if close.is_visible():  # the assistant side panel would squeeze the table
        close.click()


def run_names(page: Any) -> list[str]:
    return [t.strip() for t in page.locator(RUN_NAME_LINKS).all_inner_texts()]


def expand(page: Any, sweep: Sweep) -> None:
    """Click the +/- expander in the parent's Run Name cell."""
    link = f'a[href$="/runs/{sweep.parent_id}"]'
    page.locator(f'[role="gridcell"]:has({link})').locator("button").first.click()


def wait_for_rows(page: Any, sweep: Sweep, expected: set[str]) -> list[str]:
    """Until the runs list shows exactly the parent and ``expected`` (expanding it if needed)."""
    want = {sweep.parent_name, *expected}
    deadline = time.monotonic() + UI_TIMEOUT_MS / 1000
    clicked = 0.0
    names = run_names(page)
    while not (set(names) == want and len(names) == len(want)):
        if time.monotonic() > deadline:
            pytest.fail(f"the runs list should show {sorted(want)}, but shows {names}")
        # Collapsed parent: expand it, once per 3 s so a slow re-render is not toggled back.
        if names == [sweep.parent_name] and expected and time.monotonic() - clicked > 3:
            expand(page, sweep)
            clicked = time.monotonic()
        page.wait_for_timeout(250)
        names = run_names(page)
    return names


def add_columns(page: Any, show: list[str], hide: list[str]) -> None:
    page.get_by_role("button", name="Columns").click()
    search = page.get_by_placeholder("Search columns")
    for col in [*hide, *show]:
        search.fill(col)
        page.locator(".du-bois-light-tree-title").get_by_text(col, exact=True).first.click()
    page.keyboard.press("Escape")


def apply_filter(page: Any, expr: str) -> None:
    box = page.get_by_test_id("search-box")
    box.fill(expr)
    box.press("Enter")


def widen_run_name_column(page: Any, pixels: int) -> None:
    """Drag the Run Name header's resize handle, so that `reeval-<family>-1-s<seed>` fits."""
    box = page.locator('[role="columnheader"][col-id*="Run Name"]').first.bounding_box()
    assert box is not None
    # The handle straddles the border; its right half lies under the next header (a sort click).
    x, y = box["x"] + box["width"] - 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + pixels, y, steps=5)
    page.mouse.up()


def screenshot(page: Any, path: Path, down_to: Any) -> None:
    """The top of the page, down to the lowest of the ``down_to`` elements."""
    page.wait_for_timeout(800)  # let the last re-render and chart transitions settle
    boxes = [e.bounding_box() for e in down_to.all()]
    bottom = max(b["y"] + b["height"] for b in boxes if b is not None)
    height = min(VIEWPORT["height"], int(bottom) + 24)
    clip = {"x": 0, "y": 0, "width": VIEWPORT["width"], "height": height}
    page.screenshot(path=str(path), clip=clip)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, (path, len(data))


# -- tests ----------------------------------------------------------------------------------------
def test_runs_table_nests_the_trials_under_the_parent_run(
    page: Any, server: str, sweep: Sweep, shots: Path
) -> None:
    open_runs(page, server, sweep)
    # Collapsed by default: the trials are children of the parent, not top-level runs.
    page.wait_for_timeout(1000)
    assert run_names(page) == [sweep.parent_name]
    assert page.get_by_text(f"{1 + len(sweep.children)} matching runs").is_visible()

    names = wait_for_rows(page, sweep, set(sweep.children))
    assert names[0] == sweep.parent_name  # the children are listed under their parent
    text = page.inner_text("body")
    for name in [sweep.parent_name, *sweep.children]:
        assert name in text

    add_columns(
        page,
        show=["sweeps.family", "sweeps.status", "base_lr", "final_val_acc", "test_acc"],
        hide=["Dataset", "Source", "Models"],
    )
    headers = page.locator('[role="columnheader"]').all_inner_texts()
    for col in ("sweeps.family", "sweeps.status", "final_val_acc"):
        assert col in headers, headers
    for name, run in sweep.children.items():
        row = page.locator(f'[role="row"][row-id="{run.info.run_id}"]')
        row_text = " ".join(row.all_inner_texts())
        assert run.data.tags["sweeps.family"] in row_text, (name, row_text)
        assert run.data.tags["sweeps.status"] in row_text, (name, row_text)
    widen_run_name_column(page, 60)
    screenshot(page, shots / "mlflow_ui_runs.png", down_to=page.locator('[role="row"][row-id]'))


def test_the_family_filter_shows_only_that_familys_runs(
    page: Any, server: str, sweep: Sweep
) -> None:
    triangular = sweep.names(family="triangular")
    # Otherwise the filter's assertion could not fail.
    assert triangular and triangular != set(sweep.children)
    open_runs(page, server, sweep)
    wait_for_rows(page, sweep, set(sweep.children))

    apply_filter(page, "tags.sweeps.family = 'triangular'")
    names = wait_for_rows(page, sweep, triangular)
    assert not set(names) & sweep.names(family="fixed"), names
    assert "searchFilter=tags.sweeps.family" in page.url  # the filter is shareable as a link


def test_chart_view_compares_the_trials_val_acc_curves(
    page: Any, server: str, sweep: Sweep, shots: Path
) -> None:
    trials = sweep.names(role="trial")
    others = set(sweep.children) - trials  # the re-evaluation runs
    open_runs(page, server, sweep, mode="CHART")
    apply_filter(page, "tags.sweeps.role = 'trial'")
    wait_for_rows(page, sweep, trials)
    page.get_by_placeholder("Search metric charts").fill("val_acc")
    # The parent's sections (best_val_acc/<family>, data/...) come first: fold all but ours.
    header = page.get_by_test_id("experiment-view-compare-runs-section-header")
    header.filter(has_text="Model metrics").first.wait_for()
    unfolded = page.locator('[role="button"][aria-expanded="true"]').filter(has=header)
    others_unfolded = unfolded.filter(has_not_text="Model metrics")
    for _ in range(20):  # folding one can bring the next (lazily rendered) section into view
        if not others_unfolded.count():
            break
        others_unfolded.first.click()
        page.wait_for_timeout(200)

    cards = page.get_by_test_id("experiment-view-compare-runs-card")
    card = cards.filter(has=page.get_by_text("val_acc", exact=True))
    card.first.wait_for()
    assert card.count() == 1
    legend = card.first.text_content() or ""
    assert "Step" in legend  # a line chart over epochs, not a bar of the last value
    for name in trials:
        assert f"{name} (val_acc)" in legend, legend
    for name in others:
        assert name not in legend, legend
    # Drag the card's corner: a wider chart, with room for its legend.
    box = card.first.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] - 4, box["y"] + box["height"] - 4)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] + 260, box["y"] + box["height"] + 60, steps=8)
    page.mouse.up()
    screenshot(page, shots / "mlflow_ui_chart.png", down_to=card)
