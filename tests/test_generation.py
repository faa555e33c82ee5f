"""Stable Diffusion generation on the CPU with a tiny pipeline of diffusers' own classes.

The model folder is built here from small configs (UNet2DConditionModel, AutoencoderKL,
CLIPTextModel, a byte-level CLIPTokenizer vocabulary written locally, the safety checker) with
random weights, saved with ``save_pretrained`` and loaded by path, as a real checkpoint would be.
Nothing is downloaded; 64x64 images with 2 steps keep every test fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from hotdog_dagster.core.clean.blank import blank_flags
from hotdog_dagster.core.io.batches import (
    BatchSpec,
    diffusion_requests,
    expand_prompts,
    generate_settings,
    image_seed,
    load_batch,
    params_fingerprint,
    plan_diffusion,
    save_batch,
)
from hotdog_dagster.core.io.ingest import IMAGES_SCHEMA, ingest_batch
from hotdog_dagster.core.io.store import Store
from hotdog_dagster.core.model.embedding import embed_partition
from hotdog_dagster.core.model.encoder import ClipEncoder
from hotdog_dagster.core.model.fused import generate_and_embed
from hotdog_dagster.core.model.generation import (
    GenerationOutOfMemory,
    ModelLoadError,
    StageTimes,
    clear_pipelines,
    generate_images,
    generate_partition,
    load_pipeline,
    regenerate,
)
from hotdog_dagster.core.model.names import RANDOM_SKETCH_MODEL, TINY_DIFFUSION_MODEL
from hotdog_dagster.core.model.schedulers import SCHEDULER_NAMES, SCHEDULERS, SchedulerError
from hotdog_dagster.core.model.tiny_diffusion import save_tiny_pipeline, tiny_pipeline
from hotdog_dagster.core.settings import CleanSettings, GenerateSettings

PROMPTS = ["a photo of a hot dog", "two hot dogs", "a hamburger"]
NEW_COLUMNS = ("prompt", "negative_prompt", "model", "scheduler", "steps", "guidance")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny model folders with the same weights and three safety checkers: never, always, and no checker."""
    root = tmp_path_factory.mktemp("models")
    never = save_tiny_pipeline(root / "never")
    always = save_tiny_pipeline(root / "always", safety_threshold=-1.0)
    pipe = tiny_pipeline()
    pipe.safety_checker, pipe.feature_extractor = None, None
    pipe.register_to_config(requires_safety_checker=False)
    pipe.save_pretrained(root / "unchecked", safe_serialization=True)
    yield {"never": never, "always": always, "unchecked": root / "unchecked"}
    clear_pipelines()


def _settings(model: Path | str, **overrides: object) -> GenerateSettings:
    values: dict[str, object] = {
        "model": str(model),
        "prompts": PROMPTS,
        "negative_prompt": "blurry",
        "steps": 2,
        "width": 64,
        "height": 64,
        "batch_size": 2,
        "device": "cpu",
        "seed": 7,
    }
    return GenerateSettings(**{**values, **overrides})


def _ingest(store: Store, spec: BatchSpec) -> dict[str, bytes]:
    save_batch(store, spec)
    result = ingest_batch(store, spec, workers=2)
    assert result.rejected.num_rows == 0
    return {row["source_name"]: Path(row["path"]).read_bytes() for row in result.images.to_pylist()}


# -- planning: seeds, prompts, manifests, fingerprints ---------------------------------------------


def test_image_seeds_are_derived_from_run_seed_partition_and_index():
    seed = image_seed(7, "diffusion-s7-0000000", 3)
    assert seed == image_seed(7, "diffusion-s7-0000000", 3)
    assert 0 <= seed < 2**63
    others = {image_seed(8, "diffusion-s7-0000000", 3), image_seed(7, "diffusion-s7-0000010", 3)}
    others |= {image_seed(7, "diffusion-s7-0000000", i) for i in (0, 1, 2, 4)}
    assert seed not in others and len(others) == 6


