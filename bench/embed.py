"""Image embedding throughput: the asset's batched pipeline against a one-image-at-a-time loop.

The baseline is how an HTTP-per-document indexer embeds: read, decode, preprocess and run the model
with batch 1 for each image. The pipeline is ``core.embedding.embed_paths``, the code the
``image_embeddings`` asset runs: decoding in DataLoader workers, the model on whole batches. A third
figure, the model alone on ready tensors at the same batch size, shows whether decoding is hidden
behind compute (pipeline / model-only close to 1).

Each model is measured in rounds that alternate pipeline, model-only and baseline; the ratios are
taken within each round and the median round counts, so a neighbour that slows the machine for a
while slows both sides of a ratio alike. Image counts are sized so that every measurement lasts
about ``--seconds``; the pipeline's figure includes starting its DataLoader workers.

    python bench/embed.py                                     # the three CPU models below
    python bench/embed.py --model open_clip/ViT-B-32/random   # one model
    python bench/embed.py --model open_clip/ViT-B-32/random --batch-size 1024 --workers 12 --seconds 20  # GPU

Why three models by default: whether decoding can hide behind compute depends on how much compute
there is per image. On a 2-core CPU the shipped sketch model needs about as much core time per
image as decoding a JPEG, so no schedule can hide decoding there; ViT-B-32 is the usual real model;
ViT-S-32 sits between them.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hotdog_dagster.core.io.decode import decode
from hotdog_dagster.core.model.embedding import ImageFileDataset, embed_paths
from hotdog_dagster.core.model.encoder import ClipEncoder
from hotdog_dagster.core.model.names import RANDOM_SKETCH_MODEL
from hotdog_dagster.core.model.sketch import draw

DEFAULT_MODELS = (RANDOM_SKETCH_MODEL, "open_clip/ViT-S-32/random", "open_clip/ViT-B-32/random")
TARGET_SPEEDUP = 2.0
TARGET_HIDDEN = 0.85


def make_jpegs(folder: Path, n: int, size: int) -> list[str]:
    """Distinct JPEG files (drawn once, then varied by flips and rotations so drawing stays cheap)."""
    base = [draw(7, i, size=size).image for i in range(min(n, 64))]
    paths = []
    for i in range(n):
        img = base[i % len(base)]
        img = img.rotate(90 * ((i // len(base)) % 4))
        if (i // (4 * len(base))) % 2:
            img = img.transpose(0)
        path = folder / f"{i:06d}.jpg"
        img.save(path, format="JPEG", quality=90)
        paths.append(str(path))
    return paths


def one_at_a_time(encoder: ClipEncoder, paths: list[str]) -> float:
    t0 = time.perf_counter()
    for p in paths:
        encoder.encode_pil([decode(Path(p).read_bytes()).image])  # the same preprocessing as the pipeline
    return len(paths) / (time.perf_counter() - t0)


def ready_batch(encoder: ClipEncoder, paths: list[str], batch_size: int) -> torch.Tensor:
    sample = torch.stack([encoder.preprocess(decode(Path(p).read_bytes()).image) for p in paths[:batch_size]])
    return sample.to(encoder.device) if encoder.device.type == "cuda" else sample


def model_only(encoder: ClipEncoder, sample: torch.Tensor, n_images: int) -> float:
    n_batches = max(1, n_images // len(sample))
    t0 = time.perf_counter()
    for _ in range(n_batches):
        encoder.encode_image_tensor(sample)
    return n_batches * len(sample) / (time.perf_counter() - t0)


def per_image_ms(encoder: ClipEncoder, paths: list[str]) -> tuple[float, float]:
    """Core time to read, decode and preprocess one image, on one thread: the worker's path
    (core/preprocess.py, uint8 out) against open_clip's PIL Compose (float out)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ds = ImageFileDataset(paths, encoder.preprocess, encoder.input_size, encoder.split_preprocess)
        t0 = time.perf_counter()
        for i in range(len(ds)):
            ds[i]
        ours = (time.perf_counter() - t0) / len(ds)
        t0 = time.perf_counter()
        for p in paths:
            encoder.preprocess(decode(Path(p).read_bytes(), draft_size=min(encoder.input_size)).image)
        compose = (time.perf_counter() - t0) / len(paths)
    finally:
        torch.set_num_threads(threads)
    return ours * 1e3, compose * 1e3


@dataclass(frozen=True)
class ModelFigures:
    spec: str
    images: int
    baseline_images: int
    baseline: float  # images/s, median round
    pipeline: float
    forward: float
    speedup: float  # median of the rounds' pipeline / baseline
    hidden: float  # median of the rounds' pipeline / model-only
    agree: float
    prep_ms: float  # one image's read + decode + preprocess, one core
    compose_ms: float  # the same with open_clip's PIL Compose


