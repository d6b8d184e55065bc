"""Half precision, the way users run X-Dyna on GPUs, through ComfyUI on the CPU.

ComfyUI picks, per loader, whether the UNet and ControlNets compute in their weights' dtype or cast them
("manual cast"), from the device's capabilities; `device_computes_in` makes the CPU answer as a GPU would, and
from there on everything is ComfyUI's own code on the path a CUDA GPU takes, in four tiers: fp16 and bf16
(weights and compute), fp16 weights computed in fp32, and bf16 weights computed in fp16.

Bounds: half precision moves the result by an amount set by the model, not by us. Each bound is measured on
the same inputs from the official computation itself (the UNet3D oracle, an independent re-statement of the
release) run in the tier's precision, against the same oracle in fp64: ours must stay within twice that
spread of the fp64 result.
"""

from __future__ import annotations

import pytest
import torch

from tests.host.xdyna_setup import (
    PRECISION_TIERS,
    STORAGE_DTYPES,
    comfy_eps,
    device_computes_in,
    oracle_eps,
    random_reference,
    tiny_xdyna,
    xdyna_patched,
)

H, W, FRAMES, T_INDEX = 4, 6, 5, 500
SPREAD_FACTOR = 2.0


@pytest.fixture(scope="module", params=list(PRECISION_TIERS))
def tier(request, comfy_host):
    storage, compute = PRECISION_TIERS[request.param]
    with device_computes_in(compute):
        yield request.param, storage, compute, tiny_xdyna(comfy_host, seed=11, precision=storage)


def inputs(seed: int):
    gen = torch.Generator().manual_seed(seed)
    latent = torch.randn(FRAMES, 4, H, W, generator=gen) * 4
    noise = torch.randn(FRAMES, 4, H, W, generator=gen)
    return latent, noise, torch.randn(1, 77, 32, generator=gen), torch.randn(1, 77, 32, generator=gen)


def test_the_tiers_compute_as_a_gpu_would(comfy_host, tier):
    import comfy.patcher_extension

    name, storage, compute, tiny = tier
    unet = tiny.model.model
    assert unet.get_dtype() == STORAGE_DTYPES[storage]
    assert (unet.manual_cast_dtype or unet.get_dtype()) == compute
    assert {p.dtype for p in tiny.weights.components.parameters()} == {STORAGE_DTYPES[storage]}
    model = xdyna_patched(comfy_host, tiny, random_reference(comfy_host, tiny.layout, H, W, seed=1))
    seen = []
    model.add_wrapper_with_key(
        comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL,
        "test_dtype",
        lambda executor, x, *args, **kwargs: seen.append(x.dtype) or executor(x, *args, **kwargs),
    )
    latent, noise, text_cond, text_uncond = inputs(0)
    comfy_eps(model, latent, noise, text_cond, text_uncond, 0.0, T_INDEX)
    assert seen and set(seen) == {compute}, name


def test_one_evaluation_stays_within_the_official_half_precision_spread(comfy_host, tier):
    name, storage, compute, tiny = tier
    reference = random_reference(comfy_host, tiny.layout, H, W, seed=1)
    latent, noise, text_cond, text_uncond = inputs(3)
    model = xdyna_patched(comfy_host, tiny, reference)
    uncond, x, sigma = comfy_eps(model, latent, noise, text_cond, text_uncond, 0.0, T_INDEX)
    cond, _, _ = comfy_eps(model, latent, noise, text_cond, text_uncond, 1.0, T_INDEX)
    ours = torch.stack([cond, uncond]).double()
    assert torch.isfinite(ours).all(), name

    args = (reference, x, sigma, T_INDEX, text_cond, text_uncond)
    exact = oracle_eps(tiny.state_dict, *args, dtype=torch.float64).double()
    quantised = {k: v.to(STORAGE_DTYPES[storage]) for k, v in tiny.state_dict.items()}
    official = oracle_eps(quantised, *args, dtype=compute).double()
    spread = (official - exact).abs().max().item()
    error = (ours - exact).abs().max().item()
    assert 0 < spread < 0.2 * exact.abs().max().item(), f"{name}: implausible official spread {spread:.3g}"
    assert error <= SPREAD_FACTOR * spread, f"{name}: error {error:.3g} against the official spread {spread:.3g}"
