"""The ``hotdog`` command and ``dagster asset materialize``, end to end, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hotdog_dagster.core.model.names import RANDOM_SKETCH_MODEL

REPO = Path(__file__).resolve().parent.parent


def _env(home: Path, config: Path | None = None) -> dict[str, str]:
    env = dict(os.environ, HOTDOG_HOME=str(home), DAGSTER_HOME=str(home / "dagster"))
    if config:
        env["HOTDOG_CONFIG"] = str(config)
    return env


def _hotdog(*args: str, env: dict[str, str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hotdog_dagster.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture
def random_config(tmp_path: Path) -> Path:
    path = tmp_path / "plumbing.yaml"
    path.write_text(
        f"model:\n  name: {RANDOM_SKETCH_MODEL}\n  batch_size: 32\n  num_workers: 1\ningest:\n  sketch_size: 64\n"
    )
    return path


def test_run_json_summary(tmp_path: Path, random_config: Path) -> None:
    home = tmp_path / "home"
    out = _hotdog(
        "run",
        "--source",
        "sketch",
        "--images",
        "40",
        "--partition-size",
        "20",
        "--config",
        str(random_config),
        "--json",
        env=_env(home),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout)
    assert summary["ok"] and summary["partitions"] == ["sketch-s0-0000000", "sketch-s0-0000020"]
    assert summary["tables"]["images"] == 40 and summary["tables"]["embeddings"] == 40
    assert summary["tables"]["rejected"] == 0
    assert Path(summary["paths"]["index"]).exists() and Path(summary["paths"]["catalog"]).exists()
    assert summary["dagster_home"] == str(home / "dagster")


def test_plan_then_dagster_asset_materialize(tmp_path: Path, random_config: Path) -> None:
    """The partitions `hotdog plan` adds can be materialised by `dagster asset materialize`."""
    home = tmp_path / "home"
    env = _env(home, random_config)
    out = _hotdog("plan", "--images", "12", "--partition-size", "12", env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    key = out.stdout.split()[0]
    assert key == "sketch-s0-0000000"
    run = subprocess.run(
        [
            "dagster",
            "asset",
            "materialize",
            "-m",
            "hotdog_dagster.definitions",
            "--select",
            "images,rejected,thumbnails,embeddings,embedding_failures",
            "--partition",
            key,
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert (home / "tables" / "images" / f"{key}.parquet").exists()
    assert (home / "tables" / "embeddings" / f"{key}.parquet").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--source", "folder"], "--source folder needs --path"),
        (["run", "--source", "folder", "--path", "/no/such/dir"], "does not exist"),
        (["run", "--images", "0"], "--images must be positive"),
        (["run", "--config", "/no/such.yaml"], "config file /no/such.yaml does not exist"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path: Path, args: list[str], message: str) -> None:
    out = _hotdog(*args, env=_env(tmp_path / "home"))
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_model_in_config_is_refused_before_work(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("model:\n  name: open_clip/ViT-B-32/nowhere/x.safetensors\n")
    out = _hotdog("run", "--images", "5", "--config", str(cfg), env=_env(tmp_path / "home"))
    assert out.returncode == 2 and "does not exist" in out.stderr and "Traceback" not in out.stderr


def test_help_explains_itself() -> None:
    out = _hotdog("run", "--help", env=dict(os.environ))
    assert out.returncode == 0
    for flag in ("--source", "--images", "--partition-size", "--path", "--config", "--json", "--home", "--verbose"):
        assert flag in out.stdout


def test_rerun_keeps_a_folders_batches_and_leaves_a_namesake_alone(tmp_path: Path) -> None:
    """`--rerun` redoes this folder's own batches; it must not re-slice from chunk 0 over the batches
    of another folder that happens to have the same name."""
    from PIL import Image

    home = tmp_path / "home"
    env = _env(home)
    roots = [tmp_path / "a" / "photos", tmp_path / "b" / "photos"]
    for n, root in zip((3, 2), roots, strict=True):
        root.mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (16, 16), (40 * i, 80, 120)).save(root / f"{i}.png")

    def plan(root: Path, *extra: str) -> list[str]:
        out = _hotdog("plan", "--source", "folder", "--path", str(root), "--partition-size", "2", *extra, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        return [line.split("\t")[0] for line in out.stdout.splitlines()]

    a_keys = plan(roots[0])
    b_keys = plan(roots[1])
    assert a_keys == ["folder-photos-00000", "folder-photos-00001"] and b_keys == ["folder-photos-00002"]
    b_manifest = (home / "batches" / f"{b_keys[0]}.json").read_text()

    (roots[0] / "3.png").write_bytes((roots[0] / "0.png").read_bytes())
    again = plan(roots[0], "--rerun")
    assert again[:2] == a_keys and again[2:] == ["folder-photos-00003"]  # the old batches, then the new file
    assert (home / "batches" / f"{b_keys[0]}.json").read_text() == b_manifest
    assert plan(roots[1], "--rerun") == b_keys


def test_run_is_quiet_logs_to_a_file_and_fails_loudly(tmp_path: Path, random_config: Path) -> None:
    """No Dagster or dbt log line on the terminal without --verbose; they are in the log file it names."""
    home = tmp_path / "home"
    out = _hotdog("run", "--images", "20", "--partition-size", "10", "--config", str(random_config), env=_env(home))
    assert out.returncode == 0, out.stderr[-2000:]
    terminal = out.stdout + out.stderr
    for noise in (" - dagster - ", "STEP_SUCCESS", "Running with dbt", "RUN_START", "Finished running"):
        assert noise not in terminal, noise
    logs = list((home / "logs").glob("run-*.log"))
    assert len(logs) == 1 and str(logs[0]) in terminal
    text = logs[0].read_text()
    assert "STEP_SUCCESS" in text or "dagster" in text
    assert "images" in out.stdout and "search_items" in out.stdout  # the summary table


def test_a_failed_batch_gives_a_non_zero_exit(tmp_path: Path) -> None:
    """A step that fails (here: the model asked for a GPU this machine lacks) exits 1 with one line per failure."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU, so asking for one does not fail")
    cfg = tmp_path / "gpu.yaml"
    cfg.write_text(
        f"model:\n  name: {RANDOM_SKETCH_MODEL}\n  device: cuda\n  num_workers: 0\ningest:\n  sketch_size: 64\n"
    )
    out = _hotdog("run", "--images", "10", "--partition-size", "10", "--config", str(cfg), env=_env(tmp_path / "home"))
    assert out.returncode == 1
    assert "hotdog run: error: sketch-s0-0000000: image_embeddings" in out.stderr
    assert "Traceback" not in out.stdout + out.stderr


def test_console_script_works_without_an_activated_environment(tmp_path: Path, random_config: Path) -> None:
    """A cron job or a service calls bin/hotdog with a bare PATH: dbt must be found beside the Python."""
    script = Path(sys.executable).parent / "hotdog"
    assert script.exists(), f"no console script beside {sys.executable}: install with pip install -e ."
    home = tmp_path / "home"
    env = {**_env(home, random_config), "PATH": "/usr/bin:/bin"}
    plan = subprocess.run(
        [str(script), "plan", "--images", "10", "--partition-size", "10"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert plan.returncode == 0, plan.stderr[-2000:]
    run = subprocess.run(
        [str(script), "run", "--images", "10", "--partition-size", "10", "--json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout)["tables"]["image_labels"] > 0  # dbt ran
