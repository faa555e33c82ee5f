"""Stable Diffusion generation with diffusers' own pipelines, reproducible image by image.

* One pipeline per (model, device, precision, compile) per process: loading weights costs seconds
  to minutes, so a backfill that runs many partitions in one process loads them once. Weights are
  fp16 (or bf16) on a GPU with PyTorch's scaled-dot-product attention; fp32 on the CPU.
* Every image has its own seed, derived from (run seed, partition, index) in ``batches.py``, and
  its own ``torch.Generator`` on the CPU, so its starting noise is the same on any device and does
  not depend on its neighbours. Images are generated in fixed chunks of ``batch_size`` counted from
  the start of the partition: batched kernels are not bit-identical to single-image ones, so
  :func:`regenerate` replays an image's own chunk and gets the very same pixels.
* The scheduler is a fresh instance per call, built by name from the model's own scheduler config,
  so switching samplers keeps the model's noise schedule and no sampler state leaks between calls.
* Failures say what to do: a model that is not on this machine names where it was looked for; an
  out-of-memory error names the batch size to lower; a bad scheduler lists the valid ones.

Nothing here imports diffusers at module level (it takes seconds); the first load does.
"""

from __future__ import annotations

import functools
import io
import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from hotdog_dagster.core.io.batches import (
    BatchSpec,
    ImageRequest,
    diffusion_requests,
    generate_settings,
    load_batch,
)
from hotdog_dagster.core.io.decode import decode
from hotdog_dagster.core.io.store import CorruptFile, Store, atomic_path
from hotdog_dagster.core.model.encoder import resolve_device
from hotdog_dagster.core.model.names import TINY_DIFFUSION_MODEL
from hotdog_dagster.core.model.schedulers import SCHEDULERS, check_scheduler
from hotdog_dagster.core.settings import GenerateSettings

log = logging.getLogger(__name__)

#: zlib level of the PNGs: 1 writes about three times faster than Pillow's default 6, files ~10% larger.
PNG_COMPRESS_LEVEL = 1


class GenerationError(RuntimeError):
    """Generation cannot go on; the message says what to change."""


class ModelLoadError(GenerationError):
    """The diffusion model is not on this machine or cannot be loaded."""


class GenerationOutOfMemory(GenerationError):
    """The device ran out of memory; the message names the batch size to lower."""


# -- timing ---------------------------------------------------------------------------------------


@dataclass
class StageTimes:
    """Seconds per stage, summed over ``images`` images; pass one in to have it filled.

    ``denoising`` is the pipeline call minus the other stages it contains: the UNet steps, the
    scheduler and the latent bookkeeping. Timing synchronises the GPU at stage boundaries.
    """

    text_encoding: float = 0.0
    denoising: float = 0.0
    vae_decode: float = 0.0
    safety_checker: float = 0.0
    png: float = 0.0
    embedding: float = 0.0
    images: int = 0

    STAGES = ("text_encoding", "denoising", "vae_decode", "safety_checker", "png", "embedding")

    def per_image(self) -> dict[str, float]:
        """Seconds per image for each stage."""
        n = max(self.images, 1)
        return {s: getattr(self, s) / n for s in self.STAGES}

    @property
    def total(self) -> float:
        return sum(getattr(self, s) for s in self.STAGES)


# -- loading --------------------------------------------------------------------------------------


@dataclass
class LoadedPipeline:
    """A diffusers pipeline on its device, with what is needed to build schedulers for it."""

    pipe: Any
    model: str
    device: torch.device
    dtype: torch.dtype
    compiled: bool
    scheduler_class: type
    scheduler_config: Any
    lock: threading.Lock = field(default_factory=threading.Lock)

    def make_scheduler(self, name: str) -> Any:
        """A fresh scheduler ``name`` on this model's noise schedule."""
        class_name, overrides = SCHEDULERS[check_scheduler(name)]
        if not class_name:
            return self.scheduler_class.from_config(self.scheduler_config)
        import diffusers

        return getattr(diffusers, class_name).from_config(self.scheduler_config, **overrides)

    @property
    def attention(self) -> str:
        """The attention implementations of the denoiser, e.g. ``AttnProcessor2_0`` (SDPA)."""
        processors = getattr(_denoiser(self.pipe), "attn_processors", None) or {}
        return ", ".join(sorted({type(p).__name__ for p in processors.values()})) or "unknown"


