"""The initial latent (xdyna_core/latents.py): blur, mask and seeding."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from xdyna_core.latents import (
    BLUR_KERNEL_SIZE,
    BLUR_SIGMA,
    gaussian_blur,
    gaussian_kernel,
    initial_latent,
    mask_generator,
    sharp_mask,
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
