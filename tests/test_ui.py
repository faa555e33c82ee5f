"""The Dagster UI path, proven in a real browser: ``dagster dev`` driven by Debian's ``chromium`` through Playwright.

What a person does after ``hotdog plan``, click by click, on a fresh ``DAGSTER_HOME`` and ``HOTDOG_HOME``:
the lineage shows every asset (the dbt models among them); the automation sensor is switched off so
only clicks materialise anything; ``raw_images`` and ``image_embeddings`` are materialised for one
partition from their asset pages; a backfill of every partition is launched from the ``ingest_batch``
job; the whole set is materialised from the lineage with the selection the README documents, on a home
where nothing downstream has run; ``image_quality``'s and ``duplicate_groups``' latest materialisations
show their counts per reason and the contact sheets render; every asset check shows as passed, the dbt
tests among them; and the ``hotdog search --html`` gallery opens in the same browser with every
thumbnail loaded and nothing pointing outside the page. Every run is waited on in the UI and
cross-checked in the Dagster instance.

Each step's time is printed, and a screenshot of each step is saved to ``$HOTDOG_SCREENSHOTS`` when set,
else to ``screenshots/`` under pytest's temporary directory (the path is printed); a failing step saves
``NN-step-FAILED.png`` too. ``dagster dev`` runs in its own process group with a marker in its
environment; it is stopped at the end, also when the test fails, and the test checks that no process
and no listening port is left. Run it alone with ``python -m pytest -m ui -s``;
``HOTDOG_UI_PARTITION_SIZE`` (default 30) sets the images per sketch partition, for timing larger ones.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml
from browser_env import CHROMIUM, browser_required, sync_api

from hotdog_dagster.core.model.sketch import draw
from hotdog_dagster.dbt_project import prepare_dbt
from hotdog_dagster.definitions import WHOLE_SET, defs
from hotdog_dagster.local_cluster import MARKER, free_port, marked_processes
from hotdog_dagster.pipeline import failure_message

pytestmark = [
    pytest.mark.ui,
    pytest.mark.slow,
    browser_required("UI test"),
]

REPO = Path(__file__).resolve().parents[1]
#: The whole-set selection the README documents for the UI's lineage and ``dagster asset materialize``.
WHOLE_SET_SELECTION = "(key:image_index or key:duplicate_groups)+ and not group:walk"
PARTITION_SIZE = int(os.environ.get("HOTDOG_UI_PARTITION_SIZE", "30"))
SKETCH_IMAGES = 2 * PARTITION_SIZE
#: Drawn images written twice into a folder batch, so duplicate groups (and their contact sheet) exist.
COPIED = 6
#: Bounds on waits, so a broken UI fails with its log instead of hanging CI; not speed claims.
UI_TIMEOUT_MS = 60_000
RUN_TIMEOUT_S = 600
SERVER_TIMEOUT_S = 240
STOP_TIMEOUT_S = 60
#: The viewport at which the whole expanded lineage is drawn (the graph only draws nodes in view).
TALL = {"width": 1800, "height": 2400}
NORMAL = {"width": 1400, "height": 1000}

GRAPH = defs.resolve_asset_graph()
ALL_ASSETS = sorted(k.to_user_string() for k in GRAPH.get_all_asset_keys())
DBT_MODELS = sorted(k.to_user_string() for k in GRAPH.get_all_asset_keys() if "dbt" in GRAPH.get(k).kinds)
WHOLE_SET_ASSETS = sorted(k.to_user_string() for k in WHOLE_SET.resolve(GRAPH))
CHECKS: dict[str, list[str]] = {}
for _check in GRAPH.asset_check_keys:
    CHECKS.setdefault(_check.asset_key.to_user_string(), []).append(_check.name)


# -- dagster dev in its own process group ----------------------------------------------------------


def _nothing_listens(port: int) -> bool:
    """No server accepts on the port (a bind test would trip over connections in TIME_WAIT)."""
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) != 0


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of the group exists (as another user)
        return True
    return True


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class DagsterDev:
    """``dagster dev`` on a free loopback port; ``with`` stops it, its children and their children."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.port = free_port()
        self.marker = env[MARKER]
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> DagsterDev:
        cmd = [sys.executable, "-m", "dagster", "dev", "-w", str(REPO / "workspace.yaml")]
        cmd += ["-h", "127.0.0.1", "-p", str(self.port)]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                cmd,
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the whole tree is stopped at once
                # a shell's background job ignores SIGINT, and Python then ignores it (and dagster dev
                # SIGTERM) for good: give it back the default, so the graceful stop below works
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )
        try:
            self._wait_until_serving()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_serving(self) -> None:
        deadline = time.monotonic() + SERVER_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dagster dev exited with code {self.proc.returncode}:\n{_tail(self.log)}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.base}/server_info", timeout=5) as r:
                if r.status == 200:
                    return
            time.sleep(1)
        raise RuntimeError(f"dagster dev did not serve in {SERVER_TIMEOUT_S} s:\n{_tail(self.log)}")

    def stop(self) -> None:
        """Ctrl-C as a person would (dagster dev stops the webserver, daemon and code server), then kill."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=STOP_TIMEOUT_S)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.5)
        if _group_alive(pgid):
            print(f"dagster dev's process group {pgid} outlived Ctrl-C by {STOP_TIMEOUT_S} s: killed")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        for pid in marked_processes(self.marker):  # anything that left the group but kept the marker
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=STOP_TIMEOUT_S)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None:
            print(f"dagster dev's log ({self.log}), last lines:\n{_tail(self.log)}")
        self.stop()


# -- steps, timings and screenshots ----------------------------------------------------------------


class Steps:
    """Times each step, prints it, and screenshots its end (or its failure)."""

    def __init__(self, page, shots: Path) -> None:
        self.page, self.shots = page, shots
        self.times: dict[str, float] = {}
        self.notes: dict[str, str] = {}

    def shot(self, name: str) -> None:
        with contextlib.suppress(Exception):  # a screenshot must never hide the real failure
            self.page.screenshot(path=str(self.shots / name), full_page=False)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        n = len(self.times) + 1
        start = time.monotonic()
        print(f"step {n} {name} ...", flush=True)
        try:
            yield
        except BaseException:
            self.times[name] = time.monotonic() - start
            self.shot(f"{n:02d}-{name}-FAILED.png")
            print(f"step {n} {name}: FAILED after {self.times[name]:.1f} s", flush=True)
            raise
        self.times[name] = time.monotonic() - start
        self.shot(f"{n:02d}-{name}.png")
        note = f" ({self.notes[name]})" if name in self.notes else ""
        print(f"step {n} {name}: {self.times[name]:.1f} s{note}", flush=True)

    def report(self) -> str:
        lines = [f"  {name:<28} {secs:6.1f} s  {self.notes.get(name, '')}" for name, secs in self.times.items()]
        return "time per step:\n" + "\n".join(lines)


# -- the UI, as a person uses it -------------------------------------------------------------------


def named(text: str) -> re.Pattern:
    """An accessible name ending in ``text``: Dagster's buttons and links put their icon's name first."""
    return re.compile(rf"(^|\s){re.escape(text)}$")


def nav(page, name: str) -> None:
    """Click an entry of the left navigation."""
    page.get_by_role("link", name=named(name)).first.click()


def nux_skip(page):
    """The Skip button of Dagster's first-visit dialog ("Join the Dagster community"), once per DAGSTER_HOME."""
    return page.get_by_role("dialog").filter(has_text="Join the Dagster community").get_by_role("button", name="Skip")


