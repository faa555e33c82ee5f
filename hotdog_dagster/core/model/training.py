"""Train the bundled ``hotdog-sketch`` OpenCLIP model from scratch on the procedural sketch world.

No pretrained weights can be fetched offline, so the embedded default ships a small model trained
here, with open_clip's own model, tokenizer and ``ClipLoss``: the weights are an ordinary open_clip
checkpoint that loads through the same ``create_model_and_transforms`` path as any other.

Drawing is slow Python, so the training images are drawn once, passed through the model's own
evaluation preprocessing (so training sees exactly the pixels inference sees) and kept as one uint8
tensor. Each epoch then shows them flipped and shifted, with a freshly chosen caption wording.

The recipe (``model_configs/hotdog-sketch.json`` and the defaults below) is sized for a 2-core CPU:
about 5 minutes idle, under 20 with other work on the same cores. The vision tower is open_clip's
ModifiedResNet, not a ViT: at this budget ViTs (patch 8 and 16, widths 128-192) learnt colours,
food, faces and frames but never told a circle from a square of the same colour (P@10 0.3-0.8),
while the convolutional stem separates them in a run of the same length.
"""

from __future__ import annotations

import functools
import hashlib
import math
import multiprocessing as mp
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from open_clip.loss import ClipLoss
from PIL import Image
from safetensors.torch import save_file

import hotdog_dagster.core.model.encoder  # noqa: F401  (registers the hotdog-sketch config with open_clip)
from hotdog_dagster.core.model.sketch import CLASS_WEIGHTS, SHAPES, captions, draw

ARCH = "hotdog-sketch"
_say = functools.partial(print, flush=True)  # progress shows live even when stdout is a pipe
#: The seed the shipped weights were trained with; evaluation uses a different one.
DEFAULT_SEED = 0
DRAW_SIZE = 128  # the size the sketch source draws at, so training pixels match the pipeline's
MAX_SHIFT = 4  # pixels of random translation at 64 px: position is not part of any label
PARALLEL_RENDER_MIN = 2000  # below this, worker start-up costs more than it saves

# The shipped recipe: 250 steps x 256 pairs = 64k pairs, four passes over 16k drawn images.
STEPS = 250
BATCH_SIZE = 256
IMAGES = 16000
LR = 1e-3

#: What each drawn scene of the training set is. Food, faces and black frames are learnt within a
#: few hundred steps; telling a circle from a square of the same colour is the slow part. So a
#: "shapes" scene is drawn once per shape, the same colour, size, place and background each time
#: (``draw`` with a forced label keeps every other choice), and the variants share a batch: the
#: only way to tell their captions apart is the shape itself.
TRAIN_SCENE_WEIGHTS: dict[str, float] = {
    "one_hot_dog": 0.16,
    "two_hot_dogs": 0.16,
    "hamburger": 0.11,
    "face": 0.11,
    "black": 0.06,
    "shapes": 0.40,
}