_PIPELINES: dict[tuple[str, str, str, bool], LoadedPipeline] = {}
_LOAD_LOCK = threading.Lock()


def resolve_dtype(device: torch.device, precision: str) -> torch.dtype:
    """fp32 on the CPU unless asked otherwise; fp16 on a GPU (bf16 when asked)."""
    if precision == "fp32" or (precision == "auto" and device.type == "cpu"):
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision in ("fp16", "auto"):
        return torch.float16
    raise ValueError(f"unknown precision {precision!r}: use auto, fp32, fp16 or bf16")


def load_pipeline(model: str, device: str = "auto", precision: str = "auto", compile: bool = False) -> LoadedPipeline:
    """The pipeline for ``model``, loaded once per process and kept (see :func:`clear_pipelines`)."""
    dev = resolve_device(device)
    dtype = resolve_dtype(dev, precision)
    key = (model, str(dev), str(dtype), compile)
    with _LOAD_LOCK:
        if key not in _PIPELINES:
            t0 = time.perf_counter()
            _PIPELINES[key] = _load(model, dev, dtype, compile)
            log.info("loaded %s on %s (%s) in %.1f s", model, dev, dtype, time.perf_counter() - t0)
        return _PIPELINES[key]


def clear_pipelines() -> None:
    """Forget every loaded pipeline (frees their memory once nothing else holds them)."""
    with _LOAD_LOCK:
        _PIPELINES.clear()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _load(model: str, device: torch.device, dtype: torch.dtype, compile: bool) -> LoadedPipeline:
    if model == TINY_DIFFUSION_MODEL:
        from hotdog_dagster.core.model.tiny_diffusion import tiny_pipeline

        pipe = tiny_pipeline()  # built in fp32
        if dtype != torch.float32:
            pipe.to(dtype=dtype)
    else:
        pipe = _from_pretrained(model, dtype)
    try:
        pipe.to(device)
    except torch.OutOfMemoryError as exc:
        raise GenerationOutOfMemory(
            f"out of memory moving {model!r} to {device} in {str(dtype).removeprefix('torch.')}; "
            "free the device, use precision fp16 or bf16, or a smaller model"
        ) from exc
    pipe.set_progress_bar_config(disable=True)
    _use_sdpa(pipe)
    denoiser = _denoiser(pipe)
    if device.type == "cuda" and getattr(pipe, "unet", None) is not None:
        pipe.unet.to(memory_format=torch.channels_last)  # faster convolutions with fp16 tensor cores
    if compile and denoiser is not None:
        # reduce-overhead replays CUDA graphs: fewer kernel launches per step, worth most at small batches
        denoiser.compile(mode="reduce-overhead" if device.type == "cuda" else "default", fullgraph=True)
    return LoadedPipeline(
        pipe=pipe,
        model=model,
        device=device,
        dtype=dtype,
        compiled=compile,
        scheduler_class=type(pipe.scheduler),
        scheduler_config=pipe.scheduler.config,
    )


def _denoiser(pipe: Any) -> Any:
    """The UNet (Stable Diffusion, SDXL) or transformer (SD3 and later) of a pipeline."""
    unet = getattr(pipe, "unet", None)
    return unet if unet is not None else getattr(pipe, "transformer", None)


