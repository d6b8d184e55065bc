"""One X-Dyna sampling run on ComfyUI's own sampler: its noise, previews, progress, interrupts and schedulers."""

from __future__ import annotations

import comfy.sample
import comfy.samplers
import latent_preview
import torch

from .context_windows import ContextOptions
from .sigmas import released_sigmas

XDYNA_SCHEDULER = "xdyna_ddim"  # the released DDIM timesteps (xdyna_core/schedule.py)


def sampler_names() -> list[str]:
    return list(comfy.samplers.KSampler.SAMPLERS)


def scheduler_names() -> list[str]:
    """X-Dyna's released schedule first, then ComfyUI's schedulers as they are."""
    return [XDYNA_SCHEDULER, *comfy.samplers.KSampler.SCHEDULERS]


def sample_video(
    model,
    positive,
    negative,
    latent: torch.Tensor,
    seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    denoise: float,
    windows: ContextOptions,
) -> torch.Tensor:
    """Sample `latent` (the clean initial video) with `model` tiled in `windows`, as core's KSampler samples.

    The noise is ComfyUI's for `seed` (so a stock KSampler with that seed adds the same), previews and the
    progress bar come from the stock callback, and `xdyna_ddim` runs the released timesteps for any step count.
    """
    windowed = model.clone()
    windows.apply_to(windowed)
    noise = comfy.sample.prepare_noise(latent, seed)
    callback = latent_preview.prepare_callback(windowed, steps)
    released = scheduler == XDYNA_SCHEDULER
    return comfy.sample.sample(
        windowed,
        noise,
        steps,
        cfg,
        sampler_name,
        comfy.samplers.KSampler.SCHEDULERS[0] if released else scheduler,
        positive,
        negative,
        latent,
        denoise=denoise,
        sigmas=released_sigmas(windowed, steps, denoise, sampler_name) if released else None,
        callback=callback,
        seed=seed,
    )
