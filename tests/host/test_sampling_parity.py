"""A whole X-Dyna sampling run in ComfyUI equals the official loop re-stated in plain torch.

Ours: the pack's nodes (Apply Dynamics-Adapter, Apply ControlNets with pose and S-Face ControlNets, Temporal
Sampler) on ComfyUI's own sampler. The oracle: `tests/oracles/official_loop.py` (DDIM over closed-loop windows,
eps averaged before CFG) calling the UNet3D oracle, with ControlNet residuals from diffusers' ControlNetModel
loaded with the same official-layout weights. Same initial latents, noise and window offsets.
"""

from __future__ import annotations

import pytest
import torch

from tests.fixtures.official_layout import TINY_UNET
from tests.fixtures.weights import controlnet_state_dict
from tests.host.support_nodes import TinyControlNet
from tests.host.xdyna_setup import (
    PRECISION_TIERS,
    SD15_LATENT_SCALE,
    STORAGE_DTYPES,
    apply_controlnets,
    device_computes_in,
    pack,
    random_reference,
    tiny_xdyna,
)
from tests.oracles.official_loop import add_noise, ddim_timesteps, official_sample

diffusers = pytest.importorskip("diffusers", reason="diffusers' ControlNetModel computes the oracle's residuals")

H, W, STEPS, CFG, SEED = 4, 6, 3, 7.5, 1234
POSE_SEED, FACE_SEED = 8, 9


@pytest.fixture(scope="module")
def setup(comfy_host):
    TinyControlNet.glue = pack(comfy_host, "xdyna_comfy.loaders")
    # Trained-like gains: full-gain random adapter/motion residuals compound into activations whose 3-step
    # trajectories fp32 cannot pin to 1e-4 in either implementation (each part is shown to matter at full gain
    # in test_model_parity.py).
    tiny = tiny_xdyna(comfy_host, seed=31, residual_gain=0.1, output_gain=0.1)
    reference = random_reference(comfy_host, TINY_UNET, H, W, seed=5)
    gen = torch.Generator().manual_seed(77)
    # As released, both branches encode the same (empty) prompt; they differ by their IP-Adapter image tokens.
    text_cond = torch.randn(1, 77, 32, generator=gen)
    text_uncond = text_cond.clone()
    return tiny, reference, text_cond, text_uncond


def diffusers_controlnet(hint_channels: int, seed: int, storage=torch.float32, compute=torch.float32):
    model = diffusers.ControlNetModel(
        in_channels=4,
        conditioning_channels=hint_channels,
        block_out_channels=TINY_UNET.block_out_channels,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        layers_per_block=2,
        cross_attention_dim=TINY_UNET.cross_attention_dim,
        attention_head_dim=8,
        conditioning_embedding_out_channels=(16, 32, 96, 256),
    )
    sd = controlnet_state_dict(TINY_UNET, hint_channels, seed)
    model.load_state_dict({k: v.to(storage).to(compute) for k, v in sd.items()})
    return model.to(compute).eval()