def _from_pretrained(model: str, dtype: torch.dtype) -> Any:
    """``AutoPipelineForText2Image`` from a local folder or the local Hugging Face cache, never the network."""
    from diffusers import AutoPipelineForText2Image
    from huggingface_hub.constants import HF_HUB_CACHE

    path = Path(model).expanduser()
    is_hub_id = not path.exists() and model.count("/") == 1 and not model.startswith((".", "/", "~"))
    if not is_hub_id and not path.is_dir():
        raise ModelLoadError(
            f"cannot load diffusion model {model!r}: there is no model folder at {path.resolve()}. Weights must be "
            f"present locally (nothing is downloaded): give a diffusers model folder (model_index.json, safetensors "
            f"weights), a Hugging Face id already in the cache at {HF_HUB_CACHE}, or {TINY_DIFFUSION_MODEL!r} for plumbing"
        )
    where = f"the folder {path.resolve()}" if not is_hub_id else f"the Hugging Face cache at {HF_HUB_CACHE}"
    try:
        with warnings.catch_warnings():  # newer diffusers call it `dtype`; `torch_dtype` works from 0.30 on
            warnings.filterwarnings("ignore", message=".*torch_dtype.*deprecated", category=FutureWarning)
            return AutoPipelineForText2Image.from_pretrained(
                str(path) if not is_hub_id else model, torch_dtype=dtype, local_files_only=True, use_safetensors=True
            )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        cause = str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else type(exc).__name__
        fetch = f"; fetch it once with `hf download {model}` where there is a network" if is_hub_id else ""
        raise ModelLoadError(
            f"cannot load diffusion model {model!r} from {where}: {cause}. Weights must be present locally "
            f"(nothing is downloaded) as safetensors{fetch}"
        ) from exc


