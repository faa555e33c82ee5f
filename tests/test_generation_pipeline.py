"""The diffusion source wired into the command and the asset graph, on a real Dagster instance.

The tiny diffusers pipeline (``tiny-random``: the real classes, random weights, 64x64, 2 steps) runs on
the CPU. Cleaning is checked elsewhere: these tests read the ingest step's own outputs (its tables, its
materialisations and their data versions), so they hold whatever the later per-batch steps do.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._time import get_current_datetime
from PIL import Image

from hotdog_dagster import cli
from hotdog_dagster.core.io.batches import load_batch, params_fingerprint, plan_diffusion, plan_sketch
from hotdog_dagster.core.io.store import Store
from hotdog_dagster.core.model.generation import GenerationOutOfMemory
from hotdog_dagster.core.model.names import REAL_MODEL, TINY_DIFFUSION_MODEL
from hotdog_dagster.core.settings import DEFAULT_LABELS, GenerateSettings, Profile, load_profile
from hotdog_dagster.definitions import build_definitions
from hotdog_dagster.defs.ingest.assets import batch_data_version, raw_images
from hotdog_dagster.defs.shared import GPU_POOL
from hotdog_dagster.pipeline import dagster_instance, execute, failure_message
from hotdog_dagster.resources import resources_for

REPO = Path(__file__).resolve().parent.parent
KEY = "diffusion-s5-0000000"
#: A 4-image partition of the tiny model: 2 denoising steps, 2 images per pass.
TINY = ["--source", "diffusion", "--diffusion-model", TINY_DIFFUSION_MODEL, "--seed", "5", "--images", "4"]
TINY += ["--partition-size", "4", "--width", "64", "--height", "64", "--steps", "2", "--gen-batch-size", "2"]
TINY += ["--prompt", "a photo of a hot dog", "--prompt", "two hot dogs", "--negative-prompt", "blurry"]


def _hotdog(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def _data_version(instance: dg.DagsterInstance, key: str) -> str:
    event = instance.get_latest_materialization_event(dg.AssetKey(key))
    return event.asset_materialization.tags["dagster/data_version"]


def _status(instance: dg.DagsterInstance, defs: dg.Definitions, key: str) -> StaleStatus:
    graph = defs.resolve_asset_graph()
    view = AssetGraphView(
        temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
        instance=instance,
        asset_graph=graph,
    )
    resolver = CachingStaleStatusResolver(instance=instance, asset_graph=graph, loading_context=view)
    return resolver.get_status(dg.AssetKey(key), KEY)


def test_planned_partition_runs_in_the_batch_job_with_its_parameters_recorded(
    store: Store, plumbing_profile: Profile, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _hotdog(capsys, "plan", *TINY)
    assert code == 0, err
    assert out.split() == [KEY, "diffusion", "4"]
    spec = load_batch(store, KEY)
    assert spec.generate["model"] == TINY_DIFFUSION_MODEL and spec.generate["steps"] == 2

    defs = build_definitions(plumbing_profile, home=str(store.root))
    instance = dagster_instance(store)
    _, run_id = execute(defs, "ingest_batch", instance, KEY)  # later steps are not this test's concern
    done = {e.dagster_event.step_key for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)}
    assert {"raw_images", "image_embeddings"} <= done, failure_message(instance, run_id)

    rows = store.read_table("images", KEY).to_pylist()
    assert [r["prompt"] for r in rows] == ["a photo of a hot dog", "two hot dogs"] * 2
    for row in rows:
        assert row["source"] == "diffusion" and row["caption"] == row["prompt"]
        assert (row["negative_prompt"], row["model"], row["scheduler"], row["steps"], row["guidance"]) == (
            "blurry",
            TINY_DIFFUSION_MODEL,
            "default",
            2,
            7.5,
        )
        assert (row["width"], row["height"], row["format"]) == (64, 64, "PNG")
        assert row["safety_flagged"] is False and row["seed"] is not None
        assert Path(row["path"]).is_file()
    assert len({r["seed"] for r in rows}) == 4
    assert store.read_table("embeddings", KEY).num_rows == 4

    images = instance.get_latest_materialization_event(dg.AssetKey("images")).asset_materialization
    assert images.partition == KEY and images.metadata["safety_flagged"].value == 0
    assert _data_version(instance, "images") == _data_version(instance, "rejected") == params_fingerprint(spec)
    assert _status(instance, defs, "embeddings") == StaleStatus.FRESH

    # the same manifest again: the same data version, so nothing downstream is stale
    resources = resources_for(plumbing_profile, home=str(store.root))
    assert dg.materialize([raw_images], partition_key=KEY, instance=instance, resources=resources).success
    assert _data_version(instance, "images") == params_fingerprint(spec)
    assert _status(instance, defs, "embeddings") == StaleStatus.FRESH

    # planned again with another step count: a new data version, and the embeddings are stale
    code, _, err = _hotdog(capsys, "plan", *TINY, "--steps", "3")
    assert code == 0, err
    changed = load_batch(store, KEY)
    assert params_fingerprint(changed) != params_fingerprint(spec)
    assert dg.materialize([raw_images], partition_key=KEY, instance=instance, resources=resources).success
    assert _data_version(instance, "images") == params_fingerprint(changed)
    assert _status(instance, defs, "embeddings") == StaleStatus.STALE
    assert set(store.read_table("images", KEY).column("steps").to_pylist()) == {3}

    # one image generated again from what was recorded: the very same file
    image = store.read_table("images", KEY).to_pylist()[1]
    again = store.root / "again.png"
    code, out, err = _hotdog(capsys, "regenerate", image["id"], "--out", str(again))
    assert code == 0, err
    assert f"{image['id']}: matches the stored file, byte for byte" in out
    assert again.read_bytes() == Path(image["path"]).read_bytes()

    # a stored file that no longer matches: exit status 1 and the size of the difference
    pixels = np.asarray(Image.open(image["path"]).convert("RGB")).copy()
    pixels[0, 0] = (pixels[0, 0].astype(np.int16) + 9) % 256
    Image.fromarray(pixels).save(image["path"])
    code, out, _ = _hotdog(capsys, "regenerate", image["id"])
    assert code == 1 and "DIFFERS from the stored file" in out


def test_out_of_memory_fails_the_batch_with_one_line_and_writes_nothing(
    store: Store, plumbing_profile: Profile, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _hotdog(capsys, "plan", *TINY)[0] == 0
    message = "out of memory on cuda generating 2 images of 64x64; lower generate.batch_size from 2 (try 1)"

    def oom(*args: object, **kwargs: object) -> None:  # what generation raises when the device is full
        raise GenerationOutOfMemory(message)

    monkeypatch.setattr("hotdog_dagster.core.model.generation.generate_images", oom)
    monkeypatch.setattr("hotdog_dagster.core.model.generation.regenerate", oom)
    instance = dagster_instance(store)
    ok, run_id = execute(build_definitions(plumbing_profile, home=str(store.root)), "ingest_batch", instance, KEY)
    assert not ok
    failure = failure_message(instance, run_id)  # the line `hotdog run` prints for the batch
    assert failure.startswith("raw_images: ") and failure.endswith(message)
    assert not store.table_path("images", KEY).exists()
    assert not store.partition_images_dir(KEY).exists()

    # the command itself says the same in one line when it meets the error (here: regenerating)
    capsys.readouterr()  # Dagster's log of the failed run
    code, _, err = _hotdog(capsys, "regenerate", "any")
    assert code == 2 and err.strip() == f"hotdog regenerate: error: {message}"


def test_bad_options_are_one_line_and_exit_2(store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _hotdog(capsys, "plan", *TINY, "--scheduler", "dpm3000")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--scheduler: unknown scheduler 'dpm3000'; valid schedulers: default, ddim" in err and "lcm" in err

    code, _, err = _hotdog(capsys, "plan", *TINY, "--width", "60", "--steps", "0")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--steps: Input should be greater than or equal to 1 (got 0)" in err and "--width:" in err

    code, _, err = _hotdog(capsys, "plan", *TINY, "--prompt-file", str(tmp_path / "none.txt"))
    assert code == 2 and f"prompt file {tmp_path / 'none.txt'} does not exist" in err

    # a model that is not on this machine stops `hotdog run` before any batch is planned or run
    missing = tmp_path / "sd-weights"
    code, _, err = _hotdog(capsys, "run", *TINY, "--diffusion-model", str(missing))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"hotdog run: error: cannot load diffusion model '{missing}'")
    assert "Weights must be present locally" in err
    assert not store.batches_dir.exists() or not list(store.batches_dir.iterdir())

    code, _, err = _hotdog(capsys, "regenerate", "0" * 20)
    assert code == 2 and "no image with id '00000000000000000000'" in err


def test_prompt_file_replaces_the_profile_prompts(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# dogs\na corn dog\na chili dog\n")
    options = [a for a in TINY if a not in ("--prompt", "a photo of a hot dog", "two hot dogs")]
    assert _hotdog(capsys, "plan", *options, "--prompt-file", str(prompts))[0] == 0
    assert load_batch(store, KEY).generate["prompts"] == ["a corn dog", "a chili dog"]


def test_a_range_of_batches_shares_one_stable_version() -> None:
    """Dagster gives a run's partitions one data version: for a range it is stable and follows each batch."""
    settings = GenerateSettings(model=TINY_DIFFUSION_MODEL, steps=2, width=64, height=64)
    specs = plan_diffusion(settings, images=4, partition_size=2)
    one = batch_data_version(specs[:1])
    assert one == dg.DataVersion(params_fingerprint(specs[0]))
    both = batch_data_version(specs)
    assert both == batch_data_version(specs[::-1]) and both not in (one, batch_data_version(specs[1:]))
    steps3 = plan_diffusion(settings.model_copy(update={"steps": 3}), images=4, partition_size=2)
    assert batch_data_version(steps3) != both
    assert batch_data_version(plan_sketch(0, 4, 4)) is None  # sketch and folder keep Dagster's default
    assert batch_data_version([*specs[:1], *plan_sketch(0, 4, 4)]) is None