def launched_run(page) -> str:
    """The short run id of the toast Dagster shows after a launch."""
    toast = page.get_by_text(re.compile(r"Launched run [0-9a-f]{8}"))
    toast.wait_for()
    return re.search(r"Launched run ([0-9a-f]{8})", toast.inner_text()).group(1)


def full_run_id(instance: dg.DagsterInstance, short: str) -> str:
    ids = [r.run_id for r in instance.get_runs() if r.run_id.startswith(short)]
    assert len(ids) == 1, f"run {short}: {ids}"
    return ids[0]


def wait_for_run_in_ui(page, base: str, short: str, instance: dg.DagsterInstance) -> tuple[str, float]:
    """Open the run from the Runs list and wait until its status tag says Success (fail on anything else).

    Returns the run id and the wall-clock time the UI showed Success.
    """
    page.goto(f"{base}/runs")
    page.get_by_role("link", name=named(short)).first.click()
    page.wait_for_url(re.compile(rf"/runs/{short}"))
    done = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$"))
    done.first.wait_for(timeout=RUN_TIMEOUT_S * 1000)
    seen = time.time()
    status = done.first.inner_text().strip()
    run_id = full_run_id(instance, short)
    if status != "Success":
        pytest.fail(f"run {short} ended {status} in the UI: {failure_message(instance, run_id)}")
    run = instance.get_run_by_id(run_id)
    assert run.status == dg.DagsterRunStatus.SUCCESS, (short, run.status)
    return run_id, seen