@dataclass
class TrainReport:
    """What a training run did, for the log, the CLI and the asset metadata."""

    out_path: str
    seed: int
    steps: int
    batch_size: int
    images: int
    lr: float
    warmup: int
    temperature_lr_scale: float
    threads: int
    model_config: dict[str, Any]
    render_seconds: float
    train_seconds: float
    images_per_second: float
    final_loss: float
    logit_scale: float
    file_bytes: int
    sha256: str
    loss_curve: list[tuple[int, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        return (
            f"trained {ARCH} seed={self.seed}: {self.steps} steps x {self.batch_size} "
            f"on {self.images} drawn images, lr {self.lr:g} (warmup {self.warmup}), {self.threads} threads\n"
            f"  drawing {self.render_seconds:.0f}s, training {self.train_seconds:.0f}s "
            f"({self.images_per_second:.0f} images/s), final loss {self.final_loss:.3f}, "
            f"logit scale {self.logit_scale:.1f}\n"
            f"  wrote {self.out_path} ({self.file_bytes / 1e6:.1f} MB, sha256 {self.sha256[:16]})"
        )


#: What a caption is written from: label, colour, size word, background name.
Attributes = tuple[str, str | None, str | None, str | None]


@dataclass(frozen=True)
class SketchSet:
    """Pre-rendered training images and the attributes their captions are written from."""

    pixels: torch.Tensor  # (N, 3, H, W) uint8, after the model's eval resize/crop
    attributes: list[Attributes]
    scenes: np.ndarray  # (N,) stream index each row was drawn from; shape variants share one

    def __len__(self) -> int:
        return len(self.attributes)


def train_sketch_model(
    out_path: Path | str,
    seed: int = DEFAULT_SEED,
    steps: int = STEPS,
    batch_size: int = BATCH_SIZE,
    images: int = IMAGES,
    lr: float = LR,
    warmup: int | None = None,
    weight_decay: float = 0.1,
    temperature_lr_scale: float = 10.0,
    threads: int = 2,
    log_every: int = 25,
    log: Callable[[str], None] = _say,
) -> TrainReport:
    """Train ``hotdog-sketch`` on ``images`` drawn sketches and save fp16 safetensors at ``out_path``.

    Deterministic for a given seed and thread count: the torch seed, the data order, the captions
    and the augmentation all come from ``seed``, and the thread count is pinned because float
    reductions split differently across threads.
    """
    out_path = Path(out_path)
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    data = render_sketch_set(seed, images, workers=threads)
    render_seconds = time.perf_counter() - t0
    log(f"drew {len(data)} training images in {render_seconds:.0f}s")

    t_train = time.perf_counter()
    model, curve = fit(
        data, seed=seed, steps=steps, batch_size=batch_size, lr=lr, warmup=warmup,
        weight_decay=weight_decay, temperature_lr_scale=temperature_lr_scale, threads=threads,
        log_every=log_every, log=log,
    )  # fmt: skip
    train_seconds = time.perf_counter() - t_train

    save_weights(model, out_path)
    data_bytes = out_path.read_bytes()
    report = TrainReport(
        out_path=str(out_path),
        seed=seed,
        steps=steps,
        batch_size=batch_size,
        images=len(data),
        lr=lr,
        warmup=warmup if warmup is not None else default_warmup(steps),
        temperature_lr_scale=temperature_lr_scale,
        threads=threads,
        model_config=open_clip.get_model_config(ARCH),
        render_seconds=round(render_seconds, 2),
        train_seconds=round(train_seconds, 2),
        images_per_second=round(steps * batch_size / max(train_seconds, 1e-9), 1),
        final_loss=curve[-1][1] if curve else float("nan"),
        logit_scale=round(float(model.logit_scale.exp().item()), 3),
        file_bytes=len(data_bytes),
        sha256=hashlib.sha256(data_bytes).hexdigest(),
        loss_curve=curve,
    )
    log(report.format())
    return report


def fit(
    data: SketchSet,
    seed: int = DEFAULT_SEED,
    steps: int = STEPS,
    batch_size: int = BATCH_SIZE,
    lr: float = LR,
    warmup: int | None = None,
    weight_decay: float = 0.1,
    temperature_lr_scale: float = 10.0,
    threads: int = 2,
    log_every: int = 25,
    log: Callable[[str], None] = _say,
) -> tuple[torch.nn.Module, list[tuple[int, float]]]:
    """The training loop proper, on an already drawn set: returns the model and its loss curve."""
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    rng = np.random.default_rng([seed, 1])
    warmup = warmup if warmup is not None else default_warmup(steps)
    model, _, preprocess = open_clip.create_model_and_transforms(ARCH, pretrained=None)
    mean, std = _normalisation(preprocess)
    optimizer = _optimizer(model, lr, weight_decay, temperature_lr_scale)
    loss_fn = ClipLoss()
    tokens = _TokenCache(open_clip.get_tokenizer(ARCH))
    model.train()
    curve: list[tuple[int, float]] = []
    running = None
    started = time.perf_counter()
    for step, idx in enumerate(_batch_order(rng, data.scenes, batch_size, steps), start=1):
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, steps, lr, warmup) * group["lr_scale"]
        pixels = _augment(data.pixels[idx], rng, mean, std)
        text = tokens([_caption(data.attributes[i], rng) for i in idx])
        image_features, text_features, logit_scale = model(pixels, text)
        loss = loss_fn(image_features, text_features, logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # as open_clip's trainer does: a temperature below 1/100 only overfits
            model.logit_scale.clamp_(0, math.log(100))
        value = float(loss.detach())
        running = value if running is None else 0.9 * running + 0.1 * value
        if step % log_every == 0 or step == steps:
            curve.append((step, round(running, 4)))
            log(_progress(step, steps, running, model, batch_size, time.perf_counter() - started, optimizer))
    return model.eval(), curve


def save_weights(model: torch.nn.Module, out_path: Path) -> None:
    """fp16 safetensors, written atomically: half the size, and no pickle to trust on load.

    open_clip's loader copies the fp16 tensors into the fp32 model, so nothing special is needed
    to read them back (``create_model_and_transforms(..., pretrained=path)``).
    """
    state = {
        k: (v.detach().to(torch.float16) if v.is_floating_point() else v.detach()).contiguous()
        for k, v in model.state_dict().items()
    }  # integer buffers (BatchNorm's batch counter) keep their type
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    # one metadata key only: safetensors writes the metadata map in hash order, so two keys
    # would make byte-identical weights differ from run to run
    save_file(state, str(tmp), metadata={"format": "pt"})
    tmp.replace(out_path)


def render_sketch_set(
    seed: int, count: int, workers: int = 2, scene_weights: dict[str, float] | None = None
) -> SketchSet:
    """Draw ``count`` training images from stream ``seed`` once, in forked workers when worth it.

    ``scene_weights`` (default ``TRAIN_SCENE_WEIGHTS``) sets what each stream index is drawn as;
    everything else about an image is ``draw(seed, index, label=...)``'s, so the set is a pure
    function of its arguments. Workers only touch PIL and numpy (never torch), so forking a process
    that already runs torch's thread pool is safe, and callers need no ``__main__`` guard (spawn would).
    """
    size = _image_size()
    plan = plan_scenes(seed, count, scene_weights or TRAIN_SCENE_WEIGHTS)
    jobs = [(seed, plan[start : start + 500], size) for start in range(0, count, 500)]
    if workers > 1 and count >= PARALLEL_RENDER_MIN and "fork" in mp.get_all_start_methods():
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
            parts = list(pool.map(_render_chunk, jobs))
    else:
        parts = [_render_chunk(job) for job in jobs]
    if not parts:
        raise ValueError("count must be positive")
    data = SketchSet(
        pixels=torch.from_numpy(np.concatenate([p for p, _ in parts])),
        attributes=[a for _, attrs in parts for a in attrs],
        scenes=np.array([index for index, _ in plan], dtype=np.int64),
    )
    _check_matches_preprocess(seed, data, plan[0])
    return data


def plan_scenes(seed: int, count: int, weights: dict[str, float]) -> list[tuple[int, str]]:
    """``(stream index, class)`` for each of ``count`` training images (cheap: nothing is drawn)."""
    unknown = set(weights) - set(CLASS_WEIGHTS) - {"shapes"}
    if unknown:
        raise ValueError(f"unknown sketch scenes {sorted(unknown)}: use class names or 'shapes'")
    names = list(weights)
    p = np.array([weights[n] for n in names], dtype=np.float64)
    rng = np.random.default_rng([seed, 2])
    plan: list[tuple[int, str]] = []
    index = 0
    while len(plan) < count:
        kind = names[int(rng.choice(len(names), p=p / p.sum()))]
        plan.extend((index, label) for label in (SHAPES if kind == "shapes" else (kind,)))
        index += 1
    return plan[:count]


def _render_chunk(args: tuple[int, list[tuple[int, str]], int]) -> tuple[np.ndarray, list[Attributes]]:
    seed, plan, size = args
    out = np.empty((len(plan), 3, size, size), dtype=np.uint8)
    attrs = []
    for row, (index, label) in enumerate(plan):
        sketch = draw(seed, index, size=DRAW_SIZE, label=label)
        out[row] = _to_model_pixels(sketch.image, size).transpose(2, 0, 1)
        attrs.append((sketch.label, sketch.color, sketch.size, sketch.background))
    return out, attrs


def _to_model_pixels(image: Image.Image, size: int) -> np.ndarray:
    """open_clip's eval resize (bicubic, shorter side) and centre crop, as PIL alone: no torch in workers."""
    w, h = image.size
    scale = size / min(w, h)
    image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


def _check_matches_preprocess(seed: int, data: SketchSet, first: tuple[int, str]) -> None:
    """Fail loudly if open_clip's eval transform ever stops matching the pixels trained on."""
    preprocess = open_clip.image_transform(_image_size(), is_train=False)
    mean, std = _normalisation(preprocess)
    expected = preprocess(draw(seed, first[0], size=DRAW_SIZE, label=first[1]).image)
    got = (data.pixels[:1].float() / 255.0 - mean) / std
    if not torch.allclose(got[0], expected, atol=1e-4):
        raise RuntimeError("training pixels differ from open_clip's eval preprocessing; update _to_model_pixels")


def _image_size() -> int:
    size = open_clip.get_model_config(ARCH)["vision_cfg"]["image_size"]
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def _normalisation(preprocess: Any) -> tuple[torch.Tensor, torch.Tensor]:
    norm = preprocess.transforms[-1]
    mean = torch.tensor(norm.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(norm.std, dtype=torch.float32).view(1, 3, 1, 1)
    return mean, std


def _optimizer(
    model: torch.nn.Module, lr: float, weight_decay: float, temperature_lr_scale: float
) -> torch.optim.Optimizer:
    """AdamW with open_clip's split: no decay on gains, biases, embeddings or the temperature.

    The temperature gets its own, faster rate: Adam moves a parameter by about ``lr`` a step, so at
    ``lr`` a run of a few hundred steps could lift the logit scale only from 14 to ~16 whatever the
    loss wanted; at ten times that it follows the loss (about 23 at the end of the shipped run).
    """
    decay, no_decay, temperature = [], [], []
    for name, p in model.named_parameters():
        if name == "logit_scale":
            temperature.append(p)
        elif p.ndim < 2 or "ln" in name or "bias" in name or "embedding" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "lr_scale": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0},
        {"params": temperature, "weight_decay": 0.0, "lr_scale": temperature_lr_scale},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6, fused=True)


def default_warmup(steps: int) -> int:
    """A tenth of the run: a run with 7 warmup steps at twice this rate stalled at chance loss."""
    return max(1, steps // 10)


def _lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warmup then cosine to zero: the schedule open_clip trains with."""
    if step <= warmup:
        return peak * step / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * peak * (1 + math.cos(math.pi * min(1.0, progress)))


def _batch_order(rng: np.random.Generator, scenes: np.ndarray, batch_size: int, steps: int) -> list[np.ndarray]:
    """Epoch-wise shuffles of whole scenes, so shape variants meet in a batch and every image is
    seen once before any is seen twice."""
    count = len(scenes)
    if count < batch_size:
        raise ValueError(f"need at least batch_size={batch_size} images, got {count}")
    starts = np.flatnonzero(np.diff(scenes)) + 1  # a scene's variants are consecutive rows
    groups = np.split(np.arange(count), starts)
    batches: list[np.ndarray] = []
    while len(batches) < steps:
        order = np.concatenate([groups[k] for k in rng.permutation(len(groups))])
        batches.extend(order[s : s + batch_size] for s in range(0, count - batch_size + 1, batch_size))
    return batches[:steps]


def _augment(batch: torch.Tensor, rng: np.random.Generator, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Random flips and small shifts (edge padded): nothing in a label depends on side or position."""
    n, _, h, w = batch.shape
    flips = rng.random(n) < 0.5
    shifts = rng.integers(0, 2 * MAX_SHIFT + 1, size=(n, 2))
    x = batch.float().div_(255.0)
    x[torch.from_numpy(flips)] = x[torch.from_numpy(flips)].flip(-1)
    padded = torch.nn.functional.pad(x, (MAX_SHIFT,) * 4, mode="replicate")
    out = torch.empty_like(x)
    for i, (dy, dx) in enumerate(shifts):
        out[i] = padded[i, :, dy : dy + h, dx : dx + w]
    return out.sub_(mean).div_(std)


def _caption(attributes: Attributes, rng: np.random.Generator) -> str:
    variants = captions(*attributes)
    return variants[int(rng.integers(len(variants)))]


class _TokenCache:
    """The sketch world has a few hundred distinct captions: tokenize each once, not every step."""

    def __init__(self, tokenizer: Callable[[Sequence[str]], torch.Tensor]) -> None:
        self._tokenizer = tokenizer
        self._rows: dict[str, torch.Tensor] = {}

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        missing = [t for t in dict.fromkeys(texts) if t not in self._rows]
        if missing:
            for text, row in zip(missing, self._tokenizer(missing), strict=True):
                self._rows[text] = row
        return torch.stack([self._rows[t] for t in texts])


def _progress(
    step: int, steps: int, loss: float, model: Any, batch_size: int, elapsed: float, optimizer: torch.optim.Optimizer
) -> str:
    rate = step * batch_size / max(elapsed, 1e-9)
    eta = (steps - step) * batch_size / max(rate, 1e-9)
    return (
        f"step {step}/{steps}  loss {loss:.3f}  lr {optimizer.param_groups[0]['lr']:.2e}  "
        f"scale {float(model.logit_scale.detach().exp()):.1f}  {rate:.0f} img/s  eta {eta / 60:.1f} min"
    )
