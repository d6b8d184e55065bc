"""The official X-Dyna sampling loop over a whole video, re-stated in plain torch from docs/xdyna_model.md §4.

A test oracle, like ``xdyna_unet3d`` (which it calls for every UNet evaluation): it imports nothing from the pack
or from ComfyUI. It restates the release's pipeline call (``animatediff/pipelines/pipeline_xdyna.py``)
with the scheduler it was run with (diffusers ``DDIMScheduler``, ``configs/x_dyna.yaml``):

- DDIM, eta 0, ε-prediction, betas ``linspace(0.00085, 0.012, 1000)`` in float32 (diffusers "linear"), "leading"
  timestep spacing with ``steps_offset`` 1 (961, 921, …, 1 for 25 steps), ``set_alpha_to_one`` (the step after
  the last timestep goes to ᾱ = 1, so the last step returns the x0 prediction), ``clip_sample`` off.
- Per step: the closed-loop window tiling shifted by that step's offset; per window one UNet call with the two CFG
  branches as its batch (unconditional first, as released), the clean reference latent as frame 0 and the window's
  frames after it, all at the step's timestep; each branch's eps summed per frame over the windows and divided by
  the frame's window count; then CFG ``uc + scale · (c − uc)``; then one DDIM step of all frames.

Window offsets are an explicit list (one per step), so a test can feed the same offsets to the ComfyUI sampler.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from tests.oracles.xdyna_unet3d import StateDict, xdyna_unet3d

NUM_TRAIN_TIMESTEPS = 1000
BETA_START = 0.00085
BETA_END = 0.012
STEPS_OFFSET = 1
FINAL_ALPHA_CUMPROD = 1.0  # set_alpha_to_one=True (diffusers' default; the release's config does not change it)

ControlFn = Callable[[list[int], int, int, Tensor], "dict | None"]
WindowsFn = Callable[[int, int], Sequence[Sequence[int]]]


def alphas_cumprod() -> Tensor:
    """ᾱ_t for t = 0 … 999, float32, as diffusers builds it for ``beta_schedule="linear"``."""
    betas = torch.linspace(BETA_START, BETA_END, NUM_TRAIN_TIMESTEPS, dtype=torch.float32)
    return torch.cumprod(1.0 - betas, dim=0)


def ddim_timesteps(steps: int) -> list[int]:
    """ "leading" spacing: ``arange(steps) * (1000 // steps)``, reversed, plus ``steps_offset``."""
    if not 1 <= steps <= NUM_TRAIN_TIMESTEPS:
        raise ValueError(f"steps must be in [1, {NUM_TRAIN_TIMESTEPS}], got {steps}")
    ratio = NUM_TRAIN_TIMESTEPS // steps
    return [i * ratio + STEPS_OFFSET for i in reversed(range(steps))]


def previous_alpha_cumprod(t: int, steps: int, table: Tensor) -> Tensor:
    """ᾱ of the step's target: ``t − 1000 // steps``, or the final ᾱ = 1 when that falls below 0."""
    prev = t - NUM_TRAIN_TIMESTEPS // steps
    return table[prev] if prev >= 0 else torch.tensor(FINAL_ALPHA_CUMPROD)


def ddim_step(sample: Tensor, eps: Tensor, alpha_t: Tensor, alpha_prev: Tensor) -> Tensor:
    """One deterministic DDIM step (eta 0), in the order diffusers computes it:
    ``x0 = (x − √(1 − ᾱ_t) ε) / √ᾱ_t``; ``x_prev = √ᾱ_prev · x0 + √(1 − ᾱ_prev) · ε``."""
    alpha_t = torch.as_tensor(alpha_t, dtype=sample.dtype, device=sample.device)
    alpha_prev = torch.as_tensor(alpha_prev, dtype=sample.dtype, device=sample.device)
    x0 = (sample - (1 - alpha_t) ** 0.5 * eps) / alpha_t**0.5
    return alpha_prev**0.5 * x0 + (1 - alpha_prev) ** 0.5 * eps


def add_noise(x0: Tensor, noise: Tensor, t: int) -> Tensor:
    """DDIMScheduler.add_noise: ``√ᾱ_t · x0 + √(1 − ᾱ_t) · ε`` (the release noises the initial video to t_0)."""
    a = alphas_cumprod().to(dtype=x0.dtype, device=x0.device)[t]
    return a**0.5 * x0 + (1 - a) ** 0.5 * noise


def official_windows(num_frames: int, length: int, overlap: int, offset: int) -> list[list[int]]:
    """The release's context schedule for one step (AnimateDiff ``uniform`` at step 0, context_stride 1, closed
    loop): N ≤ length gives ``[0 … N−1]``; otherwise starts ``0, s, 2s, …`` below N (s = length − overlap), each
    window ``[(e + offset) % N for e in start … start + length − 1]``."""
    if num_frames <= length:
        return [list(range(num_frames))]
    return [
        [(e + offset) % num_frames for e in range(start, start + length)]
        for start in range(0, num_frames, length - overlap)
    ]


def _both_branches(control: dict | None) -> dict | None:
    """ControlNet residuals for both CFG branches: [F, C, h, w] (one for both, as released: same text and hint)
    is repeated to [2, F, C, h, w]; [2, F, C, h, w] (unconditional first) passes through."""
    if control is None:
        return None

    def expand(r: Tensor) -> Tensor:
        return r.unsqueeze(0).expand(2, *r.shape) if r.ndim == 4 else r

    return {"down": [expand(r) for r in control["down"]], "mid": expand(control["mid"])}


def official_sample(
    sd: StateDict,
    init_latent: Tensor,
    reference_latent: Tensor,
    text_cond: Tensor,
    text_uncond: Tensor,
    tokens_cond: Tensor,
    tokens_uncond: Tensor,
    steps: int,
    cfg: float,
    offsets: Sequence[int] | None,
    window_length: int = 16,
    overlap: int = 4,
    control_fn: ControlFn | None = None,
    windows_fn: WindowsFn | None = None,
    unet_kwargs: dict | None = None,
) -> Tensor:
    """Sample a video as the release does and return its final latents ``[N, 4, h, w]``.

    Args:
        sd: official-layout X-Dyna UNet state dict (see ``xdyna_unet3d``).
        init_latent: x_T, the initial video already noised to the first timestep, ``[N, 4, h, w]``.
        reference_latent: the clean reference latent, ``[4, h, w]`` or ``[1, 4, h, w]``; frame 0 of every call.
        text_cond, text_uncond: ``[77, D]`` (or ``[1, 77, D]``) text contexts of the two CFG branches.
        tokens_cond, tokens_uncond: ``[16, D]`` (or ``[1, 16, D]``) IP-Adapter image tokens of the two branches.
        steps, cfg: DDIM steps and guidance scale (any scale; the release crashes below 1).
        offsets: one window offset per step (ignored when N ≤ window_length); None means 0 every step.
        window_length, overlap: the context schedule (16 and 4 as released).
        control_fn: ``control_fn(frame_indices, step_index, t, noisy)`` → ControlNet residuals for those frames
            (``noisy``: the window's current latents ``[F, 4, h, w]``, the UNet's input for them), in
            ``xdyna_unet3d``'s ``control`` layout with [F, C, h', w'] (shared by both branches) or [2, F, C, h', w']
            tensors, or None; called once per window.
        windows_fn: ``windows_fn(num_frames, step_index)`` → the step's windows, replacing the released schedule
            (to judge other schedules, such as ``static``, with the same loop).
        unet_kwargs: extra keywords for ``xdyna_unet3d`` (component switches, scales).
    """
    if init_latent.ndim != 4:
        raise ValueError(f"init_latent must be [N, C, h, w], got shape {tuple(init_latent.shape)}")
    num_frames = init_latent.shape[0]
    timesteps = ddim_timesteps(steps)
    offsets = [0] * steps if offsets is None else list(offsets)
    if len(offsets) != steps:
        raise ValueError(f"need one offset per step: {steps} steps, {len(offsets)} offsets")
    table = alphas_cumprod()
    dtype, device = init_latent.dtype, init_latent.device

    reference = reference_latent.reshape(1, *init_latent.shape[1:]).to(dtype).expand(2, -1, -1, -1)
    text = torch.stack([text_uncond.reshape(text_uncond.shape[-2:]), text_cond.reshape(text_cond.shape[-2:])])
    tokens = torch.stack([tokens_uncond.reshape(tokens_uncond.shape[-2:]), tokens_cond.reshape(tokens_cond.shape[-2:])])
    kwargs = unet_kwargs or {}

    latents = init_latent.clone()
    for step, t in enumerate(timesteps):
        if windows_fn is not None:
            windows = [list(w) for w in windows_fn(num_frames, step)]
        else:
            windows = official_windows(num_frames, window_length, overlap, offsets[step])
        eps_sum = torch.zeros(2, *latents.shape, dtype=dtype, device=device)
        counter = torch.zeros(num_frames, dtype=dtype, device=device)
        for window in windows:
            noisy = latents[window].unsqueeze(0).expand(2, -1, -1, -1, -1)
            control = _both_branches(control_fn(list(window), step, t, latents[window]) if control_fn else None)
            eps = xdyna_unet3d(sd, noisy, reference, t, text, tokens, control=control, **kwargs)
            eps_sum[:, window] = eps_sum[:, window] + eps.to(dtype)
            counter[window] = counter[window] + 1
        if (counter == 0).any():
            raise ValueError(f"step {step}: frames {(counter == 0).nonzero().flatten().tolist()} are in no window")
        eps_uncond, eps_cond = (eps_sum / counter.reshape(1, -1, 1, 1, 1)).unbind(0)
        eps = eps_uncond + cfg * (eps_cond - eps_uncond)
        latents = ddim_step(latents, eps, table[t], previous_alpha_cumprod(t, steps, table))
    return latents