def where_the_time_went(instance: dg.DagsterInstance, run_id: str, clicked: float, seen: float) -> str:
    """Click to done, split by the run's own timestamps: launch (the click to the run's enqueueing; for a
    backfill, until the backfill daemon created the run), queue, the run process's start and code load,
    the steps (and the slowest), and how much later the UI showed it done (for a backfill, the backfill
    daemon marks it complete on its next pass)."""
    stats = instance.get_run_stats(run_id)
    steps = {
        r.dagster_event.step_key: r.dagster_event.event_specific_data.duration_ms / 1000
        for r in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
    }
    slowest = max(steps, key=steps.get) if steps else "-"
    parts = [
        f"click to done {seen - clicked:.1f} s",
        f"launch {stats.enqueued_time - clicked:.1f}",
        f"queue {stats.launch_time - stats.enqueued_time:.1f}",
        f"process start and code load {stats.start_time - stats.launch_time:.1f}",
        f"steps {stats.end_time - stats.start_time:.1f} ({slowest} {steps.get(slowest, 0):.1f})",
        f"shown done {seen - stats.end_time:.1f} later",
    ]
    return ", ".join(parts)


def sensor_states(instance: dg.DagsterInstance) -> dict[str, str]:
    return {s.instigator_name: s.status.value for s in instance.all_instigator_state()}


def materialize_partition_from_asset_page(page, base: str, asset: str, partition: str) -> float:
    """Asset page, Materialize, confirm the multi-asset's other tables, one partition, Launch 1 run.

    Returns the wall-clock time of the click.
    """
    page.goto(f"{base}/assets/{asset}")
    page.get_by_role("button", name=named("Materialize…")).click()
    # raw_images and image_embeddings write several tables and cannot be subset: the UI says so
    extra = page.get_by_role("dialog").filter(has_text="Additional assets will be materialized")
    extra.get_by_role("button", name="Confirm").click()
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
    dialog.get_by_text("Select a partition or create one").click()
    page.get_by_role("menuitem").filter(has_text=partition).click()  # keys are fixed-width: unique
    page.keyboard.press("Escape")  # closes the partition list, not the dialog
    dialog.get_by_text("1 partition", exact=True).wait_for()
    launch = dialog.get_by_role("button", name=named("Launch 1 run"))
    clicked = time.time()
    launch.click()
    return clicked


#: The text of the status tag beside the backfill page's "Status" label (its runs table has a "Succeeded"
#: column header too, so the tag is found from its label).
BACKFILL_STATUS_JS = """() => {
    const label = [...document.querySelectorAll('*')].find(
        e => e.children.length === 0 && e.textContent.trim() === 'Status');
    if (!label) return '';
    let box = label.parentElement;
    while (box && box.innerText.trim() === 'Status') box = box.parentElement;
    return box ? box.innerText.replace('Status', '').trim().split('\\n')[0].trim() : '';
}"""


