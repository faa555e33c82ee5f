"""Diffusion schedulers by name: the names a profile may use, without importing diffusers.

Settings validate a scheduler name at load time (importing diffusers takes seconds), and generation
turns the name into a diffusers scheduler built from the model's own scheduler config, so a swap
keeps the model's noise schedule (betas, timestep spacing) and changes only the sampling method.
"""

from __future__ import annotations

from typing import Any

#: name -> (diffusers scheduler class, config overrides). ``default`` keeps the model's own scheduler.
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "default": ("", {}),
    "ddim": ("DDIMScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "dpm++_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": False}),
    "dpm++_2m_karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "dpm++_2m_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": False}),
    "dpm++_2m_sde_karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True},
    ),
    # Few-step: LCM needs an LCM-distilled model (or LCM-LoRA) to give good pictures in 2-8 steps.
    "lcm": ("LCMScheduler", {}),
}

SCHEDULER_NAMES: tuple[str, ...] = tuple(SCHEDULERS)


class SchedulerError(ValueError):
    """An unknown scheduler name; the message lists the valid ones."""


def check_scheduler(name: str) -> str:
    """``name`` if it is a known scheduler, else :class:`SchedulerError` listing the valid names."""
    if name not in SCHEDULERS:
        raise SchedulerError(f"unknown scheduler {name!r}; valid schedulers: {', '.join(SCHEDULER_NAMES)}")
    return name