def _use_sdpa(pipe: Any) -> None:
    """PyTorch's fused scaled-dot-product attention in the UNet and VAE (diffusers' default on torch 2;
    set explicitly so a pipeline built with another processor still gets it)."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    for name in ("unet", "vae"):
        module = getattr(pipe, name, None)
        processors = getattr(module, "attn_processors", None)
        if processors and all(type(p) in (AttnProcessor, AttnProcessor2_0) for p in processors.values()):
            module.set_attn_processor(AttnProcessor2_0())


# -- generating -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratedImage:
    """One generated picture with what the ``images`` table records about it."""

    request: ImageRequest
    pixels: np.ndarray  # (H, W, 3) uint8, exactly the PNG's pixels
    png: bytes
    safety_flagged: bool | None  # None: no safety checker ran
    columns: dict[str, Any]  # the images-table columns this source fills

    @property
    def source_name(self) -> str:
        return self.request.source_name


def generate_images(
    settings: GenerateSettings, requests: Sequence[ImageRequest], times: StageTimes | None = None
) -> list[GeneratedImage]:
    """Generate ``requests`` in one pipeline call (one batch), each from its own seed."""
    if not requests:
        return []
    loaded = load_pipeline(settings.model, settings.device, settings.precision, settings.compile)
    pipe = loaded.pipe
    scheduler = loaded.make_scheduler(settings.scheduler)
    generators = [torch.Generator("cpu").manual_seed(r.seed) for r in requests]
    with loaded.lock:  # the scheduler and safety checker are set on the shared pipeline for this call
        checker = getattr(pipe, "safety_checker", None)
        pipe.scheduler = scheduler
        if not settings.safety_checker and checker is not None:
            pipe.safety_checker = None
        try:
            with _oom_errors(settings, len(requests), loaded.device), _timed_stages(pipe, loaded.device, times):
                out = pipe(
                    prompt=[r.prompt for r in requests],
                    negative_prompt=[r.negative_prompt for r in requests],
                    num_inference_steps=settings.steps,
                    guidance_scale=settings.guidance,
                    width=settings.width,
                    height=settings.height,
                    generator=generators,
                    output_type="pt",
                )
        finally:
            if checker is not None:
                pipe.safety_checker = checker
    # diffusers' own float -> uint8 rounding (numpy_to_pil), so the pixels equal its PIL output
    pixels = (out.images.float() * 255).round().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    flags = getattr(out, "nsfw_content_detected", None)
    t0 = time.perf_counter()
    images = []
    for i, request in enumerate(requests):
        flagged = None if flags is None else bool(flags[i])
        columns = {
            "caption": request.prompt,
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "seed": request.seed,
            "model": settings.model,
            "scheduler": settings.scheduler,
            "steps": settings.steps,
            "guidance": settings.guidance,
            "safety_flagged": flagged,
        }
        png = encode_png(pixels[i], columns, settings)
        images.append(GeneratedImage(request, pixels[i], png, flagged, columns))
    if times is not None:
        times.png += time.perf_counter() - t0
        times.images += len(requests)
    return images


def generate_partition(spec: BatchSpec, times: StageTimes | None = None) -> Iterator[GeneratedImage]:
    """Every image of a diffusion batch (a ``BatchSpec``), in order, in chunks of its batch size."""
    settings = generate_settings(spec)
    requests = diffusion_requests(spec)
    for start in range(0, len(requests), settings.batch_size):
        yield from generate_images(settings, requests[start : start + settings.batch_size], times)
        log.info(
            "generated %d of %d images of %s", min(start + settings.batch_size, len(requests)), len(requests), spec.key
        )


def encode_png(pixels: np.ndarray, columns: dict[str, Any], settings: GenerateSettings) -> bytes:
    """PNG bytes with the generation parameters in a ``parameters`` text chunk (the convention other
    Stable Diffusion tools read); the same inputs always give the same bytes (no timestamps)."""
    info = PngInfo()
    lines = [columns["prompt"]]
    if columns["negative_prompt"]:
        lines.append(f"Negative prompt: {columns['negative_prompt']}")
    lines.append(
        f"Steps: {settings.steps}, Sampler: {settings.scheduler}, CFG scale: {settings.guidance}, "
        f"Seed: {columns['seed']}, Size: {settings.width}x{settings.height}, Model: {settings.model}"
    )
    info.add_text("parameters", "\n".join(lines))
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="PNG", pnginfo=info, compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


@contextmanager
def _oom_errors(settings: GenerateSettings, n: int, device: torch.device) -> Iterator[None]:
    """Turn an allocator failure into a message that names the batch size to lower."""
    try:
        yield
    except RuntimeError as exc:  # torch.OutOfMemoryError is a RuntimeError, as are MPS and CPU allocator failures
        text = str(exc).lower()
        allocator = ("out of memory", "can't allocate memory", "failed to allocate")
        if not isinstance(exc, torch.OutOfMemoryError) and not any(a in text for a in allocator):
            raise
        if device.type == "cuda":
            torch.cuda.empty_cache()
        lower = (
            f"lower generate.batch_size from {settings.batch_size} (try {max(1, settings.batch_size // 2)})"
            if settings.batch_size > 1
            else "batch size is already 1: lower generate.width/height or use a smaller precision (fp16)"
        )
        raise GenerationOutOfMemory(
            f"out of memory on {device} generating {n} images of {settings.width}x{settings.height} with "
            f"{settings.model!r} at batch size {settings.batch_size} ({settings.precision}); {lower}"
        ) from exc


@contextmanager
def _timed_stages(pipe: Any, device: torch.device, times: StageTimes | None) -> Iterator[None]:
    """Time the pipeline's own stage methods by wrapping them for one call (no-op without ``times``)."""
    if times is None:
        yield
        return
    sync: Callable[[], None] = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    spent = {"text_encoding": 0.0, "vae_decode": 0.0, "safety_checker": 0.0}
    wrapped: list[tuple[Any, str]] = []

    def wrap(owner: Any, method: str, stage: str) -> None:
        original = getattr(owner, method, None)
        if owner is None or original is None:
            return

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            sync()
            t = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                sync()
                spent[stage] += time.perf_counter() - t

        object.__setattr__(owner, method, timed)
        wrapped.append((owner, method))

    wrap(pipe, "encode_prompt", "text_encoding")
    wrap(getattr(pipe, "vae", None), "decode", "vae_decode")
    wrap(pipe, "run_safety_checker", "safety_checker")
    sync()
    t0 = time.perf_counter()
    try:
        yield
    finally:
        sync()
        total = time.perf_counter() - t0
        for owner, method in wrapped:
            object.__delattr__(owner, method)
        times.text_encoding += spent["text_encoding"]
        times.vae_decode += spent["vae_decode"]
        times.safety_checker += spent["safety_checker"]
        times.denoising += total - sum(spent.values())