def open_latest_materialization(page, base: str, asset: str, instance: dg.DagsterInstance):
    """The asset's Events tab, whose first (selected) event is the latest materialisation; returns it."""
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    page.goto(f"{base}/assets/{asset}")
    page.get_by_role("tab", name="Events").click()
    page.get_by_text(re.compile(r"materialized in run", re.I)).first.wait_for()
    page.get_by_role("link", name=named(event.run_id[:8])).first.wait_for()
    return event.asset_materialization


def metadata_row(page, key: str):
    """The row of an asset event's metadata table whose first cell is ``key``."""
    return page.get_by_role("row").filter(has=page.get_by_role("cell", name=key, exact=True)).first


def images_loaded(page, scope: str) -> list[list]:
    """[src prefix, complete, naturalWidth] of every image under ``scope`` (a CSS selector)."""
    return page.eval_on_selector_all(
        f"{scope} img", "imgs => imgs.map(i => [i.src.slice(0, 40), i.complete, i.naturalWidth])"
    )


def show_sheets(page, steps, asset: str, sheets: list[str]) -> None:  # noqa: ANN001 - Playwright page, Steps
    """Open each contact sheet's Markdown in the UI; every image in it must load with a non-zero width."""
    for key in sheets:
        metadata_row(page, key).get_by_text("[Show Markdown]").click()
        shown = page.get_by_role("dialog").filter(has_text=key)
        shown.locator("img").first.wait_for()
        page.wait_for_function(
            "() => { const imgs = [...document.querySelectorAll('[role=dialog] img')];"
            " return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0); }"
        )
        loaded = images_loaded(page, "[role=dialog]")
        assert loaded and all(ok and width > 0 for _, ok, width in loaded), loaded
        page.wait_for_timeout(600)  # the dialog fades in: let the screenshot show it, not the fade
        steps.shot(f"{len(steps.times) + 1:02d}-{asset}-{key}.png")
        shown.get_by_role("button", name="Close").click()
        shown.wait_for(state="hidden")


# -- the test --------------------------------------------------------------------------------------


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    out = Path(os.environ.get("HOTDOG_SCREENSHOTS") or tmp_path / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    print(f"screenshots: {out}")
    return out


def _env(tmp_path: Path) -> dict[str, str]:
    profile = {
        # the shipped sketch model, small drawings, no DataLoader worker processes: a test-sized profile
        "model": {"batch_size": 32, "num_workers": 0},
        "ingest": {"workers": 2, "sketch_size": 64},
        # the batch schedule must not start runs by itself during the test: only at 00:00 UTC on 1 January
        "scale": {"schedule_cron": "0 0 1 1 *"},
    }
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump(profile))
    env = {k: v for k, v in os.environ.items() if k not in ("HOTDOG_CONFIG", "DAGSTER_HOME", "HOTDOG_HOME")}
    env.update(
        HOTDOG_HOME=str(tmp_path / "hotdog_home"),
        DAGSTER_HOME=str(tmp_path / "dagster_home"),
        HOTDOG_CONFIG=str(tmp_path / "profile.yaml"),
        **{MARKER: uuid.uuid4().hex},
    )
    Path(env["DAGSTER_HOME"]).mkdir(parents=True)
    return env


def _hotdog(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "hotdog_dagster.cli", *args], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, f"hotdog {' '.join(args)}: {done.stderr[-3000:]}"
    return done.stdout


def _plan(env: dict[str, str], tmp_path: Path) -> list[str]:
    """Two sketch partitions and a folder batch holding each of a few drawings twice (identical bytes)."""
    folder = tmp_path / "copies"
    for sub in ("a", "b"):
        (folder / sub).mkdir(parents=True)
    for i in range(COPIED):
        draw(7, i, size=64).image.save(folder / "a" / f"{i}.png")
        shutil.copyfile(folder / "a" / f"{i}.png", folder / "b" / f"{i}.png")
    out = _hotdog(
        env, "plan", "--source", "sketch", "--images", str(SKETCH_IMAGES), "--partition-size", str(PARTITION_SIZE)
    )
    out += _hotdog(env, "plan", "--source", "folder", "--path", str(folder))
    return [line.split("\t")[0] for line in out.splitlines() if line.strip()]


