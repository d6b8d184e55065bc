"""The initial latent of an X-Dyna video (spec §4), and its noising to the first timestep.

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

BLUR_KERNEL_SIZE = 9
BLUR_SIGMA = 18.0
SHARP_THRESHOLD = 0.5  # an element stays sharp where its uniform draw is >= this (probability 0.5)

# The official DDIMScheduler config (configs/x_dyna.yaml): linear betas from 0.00085 to 0.012 over 1000 steps.
NUM_TRAIN_TIMESTEPS = 1000
BETA_START = 0.00085
BETA_END = 0.012

# XORed into the user's seed so the mask is a stream of its own, apart from the initial noise that ComfyUI draws
# from `manual_seed(seed)` and from the window offsets (`windows.window_offsets`).
_MASK_STREAM = 0x626C_7572_6D61_736B
_MAX_SEED = 2**64 - 1


def mask_generator(seed: int) -> torch.Generator:
    """The CPU generator the blur mask of a run with `seed` is drawn from."""
    if not 0 <= seed <= _MAX_SEED:
        raise ValueError(f"the seed must lie in [0, 2**64 - 1], got {seed}")
    return torch.Generator(device="cpu").manual_seed(seed ^ _MASK_STREAM)


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


def initial_noise(like: torch.Tensor, seed: int) -> torch.Tensor:
    """Standard normal noise shaped like `like`, drawn in float32 on the CPU from a generator seeded with `seed`,
    as ComfyUI's `comfy.sample.prepare_noise` does, so a stock KSampler with the same seed adds the same noise."""
    if not 0 <= seed <= _MAX_SEED:
        raise ValueError(f"the seed must lie in [0, 2**64 - 1], got {seed}")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn(like.shape, generator=generator, dtype=torch.float32, device="cpu")
    return noise.to(device=like.device, dtype=like.dtype)


# ---------------------------------------------------------------------------------------------- noise schedule


def alphas_cumprod(
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS, beta_start: float = BETA_START, beta_end: float = BETA_END
) -> torch.Tensor:
    """ᾱ_t of the official scheduler: float32 cumulative product of 1 − linspace(beta_start, beta_end).

    diffusers' "linear" schedule, which ComfyUI calls "sqrt_linear" (its "linear" means scaled_linear). ComfyUI
    forms the same product in float64 before casting its sigmas to float32; the two agree to ~1e-6 relative.
    """
    betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
    return torch.cumprod(1.0 - betas, dim=0)


def ddim_timesteps(steps: int, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> list[int]:
    """The official DDIM timesteps, "leading" spacing with steps_offset 1: 961, 921, …, 1 for 25 steps.

    ComfyUI's `ddim_uniform` scheduler gives the same list only when `steps` divides 1000 (10, 20, 25, 40, 50,
    …); for other counts it starts higher and takes one step more (30 steps: 991, 958, …, 1 against the
    release's 958, 925, …, 1), so sigmas built from this list are needed to match the release there.
    """
    if not 1 <= steps <= num_train_timesteps:
        raise ValueError(f"steps must lie in [1, {num_train_timesteps}], got {steps}")
    ratio = num_train_timesteps // steps
    return [i * ratio + 1 for i in reversed(range(steps))]


def ddim_sigmas(steps: int) -> torch.Tensor:
    """ComfyUI-style sigmas of the official timesteps, ending in 0 (the release's last step goes to ᾱ = 1)."""
    table = alphas_cumprod()
    timesteps = torch.tensor(ddim_timesteps(steps))
    return torch.cat([sigma_from_alpha_cumprod(table[timesteps]), torch.zeros(1)])


def sigma_from_alpha_cumprod(alpha_cumprod: torch.Tensor | float) -> torch.Tensor:
    """ComfyUI's sigma of a timestep: `√((1 − ᾱ) / ᾱ)`."""
    a = torch.as_tensor(alpha_cumprod)
    return ((1 - a) / a) ** 0.5


def noise_to_timestep(x0: torch.Tensor, noise: torch.Tensor, alpha_cumprod: torch.Tensor | float) -> torch.Tensor:
    """The official forward process (DDIMScheduler.add_noise): `√ᾱ · x0 + √(1 − ᾱ) · ε`."""
    a = torch.as_tensor(alpha_cumprod, dtype=x0.dtype, device=x0.device)
    return a**0.5 * x0 + (1 - a) ** 0.5 * noise


def noise_to_sigma(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """ComfyUI's noising of a latent to `sigma` below the schedule's maximum: `x0 + σ · ε`."""
    return x0 + torch.as_tensor(sigma, dtype=x0.dtype, device=x0.device) * noise


def model_input_from_sigma(x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """What ComfyUI feeds an ε-prediction UNet for `x` at `sigma`: `x / √(σ² + 1)` (sigma_data 1)."""
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    return x / (s**2 + 1) ** 0.5
