"""The dbt project in ``dbt/``: where it is, which ``dbt`` runs it, and preparing its manifest.

The manifest is prepared explicitly, never at import: ``hotdog`` prepares it before loading the
definitions, the tests' fixtures do, ``dagster dev`` / ``dg dev`` do through ``prepare_if_dev``, and
``hotdog prepare`` does it for ``dagster asset materialize`` and ``dg launch``. dbt itself is found
beside the running Python, so a virtual environment's ``bin/hotdog`` works without being activated.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from dagster_dbt import DbtProject

DBT_PROJECT_DIR = Path(__file__).resolve().parents[1] / "dbt"
dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR)
dbt_project.prepare_if_dev()


def dbt_executable() -> str:
    """The ``dbt`` installed with this Python (a cron job or service has no activated venv on PATH)."""
    beside = Path(sys.executable).parent / ("dbt.exe" if sys.platform == "win32" else "dbt")
    if beside.exists():
        return str(beside)
    found = shutil.which("dbt")
    if found:
        return found
    raise FileNotFoundError(f"dbt is not installed beside {sys.executable} nor on PATH; run: pip install -e .")


def prepare_dbt(force: bool = False) -> Path:
    """Write ``dbt/target/manifest.json`` with ``dbt parse`` (needs no database); returns its path.

    A manifest that is there but not valid JSON (a torn write, a full disk) is parsed again rather
    than trusted for being newer than the models. dbt writes the manifest in place, so the parse
    goes to a private target folder and the result is renamed in; a lock makes processes that
    prepare at once (two ``hotdog run``, parallel test sessions) parse once, and nobody ever loads
    a half-written manifest.
    """
    from hotdog_dagster.core.io.locks import file_lock

    manifest = dbt_project.manifest_path
    if not force and _usable(manifest):
        return manifest
    manifest.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(manifest.parent / ".prepare.lock", what=f"dbt parse in {DBT_PROJECT_DIR}"):
        if not force and _usable(manifest):
            return manifest  # another process prepared it while this one waited
        private = Path(tempfile.mkdtemp(prefix=".parse-", dir=manifest.parent))
        try:
            cmd = [dbt_executable(), "parse", "--quiet", "--no-use-colors", "--project-dir", str(DBT_PROJECT_DIR)]
            cmd += ["--profiles-dir", str(DBT_PROJECT_DIR), "--target-path", str(private)]
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=DBT_PROJECT_DIR)
            written = private / manifest.name
            if done.returncode != 0 or not written.exists():
                tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
                raise RuntimeError(f"dbt parse failed in {DBT_PROJECT_DIR}: {' | '.join(tail)}")
            for name in ("partial_parse.msgpack", "semantic_manifest.json"):
                if (private / name).exists():
                    os.replace(private / name, manifest.parent / name)
            os.replace(written, manifest)  # last: its mtime says the rest is ready
        finally:
            shutil.rmtree(private, ignore_errors=True)
    return manifest


def _usable(manifest: Path) -> bool:
    """Newer than every dbt input, and whole (it parses as JSON with dbt's top-level keys)."""
    try:
        if manifest.stat().st_mtime < _newest_input(DBT_PROJECT_DIR):
            return False
        with manifest.open("rb") as fh:
            data = json.load(fh)
        return isinstance(data, dict) and "nodes" in data and "metadata" in data
    except (OSError, ValueError):
        return False


def _newest_input(project_dir: Path) -> float:
    """The newest file dbt parses, so an edited model re-parses (``target/`` and ``logs/`` are dbt's output)."""
    newest = 0.0
    for name in ("dbt_project.yml", "profiles.yml", "models", "tests", "macros"):
        path = project_dir / name
        files = [path] if path.is_file() else list(path.rglob("*")) if path.is_dir() else []
        newest = max([newest, *(f.stat().st_mtime for f in files if f.is_file())])
    return newest
