"""The initial latent (xdyna_core/latents.py): blur, mask, seeding, and noising in DDIM and ComfyUI terms."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.oracles import official_loop
from xdyna_core.latents import (
    BLUR_KERNEL_SIZE,
    BLUR_SIGMA,
    alphas_cumprod,
    ddim_sigmas,
    ddim_timesteps,
    gaussian_blur,
    gaussian_kernel,
    initial_latent,
    initial_noise,
    mask_generator,
    model_input_from_sigma,
    noise_to_sigma,
    noise_to_timestep,
    sharp_mask,
    sigma_from_alpha_cumprod,
)


def reference(seed: int = 0, h: int = 12, w: int = 10) -> torch.Tensor:
    return torch.randn(4, h, w, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------------ blur


def test_kernel_is_a_normalised_near_flat_gaussian():
    k = gaussian_kernel()
    assert k.shape == (BLUR_KERNEL_SIZE, BLUR_KERNEL_SIZE)
    assert math.isclose(k.sum().item(), 1.0, abs_tol=1e-6)
    torch.testing.assert_close(k, k.T)
    torch.testing.assert_close(k, k.flip(0).flip(1))
    x = torch.arange(-4, 5, dtype=torch.float64)
    g = torch.exp(-(x**2) / (2 * BLUR_SIGMA**2))
    torch.testing.assert_close(k.double(), torch.outer(g, g) / g.sum() ** 2, rtol=0, atol=1e-7)
    assert k.min() / k.max() > 0.95  # sigma 18 on a 9x9 support: almost a box filter


def test_blur_is_reflect_padded_per_channel_convolution():
    x = reference(1, 9, 11)[None]
    padded = F.pad(x, (4, 4, 4, 4), mode="reflect")
    expected = F.conv2d(padded, gaussian_kernel().expand(4, 1, 9, 9), groups=4)
    torch.testing.assert_close(gaussian_blur(x), expected, rtol=0, atol=1e-6)
    # per channel: a channel's blur does not see the others
    y = x.clone()
    y[:, 1:] = 0
    torch.testing.assert_close(gaussian_blur(y)[:, 0], gaussian_blur(x)[:, 0])
    # a constant latent stays constant; the mean is roughly kept
    torch.testing.assert_close(gaussian_blur(torch.full((4, 6, 7), 0.3)), torch.full((4, 6, 7), 0.3))


def test_blur_matches_torchvision_gaussian_blur():
    transforms = pytest.importorskip("torchvision.transforms")
    x = reference(2, 9, 13)[None].repeat(3, 1, 1, 1)
    official = transforms.GaussianBlur(kernel_size=(9, 9), sigma=(18, 18))(x)
    torch.testing.assert_close(gaussian_blur(x), official, rtol=0, atol=0)


def test_blur_works_on_latents_smaller_than_the_kernel():
    # torch's reflect padding needs pad < size; tiny test latents (4x6) fold the reflection again.
    x = reference(3, 4, 6)
    out = gaussian_blur(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    rows = torch.tensor([2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1])  # 4 rows reflected (twice at the ends), -4 ... 7
    cols = torch.tensor([4, 3, 2, 1, 0, 1, 2, 3, 4, 5, 4, 3, 2, 1])  # reflect of 6 columns, -4 ... 9
    padded = x[None][:, :, rows][:, :, :, cols]
    expected = F.conv2d(padded, gaussian_kernel().expand(4, 1, 9, 9), groups=4)[0]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(gaussian_blur(torch.full((4, 1, 1), 2.0)), torch.full((4, 1, 1), 2.0))


# ------------------------------------------------------------------------------------------------ mask, mix


def test_initial_latent_mixes_sharp_and_blurred_per_element():
    ref = reference()
    video = initial_latent(ref, 9, mask_generator(7))
    blurred = gaussian_blur(ref)
    assert video.shape == (9, 4, 12, 10)
    sharp = video == ref
    soft = video == blurred
    assert (sharp | soft).all()
    fraction = sharp.float().mean().item()
    assert 0.45 < fraction < 0.55, fraction
    # per element across frames and channels: the frames differ, and so do the channels of one frame
    assert not torch.equal(sharp[0], sharp[1])
    assert not torch.equal(sharp[0, 0], sharp[0, 1])


def test_mask_is_half_on_a_large_latent():
    mask = sharp_mask(16, 4, 64, 64, mask_generator(0))
    assert mask.shape == (16, 4, 64, 64) and mask.dtype == torch.bool
    assert abs(mask.float().mean().item() - 0.5) < 0.005


def test_same_seed_same_latent_different_seed_different_latent():
    ref = reference()
    a = initial_latent(ref, 5, mask_generator(123))
    torch.testing.assert_close(a, initial_latent(ref[None], 5, mask_generator(123)), rtol=0, atol=0)
    assert not torch.equal(a, initial_latent(ref, 5, mask_generator(124)))


def test_mask_follows_the_release_draw_order():
    # Restated release: mask = rand([b, c, N + 1, h, w]) >= 0.5 over the whole video (reference slot included),
    # blurred copy per frame, mixed, then the reference slot reset to the clean reference.
    ref = reference(5, 7, 9)
    n = 6
    video = ref[None, :, None].repeat(1, 1, n + 1, 1, 1)  # b c f h w
    g = torch.Generator().manual_seed(99)
    mask = (torch.rand(*video.shape, generator=g) >= 0.5).float()
    frames = video.permute(0, 2, 1, 3, 4).reshape(n + 1, 4, 7, 9)
    blurred = F.conv2d(F.pad(frames, (4, 4, 4, 4), mode="reflect"), gaussian_kernel().expand(4, 1, 9, 9), groups=4)
    blurred = blurred.reshape(1, n + 1, 4, 7, 9).permute(0, 2, 1, 3, 4)
    mixed = video * mask + blurred * (1 - mask)
    expected = mixed[0, :, 1:].transpose(0, 1)
    ours = initial_latent(ref, n, torch.Generator().manual_seed(99))
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)


def test_mask_stream_is_not_the_noise_stream():
    # ComfyUI draws the noise from manual_seed(seed): the mask must come from another stream of the same seed.
    ours = torch.rand(100, generator=mask_generator(5))
    assert not torch.equal(ours, torch.rand(100, generator=torch.Generator().manual_seed(5)))
    torch.testing.assert_close(ours, torch.rand(100, generator=mask_generator(5)), rtol=0, atol=0)
    with pytest.raises(ValueError, match="seed"):
        mask_generator(-1)


def test_initial_latent_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 1 frame"):
        initial_latent(reference(), 0, mask_generator(0))
    with pytest.raises(ValueError, match="one reference latent"):
        initial_latent(torch.zeros(2, 4, 8, 8), 3, mask_generator(0))


def test_initial_noise_is_comfyui_prepare_noise():
    like = torch.zeros(5, 4, 3, 2, dtype=torch.float16)
    noise = initial_noise(like, 77)
    expected = torch.randn((5, 4, 3, 2), generator=torch.Generator().manual_seed(77), dtype=torch.float32)
    assert noise.dtype == torch.float16
    torch.testing.assert_close(noise, expected.half(), rtol=0, atol=0)
    # each frame gets its own noise
    assert not torch.equal(noise[0], noise[1])


# ------------------------------------------------------------------------------------------------ noising


def test_schedule_matches_the_oracle_and_the_first_timestep():
    table = alphas_cumprod()
    torch.testing.assert_close(table, official_loop.alphas_cumprod(), rtol=0, atol=0)
    assert abs(table[961].sqrt().item() - 0.0498) < 1e-3  # the reference still shows through at t = 961


def test_schedule_agrees_with_comfyui_float64_sqrt_linear():
    # ComfyUI's sqrt_linear: float64 betas and cumprod, sigmas cast to float32.
    betas = torch.linspace(0.00085, 0.012, 1000, dtype=torch.float64)
    comfy = torch.cumprod(1.0 - betas, dim=0)
    torch.testing.assert_close(alphas_cumprod().double(), comfy, rtol=1e-6, atol=0)
    comfy_sigmas = (((1 - comfy) / comfy) ** 0.5).float()
    # float32 1 - ā cancels at the smallest t (1.3e-5 relative at t = 0, 1); 2e-7 from t = 100 on
    ours = sigma_from_alpha_cumprod(alphas_cumprod())
    torch.testing.assert_close(ours, comfy_sigmas, rtol=2e-5, atol=0)
    torch.testing.assert_close(ours[100:], comfy_sigmas[100:], rtol=1e-6, atol=0)


@pytest.mark.parametrize("t", [961, 501, 41, 1])
def test_ddim_noising_equals_comfyui_sigma_noising(t):
    g = torch.Generator().manual_seed(t)
    x0 = initial_latent(reference(), 4, mask_generator(1))
    eps = torch.randn(x0.shape, generator=g)
    a = alphas_cumprod()[t]
    sigma = sigma_from_alpha_cumprod(a)
    ddim = noise_to_timestep(x0, eps, a)
    comfy = model_input_from_sigma(noise_to_sigma(x0, eps, sigma), sigma)
    torch.testing.assert_close(comfy, ddim, rtol=0, atol=1e-5)
    torch.testing.assert_close(ddim, official_loop.add_noise(x0, eps, t), rtol=0, atol=0)
    # and the way back: the x0 that DDIM recovers from the true eps is the clean video
    torch.testing.assert_close((ddim - (1 - a) ** 0.5 * eps) / a**0.5, x0, rtol=0, atol=1e-4)


@pytest.mark.parametrize("steps", [1, 2, 20, 25, 30, 50])
def test_official_timesteps_and_sigmas(steps):
    assert ddim_timesteps(steps) == official_loop.ddim_timesteps(steps)
    sigmas = ddim_sigmas(steps)
    assert sigmas.shape == (steps + 1,) and sigmas[-1] == 0 and (sigmas[:-1] > 0).all()
    assert (sigmas[:-1].diff() < 0).all()
    a = alphas_cumprod()[ddim_timesteps(steps)[0]]
    torch.testing.assert_close(sigmas[0], ((1 - a) / a) ** 0.5)


def test_comfyui_ddim_uniform_matches_only_when_steps_divide_1000():
    def comfy_ddim_uniform(steps):  # the indices ComfyUI's ddim_uniform scheduler picks, high to low
        return list(range(1, 1000, max(1000 // steps, 1)))[::-1]

    assert comfy_ddim_uniform(25) == ddim_timesteps(25)
    assert comfy_ddim_uniform(20) == ddim_timesteps(20)
    assert comfy_ddim_uniform(30) != ddim_timesteps(30) and len(comfy_ddim_uniform(30)) == 31


def test_comfyui_euler_on_these_sigmas_is_the_official_ddim_loop():
    # ComfyUI's `ddim` sampler is Euler in sigma space: x += (sigma_next - sigma) * eps, with the UNet fed
    # x / sqrt(sigma^2 + 1). Given the same eps at every step it retraces DDIM (x_ddim = x / sqrt(sigma^2 + 1)).
    steps = 25
    g = torch.Generator().manual_seed(0)
    x0 = initial_latent(reference(), 3, mask_generator(0))
    noise = torch.randn(x0.shape, generator=g)
    table = alphas_cumprod()
    sigmas = ddim_sigmas(steps)
    ddim = noise_to_timestep(x0, noise, table[961])
    comfy = noise_to_sigma(x0, noise, sigmas[0])
    for i, t in enumerate(ddim_timesteps(steps)):
        torch.testing.assert_close(model_input_from_sigma(comfy, sigmas[i]), ddim, rtol=1e-5, atol=1e-5)
        eps = torch.randn(x0.shape, generator=g)
        ddim = official_loop.ddim_step(ddim, eps, table[t], official_loop.previous_alpha_cumprod(t, steps, table))
        comfy = comfy + (sigmas[i + 1] - sigmas[i]) * eps
    torch.testing.assert_close(comfy, ddim, rtol=0, atol=1e-4)