def test_plan_keeps_the_prompt_order_across_partitions(tmp_path: Path):
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text("# subjects\na corn dog\n\n  a chili dog  \n")
    settings = _settings(
        "x", prompts=["a hot dog"], prompt_file=str(prompt_file), templates=["a photo of {}", "{}, oil"]
    )
    expanded = expand_prompts(settings)
    assert expanded == [
        "a photo of a hot dog",
        "a hot dog, oil",
        "a photo of a corn dog",
        "a corn dog, oil",
        "a photo of a chili dog",
        "a chili dog, oil",
    ]
    for size in (4, 10):  # partitions shorter and longer than the prompt list
        specs = plan_diffusion(settings, images=13, partition_size=size)
        got = [r.prompt for spec in specs for r in diffusion_requests(spec)]
        assert got == [expanded[i % len(expanded)] for i in range(13)]
        assert all(len(s.generate["prompts"]) <= s.count for s in specs)
    with pytest.raises(FileNotFoundError, match="nowhere.txt"):
        expand_prompts(_settings("x", prompt_file=str(tmp_path / "nowhere.txt")))


def test_manifest_round_trip_and_requests(tmp_path: Path):
    store = Store(tmp_path / "home")
    specs = plan_diffusion(_settings("x"), images=5, partition_size=2)
    assert [s.key for s in specs] == ["diffusion-s7-0000000", "diffusion-s7-0000002", "diffusion-s7-0000004"]
    assert [s.size_hint for s in specs] == [2, 2, 1]
    for spec in specs:
        save_batch(store, spec)
        assert load_batch(store, spec.key) == spec
    spec = load_batch(store, specs[1].key)
    assert generate_settings(spec) == _settings("x", prompts=["a hamburger", "a photo of a hot dog"])
    requests = diffusion_requests(spec)
    assert [r.seed for r in requests] == [image_seed(7, spec.key, 0), image_seed(7, spec.key, 1)]
    assert [r.source_name for r in requests] == [f"diffusion/{spec.key}/00000.png", f"diffusion/{spec.key}/00001.png"]
    assert {r.negative_prompt for r in requests} == {"blurry"}


def test_params_fingerprint_follows_every_generation_parameter():
    def fingerprint(**overrides: object) -> str:
        settings = _settings("x").model_copy(update=overrides)
        return params_fingerprint(plan_diffusion(settings, images=4, partition_size=4)[0])

    base = fingerprint()
    assert fingerprint() == base
    assert fingerprint(fused_embedding=True) == base  # never changes a pixel
    changes = {
        "model": "y",
        "prompts": ["a corn dog"],
        "templates": ["a painting of {}"],
        "negative_prompt": "",
        "steps": 3,
        "guidance": 5.0,
        "scheduler": "euler_a",
        "width": 72,
        "height": 56,
        "batch_size": 1,
        "precision": "bf16",
        "compile": True,
        "safety_checker": False,
        "seed": 8,
    }
    seen = {base}
    for key, value in changes.items():
        changed = fingerprint(**{key: value})
        assert changed not in seen, key
        seen.add(changed)
    spec = plan_diffusion(_settings("x"), images=4, partition_size=4)[0]
    # a manifest written by hand, leaving out settings at their defaults, is the same partition
    written = json.loads(json.dumps(spec.__dict__))
    written["generate"] = {k: v for k, v in written["generate"].items() if k not in ("compile", "fused_embedding")}
    assert params_fingerprint(BatchSpec(**written)) == base


def test_bad_scheduler_lists_the_valid_ones(tmp_path: Path):
    with pytest.raises(ValidationError) as err:
        _settings("x", scheduler="dpm3000")
    assert "dpm3000" in str(err.value) and "dpm++_2m" in str(err.value) and "lcm" in str(err.value)
    # a hand-edited manifest is checked when it is read, with the same list
    spec = plan_diffusion(_settings("x"), images=2, partition_size=2)[0]
    bad = BatchSpec(**{**spec.__dict__, "generate": {**spec.generate, "scheduler": "dpm3000"}})
    with pytest.raises(ValueError, match=r"manifest of batch diffusion-s7-0000000.*valid schedulers: default, ddim"):
        generate_settings(bad)
    with pytest.raises(SchedulerError, match="euler_a"):
        load_pipeline(TINY_DIFFUSION_MODEL, device="cpu").make_scheduler("dpm3000")


def test_settings_refuse_bad_sizes_and_templates():
    for bad in ({"width": 60}, {"templates": ["no slot"]}, {"prompts": []}, {"device": "gpu"}, {"steps": 0}):
        with pytest.raises(ValidationError):
            _settings("x", **bad)


# -- generating -----------------------------------------------------------------------------------