def test_the_dagster_ui_path_in_a_browser(tmp_path: Path, shots: Path) -> None:
    readme = (REPO / "README.md").read_text()
    assert WHOLE_SET_SELECTION in readme, "the README must document the whole-set selection the UI is given"
    assert sorted(k.to_user_string() for k in dg.AssetSelection.from_string(WHOLE_SET_SELECTION).resolve(GRAPH)) == (
        WHOLE_SET_ASSETS
    )
    assert DBT_MODELS and set(DBT_MODELS) < set(ALL_ASSETS)

    env = _env(tmp_path)
    prepare_dbt()  # the manifest the definitions load (dagster dev also prepares it in dev)
    partitions = _plan(env, tmp_path)
    assert len(partitions) == 3, partitions
    first = partitions[0]

    server = DagsterDev(env, tmp_path / "dagster-dev.log")
    instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
    try:
        with server, sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport=NORMAL)
            page.set_default_timeout(UI_TIMEOUT_MS)
            steps = Steps(page, shots)
            base = server.base
            try:
                _ui_path(page, steps, base, instance, partitions, first, tmp_path, env)
            finally:
                print(steps.report())
                print(f"screenshots: {shots}")
                browser.close()
    finally:
        instance.dispose()
    # stopped: no process of the tree, and nothing listening on the port
    assert not _group_alive(server.proc.pid), f"process group {server.proc.pid} still alive"
    assert marked_processes(server.marker) == []
    assert _nothing_listens(server.port), f"port {server.port} still accepts connections"