# -- regenerating ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Regeneration:
    """The outcome of regenerating one stored image."""

    image_id: str
    partition: str
    index: int
    path: str  # the stored file
    written: str | None  # where the regenerated PNG was written, if asked
    matches: bool  # the same pixels as the stored file
    identical_file: bool  # the same bytes
    max_abs_diff: int  # largest difference of one channel of one pixel, 0..255
    replayed_batch: bool  # regenerated inside its original batch (exact) rather than alone
    note: str


def regenerate(store: Store, image_id: str, out: str | Path | None = None) -> Regeneration:
    """Generate image ``image_id`` again from its recorded parameters and compare it with the stored file.

    When the partition's manifest still says what the row records, the image's original batch is
    replayed, which reproduces it exactly on the same hardware and software. When the manifest was
    planned again since, the image is generated alone from its recorded columns (prompt, seed, model,
    scheduler, steps, guidance, size), which can differ in the lowest bits. ``out`` receives the
    regenerated PNG (atomically).
    """
    row = _image_row(store, image_id)
    if row.get("source") != "diffusion":
        raise ValueError(
            f"image {image_id} came from the {row.get('source')!r} source; only generated images regenerate"
        )
    spec = load_batch(store, row["partition"])
    settings = generate_settings(spec)
    requests = diffusion_requests(spec)
    index = int(Path(row["source_name"]).stem)
    recorded = ImageRequest(index, row["source_name"], row["prompt"], row["negative_prompt"] or "", int(row["seed"]))
    same = (
        index < len(requests)
        and requests[index] == recorded
        and (row["model"], row["scheduler"], row["steps"]) == (settings.model, settings.scheduler, settings.steps)
        and row["guidance"] == settings.guidance
        and (row["width"], row["height"]) == (settings.width, settings.height)
    )
    if same:
        start = index - index % settings.batch_size
        image = generate_images(settings, requests[start : start + settings.batch_size])[index - start]
        note = f"replayed batch {start // settings.batch_size} of partition {spec.key} (images {start}..)"
    else:
        alone = settings.model_copy(
            update={
                "model": row["model"],
                "scheduler": row["scheduler"],
                "steps": int(row["steps"]),
                "guidance": float(row["guidance"]),
                "width": int(row["width"]),
                "height": int(row["height"]),
            }
        )
        image = generate_images(alone, [recorded])[0]
        note = (
            f"the manifest of {spec.key} no longer matches this image's recorded parameters (planned again since); "
            "generated alone from the recorded columns, so the lowest bits may differ from the stored file"
        )
    stored_bytes = Path(row["path"]).read_bytes()
    stored = np.asarray(decode(stored_bytes).image)
    diff = (
        int(np.abs(stored.astype(np.int16) - image.pixels.astype(np.int16)).max())
        if stored.shape == image.pixels.shape
        else 255
    )
    written = None
    if out is not None:
        with atomic_path(Path(out)) as tmp:
            tmp.write_bytes(image.png)
        written = str(out)
    return Regeneration(
        image_id=image_id,
        partition=spec.key,
        index=index,
        path=row["path"],
        written=written,
        matches=diff == 0,
        identical_file=stored_bytes == image.png,
        max_abs_diff=diff,
        replayed_batch=same,
        note=note,
    )


def _image_row(store: Store, image_id: str) -> dict[str, Any]:
    """The ``images`` row of one id (partition files are read one by one: their schemas may differ)."""
    for path in store.partition_files("images"):
        try:
            table = pq.read_table(path, filters=[("id", "==", image_id)])
        except (OSError, pa.ArrowException) as exc:  # name the damaged file, as every other reader does
            raise CorruptFile(path, "images", path.stem, f"{type(exc).__name__}: {exc}") from None
        if table.num_rows:
            return table.slice(0, 1).to_pylist()[0]
    raise KeyError(f"no image with id {image_id!r} in {store.table_dir('images')}")
