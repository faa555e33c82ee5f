"""Image embedding throughput: the asset's batched pipeline against a one-image-at-a-time loop.

The baseline is how an HTTP-per-document indexer embeds: read, decode, preprocess and run the model
with batch 1 for each image. The pipeline is ``core.embedding.embed_paths``: decoding in DataLoader
workers, the model on whole batches. A third figure, the model alone on ready tensors at the same
batch size, shows whether decoding is hidden behind compute (pipeline / model-only close to 1).

    python bench/embed.py                       # embedded default model on this machine's CPU
    python bench/embed.py --model open_clip/ViT-B-32/random --images 20000 --batch-size 1024 --workers 12
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hotdog_dagster.core.decode import decode
from hotdog_dagster.core.embedding import embed_paths
from hotdog_dagster.core.encoder import ClipEncoder
from hotdog_dagster.core.model_names import RANDOM_SKETCH_MODEL
from hotdog_dagster.core.sketch import draw


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
        img = decode(Path(p).read_bytes()).image
        encoder.encode_image_tensor(encoder.preprocess(img).unsqueeze(0))
    return len(paths) / (time.perf_counter() - t0)


def model_only(encoder: ClipEncoder, paths: list[str], batch_size: int) -> float:
    sample = torch.stack([encoder.preprocess(decode(Path(p).read_bytes()).image) for p in paths[:batch_size]])
    if encoder.device.type == "cuda":
        sample = sample.to(encoder.device)
    n_batches = max(1, len(paths) // batch_size)
    encoder.encode_image_tensor(sample)  # warm-up
    t0 = time.perf_counter()
    for _ in range(n_batches):
        encoder.encode_image_tensor(sample)
    return n_batches * len(sample) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=RANDOM_SKETCH_MODEL, help="model spec (random weights are fine for timing)")
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--baseline-images", type=int, default=256, help="images for the slow one-at-a-time loop")
    ap.add_argument("--size", type=int, default=256, help="side of the JPEG files in pixels")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=1, help="DataLoader decode workers")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)

    encoder = ClipEncoder(args.model, device=args.device)
    print(
        f"model {encoder.spec} on {encoder.device}, torch threads {torch.get_num_threads()}, "
        f"batch {args.batch_size}, workers {args.workers}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_jpegs(Path(tmp), args.images, args.size)
        embed_paths(encoder, paths[: args.batch_size], batch_size=args.batch_size, num_workers=0)  # warm-up
        result = embed_paths(encoder, paths, batch_size=args.batch_size, num_workers=args.workers)
        pipeline = result.images_per_second
        forward = model_only(encoder, paths, args.batch_size)
        baseline = one_at_a_time(encoder, paths[: args.baseline_images])
        # the pipeline's vectors are the same vectors the slow path computes
        check = np.stack([encoder.encode_pil([decode(Path(p).read_bytes()).image])[0] for p in paths[:8]])
        agree = float(np.min(np.sum(check * result.vectors[:8], axis=1)))
    print(f"one image at a time (batch 1):   {baseline:10.1f} images/s  ({args.baseline_images} images)")
    print(f"batched pipeline (this project): {pipeline:10.1f} images/s  ({args.images} images)")
    print(f"model only, ready tensors:       {forward:10.1f} images/s")
    print(f"speed-up over one at a time:     {pipeline / baseline:10.2f}x  (target >= 2x)")
    print(f"pipeline / model-only:           {pipeline / forward:10.1%}  (target >= 85%)")
    print(f"min cosine, pipeline vs batch-1: {agree:10.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