def measure(spec: str, args: argparse.Namespace, folder: Path, files: list[str]) -> tuple[ModelFigures, list[str]]:
    encoder = ClipEncoder(spec, device=args.device)
    sample = ready_batch(encoder, files or make_jpegs(folder, args.batch_size, args.size), args.batch_size)
    encoder.encode_image_tensor(sample)  # warm-up
    probe = model_only(encoder, sample, len(sample))
    images = min(
        args.max_images, max(args.batch_size, math.ceil(probe * args.seconds / args.batch_size) * args.batch_size)
    )
    baseline_images = max(8, min(images, int(probe / TARGET_SPEEDUP * args.seconds / 2)))
    if len(files) < images:
        files = make_jpegs(folder, images, args.size)  # grows the shared set; earlier names are rewritten alike
    paths = files[:images]
    embed_paths(encoder, paths[: args.batch_size], batch_size=args.batch_size, num_workers=0)  # warm-up
    pipeline, forward, baseline = [], [], []
    vectors = None
    for r in range(args.rounds):
        result = embed_paths(encoder, paths, batch_size=args.batch_size, num_workers=args.workers)
        vectors = result.vectors
        pipeline.append(result.images_per_second)
        forward.append(model_only(encoder, sample, images))
        baseline.append(one_at_a_time(encoder, paths[:baseline_images]))
        print(
            f"  round {r + 1}: pipeline {pipeline[-1]:9.1f}  model-only {forward[-1]:9.1f}  "
            f"one at a time {baseline[-1]:8.1f} images/s",
            flush=True,
        )
    # the pipeline's vectors are the vectors the one-at-a-time path computes
    check = np.stack([encoder.encode_pil([decode(Path(p).read_bytes()).image])[0] for p in paths[:8]])
    agree = float(np.min(np.sum(check * vectors[:8], axis=1)))
    prep_ms, compose_ms = per_image_ms(encoder, paths[:256])
    figures = ModelFigures(
        spec=str(encoder.spec),
        images=images,
        baseline_images=baseline_images,
        baseline=float(np.median(baseline)),
        pipeline=float(np.median(pipeline)),
        forward=float(np.median(forward)),
        speedup=float(np.median(np.divide(pipeline, baseline))),
        hidden=float(np.median(np.divide(pipeline, forward))),
        agree=agree,
        prep_ms=prep_ms,
        compose_ms=compose_ms,
    )
    return figures, files


def verdict(value: float, target: float) -> str:
    return "met" if value >= target else "NOT met"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model", nargs="+", default=list(DEFAULT_MODELS), help="model specs (random weights time the same)"
    )
    ap.add_argument("--seconds", type=float, default=8.0, help="about how long each measurement runs")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per model; the median round counts")
    ap.add_argument("--max-images", type=int, default=8192)
    ap.add_argument("--size", type=int, default=256, help="side of the JPEG files in pixels")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1, help="DataLoader decode workers")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)

    print(f"torch threads {torch.get_num_threads()}, batch {args.batch_size}, decode workers {args.workers}")
    rows: list[ModelFigures] = []
    with tempfile.TemporaryDirectory() as tmp:
        files: list[str] = []
        for spec in args.model:
            print(f"{spec}:", flush=True)
            figures, files = measure(spec, args, Path(tmp), files)
            rows.append(figures)

    print()
    print(
        f"{'model':34s} {'1-at-a-time':>11s} {'pipeline':>9s} {'model-only':>10s} {'speed-up':>9s} {'pipe/model':>10s}"
    )
    for f in rows:
        print(f"{f.spec:34s} {f.baseline:11.1f} {f.pipeline:9.1f} {f.forward:10.1f} {f.speedup:8.2f}x {f.hidden:10.1%}")
    print(f"(images/s on {args.size}-px JPEG files; medians of {args.rounds} rounds, ratios taken within each round)")
    for f in rows:
        print(
            f"{f.spec}: speed-up {f.speedup:.2f}x vs target {TARGET_SPEEDUP:g}x {verdict(f.speedup, TARGET_SPEEDUP)}; "
            f"pipeline/model-only {f.hidden:.1%} vs target {TARGET_HIDDEN:.0%} {verdict(f.hidden, TARGET_HIDDEN)}; "
            f"{f.images} images, baseline {f.baseline_images}; min cosine pipeline vs batch-1 {f.agree:.5f}; "
            f"per image on one core {f.prep_ms:.2f} ms (open_clip's PIL Compose {f.compose_ms:.2f} ms, "
            f"{f.compose_ms / f.prep_ms:.1f}x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