def test_partition_is_generated_once_per_image_with_its_parameters_recorded(models: dict[str, Path], tmp_path: Path):
    store = Store(tmp_path / "home")
    settings = _settings(models["never"], width=72, height=48)
    spec = plan_diffusion(settings, images=5, partition_size=5)[0]
    files = _ingest(store, spec)
    images = store.read_table("images", spec.key)
    assert images.schema.equals(IMAGES_SCHEMA)
    assert images.num_rows == 5 and len(set(files.values())) == 5
    rows = images.to_pylist()
    for request, row in zip(diffusion_requests(spec), rows, strict=True):
        assert row["source"] == "diffusion" and row["source_name"] == request.source_name
        assert (row["prompt"], row["negative_prompt"], row["seed"]) == (request.prompt, "blurry", request.seed)
        assert row["caption"] == request.prompt
        assert (row["model"], row["scheduler"], row["steps"], row["guidance"]) == (
            str(models["never"]),
            "default",
            2,
            7.5,
        )
        assert (row["width"], row["height"], row["format"], row["mode"]) == (72, 48, "PNG", "RGB")
        assert row["safety_flagged"] is False
        assert Path(row["path"]).parent == store.partition_images_dir(spec.key)
        assert "Seed: " + str(request.seed) in Image.open(row["path"]).text["parameters"]
    assert [p.name for p in store.images_dir.iterdir()] == [spec.key]  # no staging left behind


def test_rematerialising_gives_identical_files_and_rows(models: dict[str, Path], tmp_path: Path):
    spec = plan_diffusion(_settings(models["never"]), images=3, partition_size=3)[0]
    first = _ingest(Store(tmp_path / "a"), spec)
    again = _ingest(Store(tmp_path / "a"), spec)  # the same store: replaces the partition
    elsewhere = _ingest(Store(tmp_path / "b"), spec)  # a fresh store, same manifest
    assert first == again == elsewhere
    rows = [pq.read_table(Store(tmp_path / d).table_path("images", spec.key)).to_pylist() for d in ("a", "b")]
    assert [{k: v for k, v in r.items() if k != "path"} for r in rows[0]] == [
        {k: v for k, v in r.items() if k != "path"} for r in rows[1]
    ]


def test_each_image_is_independent_of_the_partition_it_sits_in(models: dict[str, Path]):
    settings = _settings(models["never"], batch_size=1)
    spec = plan_diffusion(settings, images=4, partition_size=4)[0]
    requests = diffusion_requests(spec)
    alone = [generate_images(settings, [r])[0].pixels for r in requests]
    again = [generate_images(settings, [r])[0].pixels for r in reversed(requests)][::-1]
    assert all(np.array_equal(a, b) for a, b in zip(alone, again, strict=True))
    assert not np.array_equal(alone[0], alone[1])


def test_one_image_regenerates_exactly(models: dict[str, Path], tmp_path: Path):
    store = Store(tmp_path / "home")
    settings = _settings(models["never"], batch_size=2)
    spec = plan_diffusion(settings, images=5, partition_size=5)[0]
    _ingest(store, spec)
    rows = store.read_table("images", spec.key).to_pylist()
    for row in (rows[3], rows[4]):  # inside a full batch, and alone in the last one
        result = regenerate(store, row["id"], out=tmp_path / "again.png")
        assert result.matches and result.identical_file and result.replayed_batch, result.note
        assert result.max_abs_diff == 0
        assert (tmp_path / "again.png").read_bytes() == Path(row["path"]).read_bytes()
    # planned again with another prompt: the row no longer agrees with the manifest
    save_batch(store, plan_diffusion(_settings(models["never"], prompts=["a corn dog"]), 5, 5)[0])
    result = regenerate(store, rows[3]["id"])
    assert not result.replayed_batch and "planned again" in result.note
    with pytest.raises(KeyError, match="no image with id"):
        regenerate(store, "0" * 20)


def test_every_scheduler_generates(models: dict[str, Path]):
    loaded = load_pipeline(str(models["never"]), device="cpu")
    request = diffusion_requests(plan_diffusion(_settings(models["never"]), 1, 1)[0])
    for name in SCHEDULER_NAMES:
        scheduler = loaded.make_scheduler(name)
        assert type(scheduler).__name__ == (SCHEDULERS[name][0] or "PNDMScheduler")
        guidance = 1.0 if name == "lcm" else 7.5  # few-step samplers run without guidance
        image = generate_images(_settings(models["never"], scheduler=name, guidance=guidance), request)[0]
        assert image.pixels.shape == (64, 64, 3) and image.pixels.dtype == np.uint8
        assert image.columns["scheduler"] == name


