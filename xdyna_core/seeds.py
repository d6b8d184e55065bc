"""The one way every seeded draw of the pack reads the user's seed.

ComfyUI's seed widgets (ours too) allow 0 to 2^64 − 1, but the top of that range cannot be used as it is:
ComfyUI's samplers seed generators with `seed + 1` (the `ddim` sampler's noise; k-diffusion's noise samplers
on the CPU), and torch refuses anything past 2^64 − 1 ("Overflow when unpacking long long"). So seeds are taken
modulo 2^63: below 2^63 a seed is used as it is, and 2^63 + s means s.

Below 2^63 nothing changes. Above it, every draw from a CPU generator is unchanged too, because torch's CPU
generator (mt19937) reads only the low 32 bits of its seed: the initial noise, the blur mask, the window
offsets, the ddim and ancestral samplers' noise on the CPU. Only draws that read the whole 64-bit seed (the
SDE samplers' Brownian tree, noise drawn by a CUDA generator) see seed − 2^63 there.
"""

from __future__ import annotations

SEED_MAX = 2**64 - 1  # the widgets' maximum (ComfyUI's own seed range)
TORCH_SEED_MODULUS = 2**63  # leaves room for the `seed + k` ComfyUI's samplers compute


def torch_seed(seed: int) -> int:
    """The seed the pack's draws and ComfyUI's sampler are given for the widget value `seed`."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"the seed must be a whole number from 0 to {SEED_MAX}, got {seed!r}")
    if not 0 <= seed <= SEED_MAX:
        raise ValueError(f"the seed must lie in [0, 2**64 - 1], got {seed}; use a seed in that range")
    return seed % TORCH_SEED_MODULUS
