"""Shared fixtures: a temporary data root and Dagster home per test, the test-sized profile, dbt prepared."""

from __future__ import annotations

from pathlib import Path

import pytest

from hotdog_dagster.core.io.store import Store
from hotdog_dagster.core.model.names import RANDOM_SKETCH_MODEL
from hotdog_dagster.core.settings import IngestSettings, ModelSettings, Profile


def pytest_configure(config: pytest.Config) -> None:
    """Prepare the dbt manifest explicitly, once, before collection imports the definitions.

    A session fixture is too late: test modules import ``hotdog_dagster.definitions`` at collection,
    and on a clean clone (CI) the manifest does not exist yet.
    """
    from hotdog_dagster.dbt_project import prepare_dbt

    prepare_dbt()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated HOTDOG_HOME and DAGSTER_HOME (the pipeline writes both)."""
    root = tmp_path / "hotdog_home"
    monkeypatch.setenv("HOTDOG_HOME", str(root))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.delenv("HOTDOG_CONFIG", raising=False)
    return root


@pytest.fixture
def store(home: Path) -> Store:
    return Store(home)


@pytest.fixture
def plumbing_profile() -> Profile:
    """The real open_clip classes with random weights: for tests of plumbing, not of answers."""
    return Profile(
        model=ModelSettings(name=RANDOM_SKETCH_MODEL, batch_size=32, num_workers=1),
        ingest=IngestSettings(sketch_size=64, workers=2),
    )