def _ui_path(page, steps: Steps, base: str, instance, partitions, first, tmp_path: Path, env) -> None:
    with steps.step("lineage"):
        # on a fresh DAGSTER_HOME, Dagster opens its first-visit dialog a second after the page has asked
        # the server whether to (the answer can take a while while the code location loads): dismiss it
        with page.expect_response(
            lambda r: "ShouldShowNux" in (r.request.post_data or ""), timeout=SERVER_TIMEOUT_S * 1000
        ) as answer:
            page.goto(base)
        if answer.value.json()["data"]["shouldShowNux"]:
            nux_skip(page).click()
            nux_skip(page).wait_for(state="detached")
        nav(page, "Lineage")
        page.wait_for_url(re.compile(r"/asset-groups"))
        page.set_viewport_size(TALL)
        page.get_by_role("button", name="settings", exact=True).click()
        page.get_by_role("menuitem", name=re.compile("Expand all groups")).click()
        page.reload()  # the graph is fitted to the window as it loads: now every group is open
        missing = []
        for name in ALL_ASSETS:  # the graph draws only the nodes in view: all of them at this size
            try:
                page.get_by_text(name, exact=True).first.wait_for(timeout=UI_TIMEOUT_MS if not missing else 2_000)
            except sync_api.TimeoutError:
                missing.append(name)
        assert not missing, f"assets not drawn in the lineage: {missing}"
        assert page.get_by_text("dbt", exact=True).count() >= 1  # the dbt group, holding the dbt models
        steps.notes["lineage"] = f"{len(ALL_ASSETS)} assets, {len(DBT_MODELS)} dbt models"

    with steps.step("automation-off"):
        page.set_viewport_size(NORMAL)
        nav(page, "Automation")
        page.get_by_role("link", name=named("automation_condition_sensor")).first.click()
        switch = page.get_by_role("checkbox")
        assert switch.is_checked(), "the automation sensor is on by default"
        page.locator("label", has=switch).click()  # the switch (its input is hidden behind the label)
        page.wait_for_function("() => !document.querySelector('input[type=checkbox]').checked")
        deadline = time.monotonic() + 30  # the switch's mutation has written the sensor's state
        while (states := sensor_states(instance)).get("automation_condition_sensor") != "STOPPED":
            assert time.monotonic() < deadline, states
            time.sleep(0.5)
        assert instance.get_runs() == [], "nothing may run before the first click"

    for asset, step in (("images", "raw_images-partition"), ("embeddings", "image_embeddings-partition")):
        with steps.step(step):
            clicked = materialize_partition_from_asset_page(page, base, asset, first)
            run_id, seen = wait_for_run_in_ui(page, base, launched_run(page), instance)
            assert instance.get_run_by_id(run_id).tags.get("dagster/partition") == first
            steps.notes[step] = f"{PARTITION_SIZE} images: {where_the_time_went(instance, run_id, clicked, seen)}"

    with steps.step("backfill-all-partitions"):
        nav(page, "Jobs")
        page.get_by_role("link", name=named("ingest_batch")).first.click()
        page.get_by_role("button", name=named("Materialize all…")).click()
        dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
        dialog.get_by_role("button", name="All", exact=True).click()
        dialog.get_by_text(f"{len(partitions)} partitions", exact=True).wait_for()
        clicked = time.time()
        dialog.get_by_role("button", name=named("Launch backfill")).click()
        toast = page.get_by_text(re.compile(r"Created backfill \w+"))
        toast.wait_for()
        backfill_id = re.search(r"Created backfill (\w+)", toast.inner_text()).group(1)
        page.goto(f"{base}/runs/b/{backfill_id}")
        page.wait_for_function(
            f"() => /^(Succeeded|Failed|Canceled|Completed)$/.test(({BACKFILL_STATUS_JS})())",
            timeout=RUN_TIMEOUT_S * 1000,
            polling=1000,
        )
        seen = time.time()
        status = page.evaluate(BACKFILL_STATUS_JS)
        backfill = instance.get_backfill(backfill_id)
        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        assert status == "Succeeded", (status, backfill.status, [failure_message(instance, r.run_id) for r in runs])
        assert backfill.status.value == "COMPLETED_SUCCESS", backfill.status
        assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        for key in ("images", "embeddings", "image_quality", "label_scores"):
            assert instance.get_materialized_partitions(dg.AssetKey(key)) == set(partitions), key
        # the per-batch assets' single-run backfill policy: one run for all partitions
        assert len(runs) == 1, [r.run_id for r in runs]
        steps.notes["backfill-all-partitions"] = (
            f"{len(partitions)} partitions, {SKETCH_IMAGES + 2 * COPIED} images, one run: "
            f"{where_the_time_went(instance, runs[0].run_id, clicked, seen)}"
        )

    with steps.step("whole-set"):
        # nothing downstream has run yet: no whole-set asset was ever materialised
        for key in WHOLE_SET_ASSETS:
            assert instance.get_latest_materialization_event(dg.AssetKey(key)) is None, key
        nav(page, "Lineage")
        page.set_viewport_size(TALL)
        page.get_by_label("Search and filter assets").focus()
        page.keyboard.type(WHOLE_SET_SELECTION)
        page.keyboard.press("Enter")
        page.keyboard.press("Escape")
        page.wait_for_url(re.compile(r"group%3Awalk"))
        for name in WHOLE_SET_ASSETS:
            page.get_by_text(name, exact=True).first.wait_for(state="visible")
        for name in sorted(set(ALL_ASSETS) - set(WHOLE_SET_ASSETS)):
            assert page.get_by_text(name, exact=True).count() == 0, f"{name} is not part of the whole set"
        clicked = time.time()
        page.get_by_role("button", name=named("Materialize all")).click()
        short = launched_run(page)
        page.set_viewport_size(NORMAL)
        run_id, seen = wait_for_run_in_ui(page, base, short, instance)
        run = instance.get_run_by_id(run_id)
        assert sorted(k.to_user_string() for k in run.asset_selection) == WHOLE_SET_ASSETS
        steps.notes["whole-set"] = (
            f"{len(WHOLE_SET_ASSETS)} assets: {where_the_time_went(instance, run_id, clicked, seen)}"
        )

    with steps.step("image_quality-counts"):
        latest = open_latest_materialization(page, base, "image_quality", instance)
        by_reason = latest.metadata["blank_by_reason"].data
        assert by_reason and sum(by_reason.values()) == latest.metadata["blank"].value > 0, latest.metadata
        row = metadata_row(page, "blank_by_reason")
        for reason, n in by_reason.items():
            row.get_by_text(re.compile(rf'"{reason}":\s*{n}\b')).wait_for()
        metadata_row(page, "blank").get_by_text(str(latest.metadata["blank"].value), exact=True).wait_for()
        sheets = sorted(k for k in latest.metadata if k.endswith("_contact_sheet"))
        assert "blanks_contact_sheet" in sheets, sheets  # the batch's own blank frames
        show_sheets(page, steps, "image_quality", sheets)

    with steps.step("duplicate_groups-sheets"):
        latest = open_latest_materialization(page, base, "duplicate_groups", instance)
        sheets = sorted(k for k in latest.metadata if k.endswith("_contact_sheet"))
        assert sheets == ["blanks_contact_sheet", "duplicates_contact_sheet"], sheets
        dup_reasons = latest.metadata["duplicates_by_reason"].data
        assert dup_reasons.get("identical_bytes", 0) >= COPIED, dup_reasons
        for key in ("blank_by_reason", "duplicates_by_reason"):
            for reason, n in latest.metadata[key].data.items():
                metadata_row(page, key).get_by_text(re.compile(rf'"{reason}":\s*{n}\b')).wait_for()
        show_sheets(page, steps, "duplicate_groups", sheets)
        steps.notes["duplicate_groups-sheets"] = f"{len(sheets)} contact sheets rendered"

    with steps.step("asset-checks"):
        dbt_checks = 0
        for asset, names in sorted(CHECKS.items()):
            page.goto(f"{base}/assets/{asset}?view=checks")
            page.get_by_text(f"Checks ({len(names)})", exact=True).wait_for()
            for name in names:
                page.get_by_text(name, exact=True).first.wait_for(state="attached")
            passed = page.get_by_text("Succeeded", exact=True)
            page.wait_for_function(
                "n => [...document.querySelectorAll('*')].filter(e => e.children.length === 0"
                " && e.textContent.trim() === 'Succeeded').length >= n",
                arg=len(names),
            )
            assert page.get_by_text(re.compile(r"^(Failed|Execution failed|Skipped)$")).count() == 0, asset
            assert passed.count() >= len(names), asset
            steps.shot(f"{len(steps.times) + 1:02d}-checks-{asset}.png")
            dbt_checks += len(names) if asset in DBT_MODELS else 0
        assert dbt_checks >= 10, f"only {dbt_checks} dbt tests among the checks"
        for check in GRAPH.asset_check_keys:  # and the instance agrees
            record = instance.event_log_storage.get_latest_asset_check_execution_by_key([check]).get(check)
            assert record is not None and record.status.value == "SUCCEEDED", (check, record)
        steps.notes["asset-checks"] = (
            f"{sum(map(len, CHECKS.values()))} checks on {len(CHECKS)} assets, {dbt_checks} of them dbt tests"
        )

    with steps.step("search-gallery"):
        gallery = tmp_path / "gallery.html"
        _hotdog(env, "search", "a face", "--limit", "12", "--html", str(gallery))
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(gallery.as_uri())
        page.wait_for_function(
            "() => { const imgs = [...document.querySelectorAll('.card img')];"
            " return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0); }"
        )
        cards = page.locator(".card")
        assert cards.count() == 12
        loaded = images_loaded(page, ".card")
        assert len(loaded) == 12 and all(ok and width > 0 for _, ok, width in loaded), loaded
        scores = page.locator(".card .score").all_inner_texts()
        assert len(scores) == 12 and all(re.fullmatch(r"#\d+ · -?\d\.\d{4}", s.strip()) for s in scores), scores
        outside = page.evaluate(
            """() => [...document.querySelectorAll('*')].flatMap(e =>
                 ['src', 'href', 'srcset', 'action', 'poster', 'data', 'style']
                   .map(a => e.getAttribute(a) || '')
                   .filter(v => /https?:\\/\\//i.test(v)))"""
        )
        assert outside == [], f"the gallery points outside the page: {outside}"
        assert all(u.startswith(("file:", "data:")) for u in requests), requests
        steps.notes["search-gallery"] = f"12 thumbnails loaded, {len(requests)} requests, all file:/data:"
