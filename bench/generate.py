"""Stable Diffusion throughput: images per minute, where one image's time goes, two-step against fused.

Three measurements of the same partition, in one process, after a warm-up batch:

* the stage breakdown: the generator with its stage methods timed (text encoding, denoising, VAE
  decode, safety checker), then PNG encode + write and the embedding of the picture, per image;
* generate-then-embed: ``ingest_batch`` (generate, write PNGs, the images table), then
  ``embed_partition`` reading the files back, as two assets run them;
* fused: ``generate_and_embed``, which embeds the pictures from memory in the same step.

Two-step and fused alternate for ``--rounds`` rounds and the median round counts; the fused vectors
are checked to equal the two-step ones bit for bit.

    python bench/generate.py --tiny                                  # tiny random pipeline, anywhere
    python bench/generate.py --model CompVis/stable-diffusion-v1-4 --steps 50 --batch-size 8 --precision fp16
    python bench/generate.py --model ./sd-turbo --steps 1 --guidance 0 --batch-size 16 --compile

``--tiny`` uses the tiny pipeline of diffusers' own classes with random weights (64x64, 2 steps):
the figures show the cost structure of the code path, not of a real model. A real model must be in
a local folder or the Hugging Face cache; the embedding model defaults to OpenCLIP ViT-B-32 with
random weights (same compute as the trained one, nothing to download).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hotdog_dagster.core.io.batches import BatchSpec, diffusion_requests, plan_diffusion, save_batch
from hotdog_dagster.core.io.ingest import ingest_batch
from hotdog_dagster.core.io.store import Store
from hotdog_dagster.core.model.embedding import embed_model_pixels, embed_partition, model_pixels
from hotdog_dagster.core.model.encoder import ClipEncoder
from hotdog_dagster.core.model.fused import generate_and_embed
from hotdog_dagster.core.model.generation import StageTimes, generate_images, generate_partition, load_pipeline
from hotdog_dagster.core.model.names import RANDOM_SKETCH_MODEL, TINY_DIFFUSION_MODEL
from hotdog_dagster.core.settings import GenerateSettings

LABELS = {
    "text_encoding": "text encoding",
    "denoising": "denoising",
    "vae_decode": "VAE decode",
    "safety_checker": "safety checker",
    "png": "PNG encode+write",
    "embedding": "embedding",
}


def breakdown(spec: BatchSpec, encoder: ClipEncoder, folder: Path, batch_size: int) -> StageTimes:
    """One pass with every stage timed separately (the GPU is synchronised at stage boundaries)."""
    times = StageTimes()
    pixels = []
    for image in generate_partition(spec, times):  # times.png holds the encoding
        t0 = time.perf_counter()
        (folder / f"{image.request.index:05d}.png").write_bytes(image.png)
        times.png += time.perf_counter() - t0
        t0 = time.perf_counter()
        pixels.append(model_pixels(encoder, Image.fromarray(image.pixels, "RGB")))
        times.embedding += time.perf_counter() - t0
    t0 = time.perf_counter()
    embed_model_pixels(encoder, pixels, batch_size=batch_size)
    times.embedding += time.perf_counter() - t0
    return times


def two_step(
    store: Store, spec: BatchSpec, encoder: ClipEncoder, args: argparse.Namespace
) -> tuple[float, float, np.ndarray]:
    t0 = time.perf_counter()
    ingest_batch(store, spec, workers=args.ingest_workers)
    t1 = time.perf_counter()
    table = embed_partition(store, spec.key, encoder, batch_size=args.embed_batch, num_workers=args.embed_workers).table
    return t1 - t0, time.perf_counter() - t1, np.stack(table.column("vector").to_numpy(zero_copy_only=False))


def fused(store: Store, spec: BatchSpec, encoder: ClipEncoder, args: argparse.Namespace) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    result = generate_and_embed(store, spec, encoder, workers=args.ingest_workers, batch_size=args.embed_batch)
    seconds = time.perf_counter() - t0
    return seconds, np.stack(result.embedding.table.column("vector").to_numpy(zero_copy_only=False))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="the tiny random pipeline (64x64, 2 steps unless given)")
    ap.add_argument("--model", help="diffusers model folder or cached Hugging Face id")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--scheduler", default="default")
    ap.add_argument("--size", type=int, help="width and height (default 512, 64 with --tiny)")
    ap.add_argument("--batch-size", type=int, default=4, help="images per denoising pass")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action="store_true", help="torch.compile the denoiser")
    ap.add_argument("--images", type=int, help="images per measured partition (default 48, 16 for a real model)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating two-step / fused rounds; the median counts")
    ap.add_argument("--embed-model", help=f"OpenCLIP spec (default {RANDOM_SKETCH_MODEL} with --tiny, else ViT-B-32)")
    ap.add_argument("--embed-batch", type=int, default=64)
    ap.add_argument("--embed-workers", type=int, default=1, help="decode workers of the two-step embedding")
    ap.add_argument("--ingest-workers", type=int, default=2)
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.tiny and not args.model:
        ap.error("give --model (a local folder or cached id) or --tiny")
    model = TINY_DIFFUSION_MODEL if args.tiny else args.model
    size = args.size or (64 if args.tiny else 512)
    settings = GenerateSettings(
        model=model,
        steps=args.steps or (2 if args.tiny else 50),
        guidance=args.guidance,
        scheduler=args.scheduler,
        width=size,
        height=size,
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
        compile=args.compile,
        seed=1,
    )
    images = args.images or (48 if args.tiny else 16)
    spec = plan_diffusion(settings, images=images, partition_size=images)[0]
    embed_spec = args.embed_model or (RANDOM_SKETCH_MODEL if args.tiny else "open_clip/ViT-B-32/random")

    t0 = time.perf_counter()
    loaded = load_pipeline(settings.model, settings.device, settings.precision, settings.compile)
    load_s = time.perf_counter() - t0
    encoder = ClipEncoder(embed_spec, device=settings.device)
    t0 = time.perf_counter()
    warm = plan_diffusion(settings.model_copy(update={"seed": 2}), settings.batch_size, settings.batch_size)[0]
    generate_images(settings, diffusion_requests(warm))  # warm-up (and compilation, with --compile)
    warm_s = time.perf_counter() - t0
    print(
        f"{model}: {size}x{size}, {settings.steps} steps, scheduler {settings.scheduler}, guidance {settings.guidance}, "
        f"batch {settings.batch_size}, {loaded.dtype} on {loaded.device}, attention {loaded.attention}, "
        f"compile {'on' if settings.compile else 'off'}; embedding {embed_spec}; torch threads {torch.get_num_threads()}"
    )
    print(f"load {load_s:.1f} s (once per process), warm-up batch {warm_s:.1f} s; {images} images per measurement")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "png").mkdir()
        times = breakdown(spec, encoder, root / "png", args.embed_batch)
        gen_only, two, fuse, ingest_s, embed_s = [], [], [], [], []
        same = True
        for r in range(args.rounds):
            a, b = Store(root / f"two{r}"), Store(root / f"fused{r}")
            save_batch(a, spec)
            save_batch(b, spec)
            gen_s, emb_s, vec_two = two_step(a, spec, encoder, args)
            fused_s, vec_fused = fused(b, spec, encoder, args)
            same = same and np.array_equal(vec_two, vec_fused)
            ingest_s.append(gen_s)
            embed_s.append(emb_s)
            two.append(images / (gen_s + emb_s) * 60)
            fuse.append(images / fused_s * 60)
            gen_only.append(images / gen_s * 60)
            print(
                f"  round {r + 1}: generate+write {gen_s:6.2f} s, embed files {emb_s:6.2f} s | fused {fused_s:6.2f} s",
                flush=True,
            )

    per = times.per_image()
    total = sum(per.values())
    print("\nper image (ms), stage breakdown pass:")
    for stage, label in LABELS.items():
        print(f"  {label:18s} {per[stage] * 1e3:9.2f}  {per[stage] / total:6.1%}")
    print(f"  {'total':18s} {total * 1e3:9.2f}")
    worst = max(per, key=per.get)
    print(f"bottleneck: {LABELS[worst]} ({per[worst] / total:.0%} of an image's time)")
    ratios = [f / t for f, t in zip(fuse, two, strict=True)]
    print(
        f"\nimages/min (median of {args.rounds} rounds): generate+write {statistics.median(gen_only):,.0f}; "
        f"generate-then-embed {statistics.median(two):,.0f} "
        f"(ingest {statistics.median(ingest_s):.2f} s + embed {statistics.median(embed_s):.2f} s); "
        f"fused {statistics.median(fuse):,.0f} ({statistics.median(ratios):.2f}x the two-step)"
    )
    print(f"fused vectors identical to the two-step ones: {'yes' if same else 'NO'}")
    print("load average (1, 5, 15 min) at the end: " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