def hints(frames: int, channels: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(frames, H * 8, W * 8, channels, generator=gen)
    images[:, 0, 0], images[:, -1, -1] = 0.0, 1.0  # the clip spans 0..1: the official min-max is the identity
    return images


def ours(comfy_host, setup, frames, pose, face, tiny=None, precision="fp32"):
    tiny_fp32, reference, text_cond, text_uncond = setup
    tiny = tiny or tiny_fp32
    model_nodes = pack(comfy_host, "nodes.model_nodes")
    sampling = pack(comfy_host, "nodes.sampling_nodes")
    model = model_nodes.XDynaApplyDynamicsAdapter.execute(tiny.model, tiny.weights, reference, 1.0).args[0]
    positive, negative = apply_controlnets(
        comfy_host,
        [[text_cond, {}]],
        [[text_uncond, {}]],
        pose_controlnet=TinyControlNet().load(POSE_SEED, 3, precision)[0] if pose is not None else None,
        pose_images=pose,
        face_controlnet=TinyControlNet().load(FACE_SEED, 6, precision)[0] if face is not None else None,
        face_condition=face,
    )
    out = sampling.XDynaTemporalSampler.execute(
        model,
        positive,
        negative,
        reference,
        frames,
        SEED,
        STEPS,
        CFG,
        "ddim",
        "ddim_uniform",
        16,
        4,
        "uniform_closed_loop",
        1.0,
    ).args[0]
    return out["samples"] * SD15_LATENT_SCALE


def official(comfy_host, setup, frames, pose, face, storage=torch.float32, dtype=torch.float32):
    """The official loop computing in `dtype` on weights stored in `storage` (latents in `dtype` too, as released)."""
    import comfy.sample

    tiny, reference, text_cond, text_uncond = setup
    sampling = pack(comfy_host, "nodes.sampling_nodes")
    windows = pack(comfy_host, "xdyna_core.windows")
    clean = sampling.xdyna_initial_latent(reference, frames, SEED)["samples"]
    noise = comfy.sample.prepare_noise(clean, SEED)
    x_t = add_noise(clean * SD15_LATENT_SCALE, noise, ddim_timesteps(STEPS)[0]).to(dtype)
    networks = [
        (diffusers_controlnet(3, POSE_SEED, storage, dtype), pose),
        (diffusers_controlnet(6, FACE_SEED, storage, dtype), face),
    ]
    networks = [(n, h.to(dtype)) for n, h in networks if h is not None]
    texts = torch.cat([text_uncond, text_cond]).to(dtype)  # the oracle's branch order: [uncond, cond]

    @torch.no_grad()
    def control_fn(window, step, t, noisy):
        total = None
        for network, hint in networks:
            per_branch = []
            for text in texts:
                down, mid = network(
                    noisy.to(dtype),
                    t,
                    encoder_hidden_states=text.expand(len(window), -1, -1),
                    controlnet_cond=hint[window].movedim(-1, 1),
                    return_dict=False,
                )
                per_branch.append({"down": list(down), "mid": mid})
            both = {
                "down": [torch.stack([a, b]) for a, b in zip(per_branch[0]["down"], per_branch[1]["down"])],
                "mid": torch.stack([per_branch[0]["mid"], per_branch[1]["mid"]]),
            }
            if total is None:
                total = both
            else:
                total = {
                    "down": [a + b for a, b in zip(total["down"], both["down"])],
                    "mid": total["mid"] + both["mid"],
                }
        return total

    sd = {k: v.to(storage).to(dtype) for k, v in tiny.state_dict.items()}
    with torch.no_grad():
        return official_sample(
            sd,
            x_t,
            (reference.latent * SD15_LATENT_SCALE).to(dtype),
            text_cond.to(dtype),
            text_uncond.to(dtype),
            reference.image_tokens.to(dtype),
            reference.uncond_image_tokens.to(dtype),
            STEPS,
            CFG,
            offsets=windows.window_offsets(SEED, STEPS, 16),
            control_fn=control_fn,
        )


@pytest.mark.parametrize("frames", [7, 16, 20], ids=["one-window", "exact-window", "wrap-around"])
def test_sampling_run_matches_the_official_loop(comfy_host, setup, frames):
    pose, face = hints(frames, 3, 1), hints(frames, 6, 2)
    result = ours(comfy_host, setup, frames, pose, face)
    expected = official(comfy_host, setup, frames, pose, face)
    assert result.shape == expected.shape == (frames, 4, H, W)
    error = (result - expected).abs().max().item()
    assert error <= 1e-4, f"max abs error {error:.2e} after {STEPS} steps, N={frames}"
    # the ControlNets took part (residuals from both, sliced per window): without them the video differs
    unsteered = ours(comfy_host, setup, frames, None, None)
    assert (result - unsteered).abs().max().item() > 1e-2


def test_same_seed_same_video_and_seeds_differ(comfy_host, setup):
    pose, face = hints(20, 3, 1), hints(20, 6, 2)
    first = ours(comfy_host, setup, 20, pose, face)
    assert torch.equal(first, ours(comfy_host, setup, 20, pose, face))
    global SEED
    saved, SEED = SEED, SEED + 1
    try:
        assert not torch.allclose(first, ours(comfy_host, setup, 20, pose, face), atol=1e-3)
    finally:
        SEED = saved


@pytest.mark.parametrize("name", list(PRECISION_TIERS))
def test_half_precision_runs_stay_within_the_official_half_precision_spread(comfy_host, setup, name):
    """A whole 20-frame run (two windows, wrap-around, both ControlNets) in each precision tier.

    Bound: the official loop run in the tier's precision (latents too, as the release runs in fp16) against the
    official loop in fp64, on the same weights; ours must stay within twice that spread of the fp64 result.
    """
    storage, compute = PRECISION_TIERS[name]
    frames = 20
    pose, face = hints(frames, 3, 1), hints(frames, 6, 2)
    with device_computes_in(compute):
        tiny = tiny_xdyna(comfy_host, seed=31, residual_gain=0.1, output_gain=0.1, precision=storage)
        result = ours(comfy_host, setup, frames, pose, face, tiny=tiny, precision=storage).double()
    assert torch.isfinite(result).all()
    exact = official(comfy_host, setup, frames, pose, face, torch.float64, torch.float64).double()
    half = official(comfy_host, setup, frames, pose, face, STORAGE_DTYPES[storage], compute).double()
    spread = (half - exact).abs().max().item()
    error = (result - exact).abs().max().item()
    assert 0 < spread < 0.2 * exact.abs().max().item(), f"{name}: implausible official spread {spread:.3g}"
    assert error <= 2.0 * spread, f"{name}: error {error:.3g} against the official spread {spread:.3g}"
