"""The bundled sketch model keeps its promises on a held-out seed, and its training reproduces.

The quality tests score the shipped weights on images the model never saw (another seed of the
sketch stream) against the world's ground truth; an untrained model runs through the same
evaluation and must fail it, so the figures cannot pass vacuously.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hotdog_dagster.core.model.encoder import BUNDLED_DIR, ClipEncoder
from hotdog_dagster.core.model.evaluation import EVAL_SEED, TARGETS, EvalReport, evaluate_sketch_model
from hotdog_dagster.core.model.sketch import CLASS_PROMPTS, COLORS, SHAPE_PROMPTS, SHAPES, shape_prompt
from hotdog_dagster.core.model.training import ARCH, DEFAULT_SEED, render_sketch_set, train_sketch_model

BUNDLED = BUNDLED_DIR / f"{ARCH}.safetensors"
#: Enough held-out images that every colour x shape has the 10 matches precision@10 needs.
EVAL_N = 1000
MAX_BYTES = 25 * 1024 * 1024


@pytest.fixture(scope="module")
def report() -> EvalReport:
    return evaluate_sketch_model(f"open_clip/{ARCH}/bundled", seed=EVAL_SEED, n=EVAL_N)


def test_held_out_seed_is_not_the_training_seed() -> None:
    assert EVAL_SEED != DEFAULT_SEED


def test_bundled_weights_are_small_fp16_safetensors() -> None:
    assert BUNDLED.exists()
    assert BUNDLED.stat().st_size <= MAX_BYTES
    state = load_file(str(BUNDLED))
    assert {t.dtype for t in state.values() if t.is_floating_point()} == {torch.float16}


def test_zero_shot_accuracy(report: EvalReport) -> None:
    confusion = np.array(report.confusion)
    assert confusion.shape == (5, 5)
    assert confusion.sum() == report.zero_shot_images >= 400
    assert report.zero_shot_accuracy == pytest.approx(np.trace(confusion) / confusion.sum())
    assert report.zero_shot_accuracy >= TARGETS["zero_shot_accuracy"], report.format()


@pytest.mark.parametrize("prompt", list(CLASS_PROMPTS.values()))
def test_class_prompt_precision_at_10(report: EvalReport, prompt: str) -> None:
    assert report.precision_at_10[prompt] >= TARGETS["precision_at_10"], report.format()


def test_colour_shape_precision_at_10(report: EvalReport) -> None:
    wanted = {shape_prompt(s, c) for s in SHAPE_PROMPTS for c in COLORS}
    scored = wanted & set(report.precision_at_10)
    assert len(scored) == len(wanted) == 24, f"unscored prompts: {report.skipped_prompts}"
    low = {p: report.precision_at_10[p] for p in scored if report.precision_at_10[p] < TARGETS["precision_at_10"]}
    assert not low, report.format()


def test_image_queried_with_itself_scores_one_and_ranks_first(report: EvalReport) -> None:
    assert report.self_min_score >= TARGETS["self_score"]
    assert report.self_rank1_fraction == 1.0


def test_blue_square_is_nearer_a_blue_circle_than_a_red_circle(report: EvalReport) -> None:
    assert report.blue_square_queries >= 10
    assert report.blue_minus_red_margin > 0
    assert report.blue_over_red_fraction >= TARGETS["blue_over_red"], report.format()


def test_report_formats_and_serialises(report: EvalReport) -> None:
    text = report.format()
    assert "zero-shot accuracy" in text and "an orange circle with a black frame" in text and "targets: all met" in text
    as_dict = report.to_dict()
    assert as_dict["precision_at_10"] == report.precision_at_10
    assert report.failures() == []


def test_untrained_model_fails_the_same_evaluation() -> None:
    random_model = evaluate_sketch_model(f"open_clip/{ARCH}/random", seed=EVAL_SEED, n=300)
    assert random_model.zero_shot_accuracy < 0.6
    assert random_model.failures()


def _tiny_run(path: Path, seed: int) -> dict[str, torch.Tensor]:
    train_sketch_model(path, seed=seed, steps=3, batch_size=16, images=48, log_every=1, log=lambda _: None)
    return load_file(str(path))


def test_training_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    first = _tiny_run(tmp_path / "a.safetensors", seed=5)
    again = _tiny_run(tmp_path / "b.safetensors", seed=5)
    other = _tiny_run(tmp_path / "c.safetensors", seed=6)
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_trained_file_loads_through_the_encoder(tmp_path: Path) -> None:
    path = tmp_path / "tiny.safetensors"
    report = train_sketch_model(path, seed=1, steps=2, batch_size=16, images=32, log=lambda _: None)
    assert report.file_bytes == path.stat().st_size and report.steps == 2
    enc = ClipEncoder(f"open_clip/{ARCH}/{path}", device="cpu")
    saved = load_file(str(path))
    assert torch.equal(enc.model.logit_scale.detach().half(), saved["logit_scale"])
    vectors = enc.encode_texts(["a red circle", "one hot dog"])
    assert vectors.shape == (2, enc.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_training_shapes_come_as_variants_of_one_scene() -> None:
    data = render_sketch_set(seed=0, count=60, workers=1)
    assert data.pixels.shape == (60, 3, 64, 64) and data.pixels.dtype == torch.uint8
    scenes: dict[int, list[tuple[str, str | None, str | None, str | None]]] = {}
    for scene, attrs in zip(data.scenes.tolist(), data.attributes, strict=True):
        scenes.setdefault(scene, []).append(attrs)
    variants = [rows for rows in scenes.values() if len(rows) > 1]
    assert variants, "no shape scene in 60 images"
    for rows in variants[:-1]:  # the last scene may be cut short by the count
        assert tuple(r[0] for r in rows) == SHAPES
        assert len({r[1:] for r in rows}) == 1  # same colour, size and background: only the shape differs
