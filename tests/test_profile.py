"""Run profiles: the embedded default, YAML files, and the errors a person sees for a bad one."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from hotdog_dagster.core.io.decode import DEFAULT_MAX_PIXELS
from hotdog_dagster.core.model.encoder import ModelSpec
from hotdog_dagster.core.model.names import REAL_MODEL, SKETCH_MODEL
from hotdog_dagster.core.profile import Profile, load_profile

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _no_config_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOTDOG_CONFIG", raising=False)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "profile.yaml"
    path.write_text(text)
    return path


def test_default_profile_is_the_embedded_one():
    profile = load_profile()
    assert profile == Profile()
    assert profile.model == SKETCH_MODEL
    assert profile.device == "auto" and profile.precision == "auto"
    assert profile.max_pixels == DEFAULT_MAX_PIXELS
    assert profile.watch_dir == ""
    assert load_profile(None) == load_profile("") == Profile()


def test_hotdog_config_env_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOTDOG_CONFIG", str(_write(tmp_path, "batch_size: 7\n")))
    assert load_profile().batch_size == 7
    # an explicit path wins over the environment
    other = tmp_path / "other.yaml"
    other.write_text("batch_size: 9\n")
    assert load_profile(other).batch_size == 9


def test_yaml_file_overrides_only_what_it_names(tmp_path: Path):
    path = _write(
        tmp_path,
        "# a comment\nmodel: open_clip/hotdog-sketch/random\ndevice: cpu\nbatch_size: 16\nnum_workers: 0\n"
        "watch_dir: /data/incoming\nwatch_chunk: 250\n",
    )
    profile = load_profile(path)
    assert profile.model == "open_clip/hotdog-sketch/random"
    assert (profile.device, profile.batch_size, profile.num_workers) == ("cpu", 16, 0)
    assert (profile.watch_dir, profile.watch_chunk) == ("/data/incoming", 250)
    assert profile.index_kind == Profile().index_kind and profile.sketch_size == Profile().sketch_size
    assert load_profile(str(path)) == profile


def test_empty_file_is_the_default(tmp_path: Path):
    assert load_profile(_write(tmp_path, "# nothing set\n")) == Profile()


def test_unknown_key_lists_the_known_ones(tmp_path: Path):
    with pytest.raises(ValueError) as info:
        load_profile(_write(tmp_path, "batch_size: 8\nbatchsize: 8\ngpu: true\n"))
    message = str(info.value)
    assert "batchsize" in message and "gpu" in message
    assert "known settings" in message
    for f in fields(Profile):
        assert f.name in message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("batch_size: '64'\n", "batch_size"),
        ("batch_size: 6.5\n", "batch_size"),
        ("model: 42\n", "model"),
        ("watch_dir: [a, b]\n", "watch_dir"),
        ("device:\n", "device"),
        ("num_workers: yes\n", "num_workers"),
        ("max_pixels: true\n", "max_pixels"),
    ],
)
def test_wrong_type_is_refused(tmp_path: Path, text: str, key: str):
    with pytest.raises(ValueError, match=f"setting '{key}' .* must be"):
        load_profile(_write(tmp_path, text))


def test_a_file_that_is_not_a_mapping_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="must be a mapping"):
        load_profile(_write(tmp_path, "- model\n- device\n"))


def test_missing_file_is_an_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_profile(tmp_path / "nope.yaml")


def test_overrides_skip_none():
    profile = Profile().with_overrides(batch_size=3, device=None)
    assert profile.batch_size == 3 and profile.device == Profile().device
    assert profile.to_dict()["batch_size"] == 3
    assert set(profile.to_dict()) == {f.name for f in fields(Profile)}


def test_repo_profiles_load():
    embedded = load_profile(REPO / "configs" / "embedded.yaml")
    assert embedded.model == SKETCH_MODEL
    assert embedded.device == "auto"
    real = load_profile(REPO / "configs" / "real.yaml")
    assert real.model == REAL_MODEL
    assert real.device == "cuda" and real.batch_size > embedded.batch_size
    for profile in (embedded, real):
        spec = ModelSpec.parse(profile.model)  # both name a known architecture
        assert str(spec) == profile.model
