"""A Stable Diffusion pipeline of diffusers' own classes at toy sizes, with random weights.

Tokenizer, CLIP text encoder, UNet, PNDM scheduler, VAE (the same 8x downscale as SD) and the
safety checker are the classes a real checkpoint loads into, only a few thousand parameters each,
so the whole generation path runs on any CPU in a fraction of a second per image with nothing
downloaded. The weights come from a fixed seed, so two processes build the same model and its
images regenerate exactly. Its pictures are noise: it checks plumbing and cost structure, not quality.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch

#: The tiny model's native resolution (8 latent pixels a side, times the VAE's factor of 8).
TINY_SIZE = 64


def tiny_pipeline(seed: int = 0, safety_threshold: float = 1.0) -> Any:
    """A ``StableDiffusionPipeline`` with random weights drawn from ``seed`` (the global RNG is left alone).

    ``safety_threshold`` is every concept threshold of the safety checker: the checker flags an image
    whose embedding's cosine to a concept exceeds it, so 1.0 (the default) never flags and -1.0
    always does.
    """
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=32,
                intermediate_size=37,
                num_attention_heads=4,
                num_hidden_layers=2,
                max_position_embeddings=77,
                projection_dim=32,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
        unet = UNet2DConditionModel(
            sample_size=TINY_SIZE // 8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(8, 16),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=4,
            norm_num_groups=4,
        )
        vae = AutoencoderKL(
            sample_size=TINY_SIZE,
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            block_out_channels=(8, 8, 8, 8),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=1,
            norm_num_groups=4,
        )
        checker = StableDiffusionSafetyChecker(
            CLIPConfig(
                text_config={
                    "hidden_size": 16,
                    "intermediate_size": 16,
                    "num_attention_heads": 2,
                    "num_hidden_layers": 1,
                    "vocab_size": 16,
                    "bos_token_id": 0,
                    "eos_token_id": 1,
                    "pad_token_id": 1,
                },
                vision_config={
                    "hidden_size": 16,
                    "intermediate_size": 16,
                    "num_attention_heads": 2,
                    "num_hidden_layers": 1,
                    "image_size": 32,
                    "patch_size": 8,
                },
                projection_dim=8,
            )
        )
        with torch.no_grad():
            checker.concept_embeds.copy_(torch.randn_like(checker.concept_embeds))
            checker.special_care_embeds.copy_(torch.randn_like(checker.special_care_embeds))
            checker.concept_embeds_weights.fill_(safety_threshold)
            checker.special_care_embeds_weights.fill_(max(safety_threshold, 1.0))  # never shifts the verdict
    scheduler = PNDMScheduler(  # Stable Diffusion v1's own scheduler config
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=scheduler,
        safety_checker=checker.eval(),
        feature_extractor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        requires_safety_checker=True,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_pipeline(dest: str | Path, seed: int = 0, safety_threshold: float = 1.0) -> Path:
    """Write the tiny pipeline as a diffusers model folder (safetensors), loadable by path like a real one."""
    dest = Path(dest)
    tiny_pipeline(seed=seed, safety_threshold=safety_threshold).save_pretrained(dest, safe_serialization=True)
    return dest


def tiny_tokenizer() -> Any:
    """A byte-level CLIP tokenizer whose vocabulary is the 256 byte symbols (no merges), built locally.

    Every character becomes a token, so prompts of up to about 75 characters are seen whole; that is
    all a random-weight text encoder needs.
    """
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    symbols = sorted(ByteLevel.alphabet())
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({f"{s}</w>": len(symbols) + i for i, s in enumerate(symbols)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n")
        return CLIPTokenizer.from_pretrained(tmp, model_max_length=77)