def test_pipeline_is_loaded_once_per_process(models: dict[str, Path]):
    first = load_pipeline(str(models["never"]), device="cpu")
    assert load_pipeline(str(models["never"]), device="cpu") is first
    assert first.dtype == torch.float32 and first.device.type == "cpu"
    assert "AttnProcessor2_0" in first.attention  # PyTorch's scaled-dot-product attention
    assert load_pipeline(str(models["never"]), device="cpu", precision="bf16").dtype == torch.bfloat16


def test_bf16_generates_and_differs_from_fp32(models: dict[str, Path]):
    requests = diffusion_requests(plan_diffusion(_settings(models["never"]), 1, 1)[0])
    fp32 = generate_images(_settings(models["never"]), requests)[0].pixels
    bf16 = generate_images(_settings(models["never"], precision="bf16"), requests)[0].pixels
    assert bf16.shape == fp32.shape and not np.array_equal(bf16, fp32)


def test_the_tiny_model_is_the_same_in_every_process():
    a, b = tiny_pipeline().unet.state_dict(), tiny_pipeline().unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    request = diffusion_requests(plan_diffusion(_settings(TINY_DIFFUSION_MODEL), 1, 1)[0])
    assert generate_images(_settings(TINY_DIFFUSION_MODEL), request)[0].pixels.shape == (64, 64, 3)


def test_stage_times_are_filled(models: dict[str, Path]):
    times = StageTimes()
    images = list(generate_partition(plan_diffusion(_settings(models["never"]), 3, 3)[0], times))
    assert len(images) == times.images == 3
    for stage in ("text_encoding", "denoising", "vae_decode", "safety_checker", "png"):
        assert getattr(times, stage) > 0, stage
    assert set(times.per_image()) == set(StageTimes.STAGES)


# -- the safety checker ---------------------------------------------------------------------------


def test_safety_verdicts_reach_cleaning(models: dict[str, Path], tmp_path: Path):
    store = Store(tmp_path / "home")
    spec = plan_diffusion(_settings(models["always"]), images=3, partition_size=3)[0]
    _ingest(store, spec)
    images = store.read_table("images", spec.key)
    assert images.column("safety_flagged").to_pylist() == [True] * 3
    for path in images.column("path").to_pylist():
        assert not np.asarray(Image.open(path)).any()  # blanked, as the original's black frames
    blank = blank_flags(images, CleanSettings())
    assert blank.is_blank.all() and set(blank.code) == {"safety_checker"}


def test_safety_verdict_belongs_to_its_own_image(models: dict[str, Path], tmp_path: Path):
    """Thresholds between the images' own scores flag exactly the images above them, in place."""
    from diffusers.pipelines.stable_diffusion.safety_checker import cosine_distance

    requests = diffusion_requests(plan_diffusion(_settings(models["never"]), 6, 6)[0])
    clean = generate_images(_settings(models["never"], batch_size=6), requests)
    pipe = load_pipeline(str(models["never"]), device="cpu").pipe
    clip_input = pipe.feature_extractor([Image.fromarray(i.pixels) for i in clean], return_tensors="pt").pixel_values
    with torch.no_grad():
        embeds = pipe.safety_checker.visual_projection(pipe.safety_checker.vision_model(clip_input)[1])
        scores = cosine_distance(embeds, pipe.safety_checker.concept_embeds).max(dim=1).values.numpy()
    order = np.sort(scores)
    gaps = np.diff(order)
    cut = int(np.argmax(gaps[1:-1])) + 1  # the widest gap with at least two images on each side
    assert gaps[cut] > 0.01  # wider than the checker's rounding of scores to 3 decimals
    threshold = float((order[cut] + order[cut + 1]) / 2)
    model = save_tiny_pipeline(tmp_path / "mixed", safety_threshold=threshold)
    flagged = generate_images(_settings(model, batch_size=6), requests)
    expected = scores > threshold
    assert [i.safety_flagged for i in flagged] == expected.tolist()
    for before, after, hit in zip(clean, flagged, expected, strict=True):
        assert not after.pixels.any() if hit else np.array_equal(before.pixels, after.pixels)


