"""Reading model weights from a file without ever running code from it.

A ``.pt``/``.bin`` checkpoint is a pickle, and unpickling runs whatever the file says: a checkpoint
downloaded from a forum or swapped on a shared disk can run code as the pipeline's user. So local
weights are read here, and only two ways:

- ``.safetensors`` (preferred): plain tensors and a JSON header, nothing to execute;
- ``.pt``, ``.pth``, ``.bin``: ``torch.load(weights_only=True)``, which refuses any pickle that
  names a function or class outside tensors and plain containers.

Anything else (another suffix, a pickle that needs more, a truncated or foreign file, a file whose
tensors do not fit the architecture) is a :class:`CheckpointRefused` that names the file and why,
before any weights reach the model. The state dict is then given to the model with open_clip's own
conversions, rather than handing the path to open_clip, whose loader falls back to a plain
``torch.load`` on some errors.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pt", ".pth", ".bin")


class CheckpointRefused(ValueError):
    """A checkpoint file that is not loaded; the message names the file and the reason."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a local checkpoint, read with safetensors or ``torch.load(weights_only=True)`` only."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in SAFE_SUFFIXES:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CheckpointRefused(
                f"checkpoint {path} refused: not a readable safetensors file ({_first_line(exc)})"
            ) from None
    elif suffix in PICKLE_SUFFIXES:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise CheckpointRefused(
                f"checkpoint {path} refused: it asks to run or build Python objects beyond tensors, which is never "
                f"unpickled here (weights_only=True); convert it to .safetensors from a copy you trust "
                f"({_first_line(exc)})"
            ) from None
        except (RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError, KeyError) as exc:
            raise CheckpointRefused(
                f"checkpoint {path} refused: not a readable torch checkpoint ({_first_line(exc)})"
            ) from None
    else:
        raise CheckpointRefused(
            f"checkpoint {path} refused: unknown format {suffix or '(no suffix)'}; use .safetensors, or .pt/.pth/.bin "
            "(read with torch.load(weights_only=True))"
        )
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise CheckpointRefused(f"checkpoint {path} refused: it holds no state dict (name -> tensor)")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointRefused(f"checkpoint {path} refused: entry {bad[0]!r} is not a tensor")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Give ``model`` the weights in ``state`` as open_clip's ``load_checkpoint`` would, minus its file reading.

    Mismatched names or shapes (a checkpoint of another architecture, or edited tensors) are a
    :class:`CheckpointRefused` naming the file and the first difference.
    """
    from open_clip.factory import (
        convert_state_dict,
        convert_to_custom_text_state_dict,
        resize_pos_embed,
        resize_text_pos_embed,
    )

    try:
        state = convert_state_dict(model, dict(state))
        if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
            state = convert_to_custom_text_state_dict(state)
        for name in ("logit_scale", "logit_bias"):
            mine = getattr(model, name, None)
            if name in state and mine is not None and mine.ndim != state[name].ndim:
                state[name] = state[name].reshape(mine.shape)
        if "logit_bias" not in state and getattr(model, "logit_bias", None) is not None and "logit_scale" in state:
            state["logit_bias"] = torch.zeros_like(state["logit_scale"])
        position_ids = "text.transformer.embeddings.position_ids"
        if position_ids in state and not hasattr(model, position_ids):
            del state[position_ids]
        resize_pos_embed(state, model)
        resize_text_pos_embed(state, model)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, ValueError, AssertionError, IndexError, TypeError) as exc:
        # open_clip's resizers assert on shapes (an edited positional embedding raised a bare
        # AssertionError before this was caught here).
        raise CheckpointRefused(
            f"checkpoint {path} refused: its tensors do not fit the architecture ({_first_line(exc)})"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(exc).__name__}: {' '.join(lines[:2])}"[:300]
