"""The patched ComfyUI model evaluates exactly what the spec's UNet3D evaluates, through ComfyUI's sampling path.

One Euler step from sigma_t to 0 returns the CFG-combined x0 prediction, from which the CFG-combined eps is
recovered and compared with the plain-torch oracle (`tests/oracles/xdyna_unet3d.py`) evaluated on the same
inputs: [reference + F frames] x 2 CFG branches. cfg = 0 evaluates both branches in one batch and returns the
unconditional eps; cfg = 1 makes ComfyUI evaluate the conditional branch alone. Together they check each
branch's eps on its own, without CFG's amplification of rounding.
"""

from __future__ import annotations

import pytest
import torch

from tests.host.xdyna_setup import comfy_eps, oracle_eps, pack, random_reference, tiny_xdyna

H, W, T_INDEX = 4, 6, 500
ALL = ("dynamics_adapter", "ip_adapter", "motion_modules", "joint_group_norm")
ORACLE_SWITCH = {
    "dynamics_adapter": "adapter",
    "ip_adapter": "ip",
    "motion_modules": "motion",
    "joint_group_norm": "joint_group_norm",
}


@pytest.fixture(scope="module")
def tiny(comfy_host):
    return tiny_xdyna(comfy_host, seed=11)


def patched_model(comfy_host, tiny, reference, parts, strength=1.0):
    model_patch = pack(comfy_host, "xdyna_comfy.model_patch")
    model = tiny.model.clone()
    model_patch.XDynaPatch(tiny.weights.components, reference, strength, parts=frozenset(parts)).apply_to(
        model, tiny.weights.patcher
    )
    return model


def oracle_branches(tiny, reference, x, sigma, text_cond, text_uncond, parts):
    """eps of the conditional and unconditional branches, [2, F, 4, h, w]."""
    switches = {ORACLE_SWITCH[p]: p in parts for p in ALL}
    return oracle_eps(tiny.state_dict, reference, x, sigma, T_INDEX, text_cond, text_uncond, **switches)


def inputs(tiny, frames, seed):
    gen = torch.Generator().manual_seed(seed)
    dim = tiny.layout.cross_attention_dim
    latent = torch.randn(frames, 4, H, W, generator=gen) * 4
    noise = torch.randn(frames, 4, H, W, generator=gen)
    return latent, noise, torch.randn(1, 77, dim, generator=gen), torch.randn(1, 77, dim, generator=gen)


@pytest.mark.parametrize("frames", [1, 5, 16])
@pytest.mark.parametrize(
    "parts", [ALL, ("dynamics_adapter",), ("ip_adapter",), ("motion_modules",), ("joint_group_norm",)], ids="+".join
)
def test_patched_model_matches_the_spec(comfy_host, tiny, frames, parts):
    reference = random_reference(comfy_host, tiny.layout, H, W, seed=frames)
    latent, noise, text_cond, text_uncond = inputs(tiny, frames, seed=100 + frames)
    model = patched_model(comfy_host, tiny, reference, parts)
    uncond, x, sigma = comfy_eps(model, latent, noise, text_cond, text_uncond, 0.0, T_INDEX)
    cond, _, _ = comfy_eps(model, latent, noise, text_cond, text_uncond, 1.0, T_INDEX)
    expected = oracle_branches(tiny, reference, x, sigma, text_cond, text_uncond, parts)
    for name, ours, ref in (("cond", cond, expected[0]), ("uncond", uncond, expected[1])):
        assert ours.shape == ref.shape == (frames, 4, H, W)
        error = (ours - ref).abs().max().item()
        assert error <= 1e-4, f"{name}: max abs error {error:.2e} for parts {parts}, F={frames}"

    # Nothing is vacuous: each part changes the prediction compared with plain SD1.5 on the same inputs
    # (motion modules need at least two frames to act on).
    if parts == ("motion_modules",) and frames == 1:
        return
    plain_model = patched_model(comfy_host, tiny, reference, ())
    plain, _, _ = comfy_eps(plain_model, latent, noise, text_cond, text_uncond, 0.0, T_INDEX)
    assert (uncond - plain).abs().max().item() > 1e-3, f"parts {parts} changed nothing at F={frames}"