def test_safety_checker_can_be_off_or_absent(models: dict[str, Path]):
    requests = diffusion_requests(plan_diffusion(_settings(models["always"]), 2, 2)[0])
    off = generate_images(_settings(models["always"], safety_checker=False), requests)
    assert [i.safety_flagged for i in off] == [None, None] and all(i.pixels.any() for i in off)
    on = generate_images(_settings(models["always"]), requests)
    assert [i.safety_flagged for i in on] == [True, True]  # the shared pipeline got its checker back
    absent = generate_images(_settings(models["unchecked"]), requests)
    assert [i.safety_flagged for i in absent] == [None, None]
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(off, absent, strict=True))


# -- the fused path -------------------------------------------------------------------------------


def test_fused_path_gives_the_same_vectors_as_the_file_path(models: dict[str, Path], tmp_path: Path):
    encoder = ClipEncoder(RANDOM_SKETCH_MODEL, device="cpu")
    spec = plan_diffusion(_settings(models["never"], batch_size=3), images=5, partition_size=5)[0]
    two_step = Store(tmp_path / "two")
    _ingest(two_step, spec)
    files = embed_partition(two_step, spec.key, encoder, batch_size=4, num_workers=0).table
    fused_store = Store(tmp_path / "fused")
    times = StageTimes()
    fused = generate_and_embed(fused_store, spec, encoder, workers=2, batch_size=4, times=times)
    assert fused.ingest.images.column("id").to_pylist() == files.column("id").to_pylist()
    assert fused.embedding.table.equals(files)  # ids, vectors and caption vectors, bit for bit
    assert fused_store.read_table("embeddings", spec.key).equals(files)
    assert fused_store.read_table("embedding_failures", spec.key).num_rows == 0
    assert times.images == 5 and times.embedding > 0
    with pytest.raises(ValueError, match="only diffusion batches"):
        generate_and_embed(fused_store, BatchSpec(key="sketch-x", source="sketch", count=1), encoder)


# -- failures -------------------------------------------------------------------------------------


def test_a_missing_model_names_where_it_looked(tmp_path: Path):
    with pytest.raises(ModelLoadError, match=r"no model folder at .*nowhere.*present locally"):
        load_pipeline(str(tmp_path / "nowhere"), device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"from the folder .*empty.*model_index\.json.*present locally"):
        load_pipeline(str(tmp_path / "empty"), device="cpu")
    with pytest.raises(ModelLoadError, match=r"'nobody/no-such-model' from the Hugging Face cache at .*hf download"):
        load_pipeline("nobody/no-such-model", device="cpu")


def test_out_of_memory_names_the_batch_size_and_writes_nothing(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    store = Store(tmp_path / "home")
    settings = _settings(models["never"], batch_size=2)
    spec = plan_diffusion(settings, images=3, partition_size=3)[0]
    before = _ingest(store, spec)
    table_before = store.table_path("images", spec.key).read_bytes()

    def out_of_memory(*args: object, **kwargs: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    unet = load_pipeline(str(models["never"]), device="cpu").pipe.unet
    monkeypatch.setattr(unet, "forward", out_of_memory)
    with pytest.raises(GenerationOutOfMemory, match=r"at batch size 2 .*lower generate\.batch_size from 2 \(try 1\)"):
        ingest_batch(store, spec, workers=2)
    # the partition that was there is untouched: files, table and manifest
    assert {p.name for p in store.partition_images_dir(spec.key).iterdir()} == {
        Path(p).name for p in _paths(store, spec)
    }
    assert sorted(p.read_bytes() for p in store.partition_images_dir(spec.key).iterdir()) == sorted(before.values())
    assert store.table_path("images", spec.key).read_bytes() == table_before
    with pytest.raises(GenerationOutOfMemory, match="batch size is already 1"):
        generate_images(_settings(models["never"], batch_size=1), diffusion_requests(spec)[:1])


def _paths(store: Store, spec: BatchSpec) -> list[str]:
    return store.read_table("images", spec.key).column("path").to_pylist()


def test_new_columns_are_null_for_other_sources(tmp_path: Path):
    from hotdog_dagster.core.io.batches import plan_sketch

    spec = plan_sketch(seed=1, images=2, partition_size=2, size=32)[0]
    images = ingest_batch(Store(tmp_path / "home"), spec, workers=1).images
    for column in (*NEW_COLUMNS, "safety_flagged"):
        assert images.column(column).null_count == 2, column
