"""The initial latent of an X-Dyna video (docs/xdyna_model.md §4), before its noising to the first timestep.

As released, the video does not start from pure noise: the reference latent (VAE latent × 0.18215) is repeated
over the N frames, each element is kept sharp or replaced by a Gaussian-blurred copy of the reference by a fair
coin (`rand >= 0.5` keeps the sharp value), and the result is noised to the first DDIM timestep (961 of 25
steps, where √ᾱ ≈ 0.05, so the reference still shows through).

The blur is torchvision's `GaussianBlur(kernel_size=(9, 9), sigma=(18, 18))` on each frame of the latent: a
separable, normalised 9×9 Gaussian, per channel, with reflect padding. At sigma 18 it is nearly a 9×9 box blur.
The released code draws the mask from the run's seeded CUDA generator (after the VAE's sampling has used it)
and the noise from torch's unseeded global RNG; ours draws both from the seed.

Noising: the official DDIM scheduler forms `x_T = √ᾱ_T · x0 + √(1 − ᾱ_T) · ε`. ComfyUI samples in sigma space,
`x = x0 + σ · ε` with `σ = √((1 − ᾱ) / ᾱ)`, and feeds `x / √(σ² + 1)` to the UNet, which is the same tensor.
The noise is independent per frame and element, as released (one `randn_like` over the whole video).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .seeds import torch_seed

BLUR_KERNEL_SIZE = 9
BLUR_SIGMA = 18.0
SHARP_THRESHOLD = 0.5  # an element stays sharp where its uniform draw is >= this (probability 0.5)

# XORed into the user's seed so the mask is a stream of its own, apart from the initial noise that ComfyUI draws
# from `manual_seed(seed)` (comfy.sample.prepare_noise) and from the window offsets (`windows.window_offsets`).
_MASK_STREAM = 0x626C_7572_6D61_736B


def mask_generator(seed: int) -> torch.Generator:
    """The CPU generator the blur mask of a run with `seed` (0 to 2**64 - 1, read as `seeds.torch_seed`) is drawn from."""
    return torch.Generator(device="cpu").manual_seed(torch_seed(seed) ^ _MASK_STREAM)


def gaussian_kernel(
    size: int = BLUR_KERNEL_SIZE, sigma: float = BLUR_SIGMA, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The normalised `size×size` Gaussian, built as torchvision does (outer product of normalised 1-D kernels)."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"the blur kernel size must be odd and positive, got {size}")
    if sigma <= 0:
        raise ValueError(f"the blur sigma must be positive, got {sigma}")
    half = (size - 1) * 0.5
    x = torch.linspace(-half, half, steps=size, dtype=dtype)
    pdf = torch.exp(-0.5 * (x / sigma).pow(2))
    kernel1d = pdf / pdf.sum()
    return kernel1d[:, None] @ kernel1d[None, :]


def _reflect_indices(size: int, pad: int, device: torch.device) -> torch.Tensor:
    """Source indices of a reflect-padded axis (edge not repeated), folded as often as needed.

    For `pad < size` this is exactly torch's "reflect" padding, which torchvision uses; torch refuses larger pads,
    which only tiny test latents (under 5 rows or columns for a 9×9 kernel) need: folding again extends it.
    """
    i = torch.arange(-pad, size + pad, device=device)
    if size == 1:
        return torch.zeros_like(i)
    period = 2 * (size - 1)
    i = i.remainder(period)
    return torch.where(i < size, i, period - i)


def gaussian_blur(latent: torch.Tensor, size: int = BLUR_KERNEL_SIZE, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """Blur `[..., C, h, w]` per channel with the Gaussian above and reflect padding, as torchvision's GaussianBlur.

    Computed in the latent's dtype (float32 for anything that is not floating point).
    """
    if latent.ndim < 3:
        raise ValueError(f"expected a latent [..., channels, height, width], got shape {tuple(latent.shape)}")
    dtype = latent.dtype if latent.is_floating_point() else torch.float32
    *lead, channels, height, width = latent.shape
    x = latent.to(dtype).reshape(-1, channels, height, width)
    pad = size // 2
    rows = _reflect_indices(height, pad, x.device)
    cols = _reflect_indices(width, pad, x.device)
    x = x.index_select(2, rows).index_select(3, cols)
    kernel = gaussian_kernel(size, sigma, dtype).to(x.device).expand(channels, 1, size, size)
    return F.conv2d(x, kernel, groups=channels).reshape(*lead, channels, height, width)


def sharp_mask(
    num_frames: int, channels: int, height: int, width: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Bernoulli(0.5) mask `[N, C, h, w]`, True where the sharp reference is kept (uniform draw >= 0.5).

    Drawn in the release's order: one uniform tensor of its `[C, N + 1, h, w]` video layout (frame 0 being the
    reference slot it later discards), so a generator in the same state gives the release's mask.
    """
    device = generator.device if generator is not None else torch.device("cpu")
    draws = torch.rand(channels, num_frames + 1, height, width, generator=generator, device=device)
    return (draws[:, 1:] >= SHARP_THRESHOLD).transpose(0, 1)


def initial_latent(reference: torch.Tensor, num_frames: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The clean initial video `[N, C, h, w]`: the reference, per element sharp or blurred by a fair coin.

    Args:
        reference: the scaled reference latent (VAE latent × 0.18215), `[C, h, w]` or `[1, C, h, w]`.
        num_frames: N, the number of frames to generate.
        generator: source of the mask (`mask_generator(seed)`); the mask is moved to the reference's device.
    """
    if reference.ndim == 4 and reference.shape[0] == 1:
        reference = reference[0]
    if reference.ndim != 3:
        raise ValueError(f"expected one reference latent [C, h, w] or [1, C, h, w], got shape {tuple(reference.shape)}")
    if num_frames < 1:
        raise ValueError(f"the video must have at least 1 frame, got {num_frames}; give a frame count of 1 or more")
    channels, height, width = reference.shape
    mask = sharp_mask(num_frames, channels, height, width, generator).to(reference.device)
    # Every frame is the same reference, so blurring it once equals the release's per-frame blur.
    return torch.where(mask, reference, gaussian_blur(reference).to(reference.dtype))
