"""The released sampling schedule on ComfyUI: AnimateDiff's betas as model sampling, the DDIM timesteps as sigmas."""

from __future__ import annotations

import comfy.model_sampling
import comfy.samplers
import torch
from torch import nn

from ..xdyna_core.schedule import sampling_timesteps
from .loaders import XDYNA_SAMPLING_SETTINGS


class XDynaSampling(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.EPS):
    """EPS sampling with AnimateDiff's betas (sqrt_linear), which the official DDIM schedule uses (docs/xdyna_model.md §4)."""


def xdyna_model_sampling() -> nn.Module:
    config = type("XDynaSamplingConfig", (), {"sampling_settings": dict(XDYNA_SAMPLING_SETTINGS)})()
    return XDynaSampling(config)


def released_sigmas(model, steps: int, denoise: float = 1.0, sampler_name: str | None = None) -> torch.Tensor:
    """The released DDIM timesteps for `steps` steps at `denoise`, as the model's sigmas, ending in 0.

    For the samplers that ComfyUI runs on one more step and then drops the penultimate sigma (dpm_2, uni_pc,
    ...), the same is done here, as core's KSampler does for its own schedulers.
    """
    discard_penultimate = sampler_name in comfy.samplers.KSampler.DISCARD_PENULTIMATE_SIGMA_SAMPLERS
    timesteps = sampling_timesteps(steps + discard_penultimate, denoise)
    if not timesteps:
        return torch.zeros(0)
    model_sampling = model.get_model_object("model_sampling")
    sigmas = model_sampling.sigma(torch.tensor(timesteps, dtype=torch.float32)).float().cpu()
    sigmas = torch.cat([sigmas, torch.zeros(1)])
    if discard_penultimate:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas
