"""Settings: declared once per stage, nested in YAML profiles, the same models as the resources."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml

from hotdog_dagster.core.io.decode import DEFAULT_MAX_PIXELS
from hotdog_dagster.core.model.encoder import ModelSpec
from hotdog_dagster.core.model.names import REAL_MODEL, SKETCH_MODEL
from hotdog_dagster.core.settings import CleanSettings, ModelSettings, Profile, SettingsError, load_profile
from hotdog_dagster.resources import CleanResource, EncoderResource, resources_for

REPO = Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _no_config_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOTDOG_CONFIG", raising=False)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "profile.yaml"
    path.write_text(text)
    return path


def test_default_profile_is_the_embedded_one():
    profile = load_profile()
    assert profile == Profile() == load_profile(REPO / "configs" / "embedded.yaml")
    assert profile.model.name == SKETCH_MODEL
    assert profile.model.device == "auto" and profile.model.precision == "auto"
    assert profile.ingest.max_pixels == DEFAULT_MAX_PIXELS
    assert profile.watch.folder == ""
    assert load_profile(None) == load_profile("") == Profile()


def test_hotdog_config_env_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOTDOG_CONFIG", str(_write(tmp_path, "model:\n  batch_size: 7\n")))
    assert load_profile().model.batch_size == 7
    other = tmp_path / "other.yaml"
    other.write_text("model:\n  batch_size: 9\n")
    assert load_profile(other).model.batch_size == 9  # an explicit path wins over the environment


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_key_of_the_repo_profiles_round_trips(path: Path):
    data = yaml.safe_load(path.read_text())
    profile = load_profile(path)
    for section, values in data.items():
        for key, value in values.items():
            assert getattr(getattr(profile, section), key) == value, f"{path.name}: {section}.{key}"
    dumped = profile.model_dump()
    assert Profile.model_validate(dumped) == profile


def test_repo_profiles_name_known_models():
    embedded, real = load_profile(REPO / "configs" / "embedded.yaml"), load_profile(REPO / "configs" / "real.yaml")
    assert embedded.model.name == SKETCH_MODEL and real.model.name == REAL_MODEL
    assert real.model.device == "cuda" and real.model.batch_size > embedded.model.batch_size
    for profile in (embedded, real):
        assert str(ModelSpec.parse(profile.model.name)) == profile.model.name


def test_empty_file_is_the_default(tmp_path: Path):
    assert load_profile(_write(tmp_path, "# nothing set\n")) == Profile()


def test_unknown_key_names_the_key_the_file_and_the_allowed_ones(tmp_path: Path):
    path = _write(tmp_path, "model:\n  batch_size: 8\n  batchsize: 8\n")
    with pytest.raises(SettingsError) as info:
        load_profile(path)
    message = str(info.value)
    assert "'model.batchsize'" in message and str(path) in message
    for name in ModelSettings.model_fields:
        assert name in message


def test_unknown_section_lists_the_sections(tmp_path: Path):
    with pytest.raises(SettingsError, match="allowed here: model, ingest, index, watch, clean, labels, generate, walk"):
        load_profile(_write(tmp_path, "gpu: true\n"))


@pytest.mark.parametrize(
    ("text", "key", "what"),
    [
        ("model:\n  batch_size: '64'\n", "model.batch_size", "integer"),
        ("model:\n  batch_size: 0\n", "model.batch_size", "greater than or equal to 1"),
        ("model:\n  batch_size: 6.5\n", "model.batch_size", "integer"),
        ("model:\n  device: gpu\n", "model.device", "auto, cpu, mps, cuda or cuda:N"),
        ("model:\n  precision: fp8\n", "model.precision", "'auto', 'fp32', 'fp16' or 'bf16'"),
        ("clean:\n  near_threshold: 2\n", "clean.near_threshold", "less than or equal to 1"),
        ("clean:\n  max_crop: 0.7\n", "clean.max_crop", "less than 0.5"),
        ("ingest:\n  workers: yes\n", "ingest.workers", "integer"),
        ("labels:\n  labels: []\n", "labels.labels", "label set is empty"),
        ("labels:\n  templates: ['a photo']\n", "labels.templates", "exactly once"),
        ("index:\n  kind: lsh\n", "index.kind", "'auto', 'flat', 'ivf' or 'hnsw'"),
    ],
)
def test_a_bad_value_names_the_key_the_file_and_what_is_allowed(tmp_path: Path, text: str, key: str, what: str):
    path = _write(tmp_path, text)
    with pytest.raises(SettingsError) as info:
        load_profile(path)
    message = str(info.value)
    assert f"'{key}'" in message and str(path) in message and what in message


def test_a_file_that_is_not_a_mapping_is_refused(tmp_path: Path):
    with pytest.raises(SettingsError, match="must be a mapping"):
        load_profile(_write(tmp_path, "- model\n- device\n"))


def test_missing_file_is_an_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_profile(tmp_path / "nope.yaml")


def test_overrides_replace_one_section_and_skip_none():
    profile = Profile().with_overrides("model", batch_size=3, device=None)
    assert profile.model.batch_size == 3 and profile.model.device == Profile().model.device
    assert profile.clean == Profile().clean


def test_resources_are_the_settings_models():
    """A resource subclasses its settings model: same fields, same defaults, same validation."""
    assert set(EncoderResource.model_fields) == set(ModelSettings.model_fields)
    assert set(CleanResource.model_fields) == set(CleanSettings.model_fields)
    resources = resources_for(Profile())
    assert resources["clean_settings"].settings() == CleanSettings()
    with pytest.raises(Exception, match="less than or equal to 1"):
        CleanResource(near_threshold=3.0)


def test_bad_run_config_names_the_key():
    @dg.asset
    def probe(clean_settings: CleanResource) -> float:
        return clean_settings.near_threshold

    result = dg.materialize(
        [probe],
        resources={"clean_settings": CleanResource.configure_at_launch()},
        run_config={"resources": {"clean_settings": {"config": {"near_threshold": 5.0}}}},
        raise_on_error=False,
    )
    assert not result.success
    errors = [e for e in result.all_events if e.is_failure]
    assert errors
    text = str(errors[0].event_specific_data)
    assert "near_threshold" in text and "less than or equal to 1" in text