def test_hot_dog_100k_profile_reproduces_the_original_and_places_generation_on_the_gpu() -> None:
    profile = load_profile(REPO / "configs" / "hot-dog-100k.yaml")
    gen = profile.generate
    assert (gen.model, gen.prompts, gen.steps, gen.guidance) == (
        "CompVis/stable-diffusion-v1-4",
        ["a photo of a hot dog"],
        50,
        7.5,
    )
    assert (gen.width, gen.height, gen.precision, gen.safety_checker, gen.seed) == (512, 512, "fp16", True, 0)
    assert (profile.model.name, profile.model.device) == (REAL_MODEL, "cuda")
    assert profile.labels.labels == DEFAULT_LABELS and profile.clean.use_safety_checker

    def raw_images_node(defs: dg.Definitions) -> dg.OpDefinition:
        return next(n for n in defs.resolve_job_def("ingest_batch").graph.node_defs if n.name == "raw_images")

    on_gpu = raw_images_node(build_definitions(profile))
    assert on_gpu.pools == {GPU_POOL} and "dagster-k8s/config" in on_gpu.tags
    on_cpu = raw_images_node(build_definitions(Profile()))  # the default generates on "auto": beside CPU steps
    assert not on_cpu.pools and "dagster-celery/queue" not in on_cpu.tags
