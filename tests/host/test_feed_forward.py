"""The UNet's transformer feed-forwards run a block of tokens at a time on an X-Dyna MODEL (object patches
holding the same layers): the prediction is the unchunked one and the spec's, in fp32 and bf16, weight patches
still act on the layers, and loading and restoring the model puts the original feed-forwards back."""

from __future__ import annotations

import pytest
import torch

from tests.host.xdyna_setup import (
    comfy_eps,
    device_computes_in,
    oracle_eps,
    pack,
    random_reference,
    tiny_xdyna,
    xdyna_patched,
)

H, W, FRAMES, T_INDEX = 4, 6, 5, 500
# Blocks of other row counts run other matrix kernels; their rounding, compounded through the random tiny
# model, stays within the bound the parity tests hold ComfyUI's computation to against the spec's oracle.
ROUNDING = 1e-4


@pytest.fixture(scope="module")
def tiny(comfy_host):
    return tiny_xdyna(comfy_host, seed=11)


def inputs(seed: int):
    gen = torch.Generator().manual_seed(seed)
    latent = torch.randn(FRAMES, 4, H, W, generator=gen) * 4
    noise = torch.randn(FRAMES, 4, H, W, generator=gen)
    return latent, noise, torch.randn(1, 77, 32, generator=gen), torch.randn(1, 77, 32, generator=gen)


def feed_forward_names(comfy_host, unet) -> list[str]:
    import comfy.ldm.modules.attention as comfy_attention

    chunked = pack(comfy_host, "xdyna_comfy.feed_forward").ChunkedFeedForward
    return [n for n, m in unet.named_modules() if isinstance(m, (comfy_attention.FeedForward, chunked))]


def counting_blocks(unet, name: str) -> list[int]:
    """Token counts of the blocks one feed-forward's projection sees, recorded as the model runs."""
    seen: list[int] = []
    proj = unet.get_submodule(f"{name}.net.0.proj")
    proj.register_forward_hook(lambda module, args, out: seen.append(args[0].numel() // args[0].shape[-1]))
    return seen


def tokens_a_block(comfy_host, monkeypatch, tokens: int) -> None:
    """Make every feed-forward of the tiny UNet (projection 4 x 2 x 32 wide in fp32) take `tokens` a block."""
    monkeypatch.setattr(pack(comfy_host, "xdyna_core.feed_forward"), "FEED_FORWARD_CHUNK_BYTES", tokens * 256 * 4)


def test_every_transformer_feed_forward_is_patched_with_its_own_layers(comfy_host, tiny):
    import comfy.ldm.modules.attention as comfy_attention
    import comfy.utils

    chunked = pack(comfy_host, "xdyna_comfy.feed_forward").ChunkedFeedForward
    unet = tiny.model.model.diffusion_model
    names = feed_forward_names(comfy_host, unet)
    assert names and all(isinstance(unet.get_submodule(n), comfy_attention.FeedForward) for n in names)
    parameters = sorted(n for n, _ in tiny.model.model.named_parameters())
    model = xdyna_patched(comfy_host, tiny, random_reference(comfy_host, tiny.layout, H, W, seed=1))
    patches = {k: v for k, v in model.object_patches.items() if isinstance(v, chunked)}
    assert sorted(patches) == sorted(f"diffusion_model.{n}" for n in names)
    for key, module in patches.items():
        assert module.net is comfy.utils.get_attr(tiny.model.model, key).net  # the very same layers

    model_patch = pack(comfy_host, "xdyna_comfy.model_patch")
    model.patch_model()
    try:
        live = model.model.diffusion_model
        assert all(isinstance(live.get_submodule(n), chunked) for n in names)
        assert sorted(n for n, _ in model.model.named_parameters()) == parameters  # the keys LoRAs name
        again = model.clone()  # patching a patched model's clone wraps nothing twice
        reference = random_reference(comfy_host, tiny.layout, H, W, seed=1)
        model_patch.XDynaPatch(tiny.weights.components, reference).apply_to(again, tiny.weights.patcher)
        assert all(again.object_patches[k] is module for k, module in patches.items())
    finally:
        model_patch.restore_unet(model)
    assert all(type(unet.get_submodule(n)) is comfy_attention.FeedForward for n in names)


def test_blocks_of_tokens_give_the_whole_prediction_and_the_spec(comfy_host, tiny, monkeypatch):
    reference = random_reference(comfy_host, tiny.layout, H, W, seed=2)
    latent, noise, text_cond, text_uncond = inputs(3)
    model = xdyna_patched(comfy_host, tiny, reference)
    unet = tiny.model.model.diffusion_model
    name = feed_forward_names(comfy_host, unet)[0]  # the first block's: full resolution
    blocks = counting_blocks(unet, name)
    whole, x, sigma = comfy_eps(model, latent, noise, text_cond, text_uncond, 0.0, T_INDEX)
    tokens = 2 * (FRAMES + 1) * H * W  # both branches batched, the reference frame in each
    assert blocks == [tokens]
    tokens_a_block(comfy_host, monkeypatch, 10)
    blocks.clear()
    chunked, _, _ = comfy_eps(model, latent, noise, text_cond, text_uncond, 0.0, T_INDEX)
    assert blocks == [10] * (tokens // 10) + ([tokens % 10] if tokens % 10 else [])
    torch.testing.assert_close(chunked, whole, rtol=0, atol=ROUNDING)
    expected = oracle_eps(tiny.state_dict, reference, x, sigma, T_INDEX, text_cond, text_uncond)[1]
    assert (chunked - expected).abs().max().item() <= 1e-4


def test_weight_patches_act_on_the_chunked_layers(comfy_host, tiny, monkeypatch):
    reference = random_reference(comfy_host, tiny.layout, H, W, seed=4)
    latent, noise, text_cond, text_uncond = inputs(5)
    name = feed_forward_names(comfy_host, tiny.model.model.diffusion_model)[0]
    key = f"diffusion_model.{name}.net.0.proj.weight"
    weight = tiny.model.model.state_dict()[key]
    delta = torch.randn(weight.shape, generator=torch.Generator().manual_seed(6)) * 0.5
    results = {}
    for tokens in (None, 7):
        if tokens is not None:
            tokens_a_block(comfy_host, monkeypatch, tokens)
        for lora in (False, True):
            model = xdyna_patched(comfy_host, tiny, reference)
            if lora:
                assert model.add_patches({key: (delta,)}, 1.0) == [key]
            results[tokens, lora] = comfy_eps(model, latent, noise, text_cond, text_uncond, 0.0, T_INDEX)[0]
    assert (results[7, True] - results[7, False]).abs().max().item() > 1e-3  # the patch acts in blocks
    torch.testing.assert_close(results[7, True], results[None, True], rtol=0, atol=ROUNDING)
    torch.testing.assert_close(results[7, False], results[None, False], rtol=0, atol=ROUNDING)


def test_half_precision_blocks_give_the_whole_prediction(comfy_host, monkeypatch):
    with device_computes_in(torch.bfloat16):
        tiny = tiny_xdyna(comfy_host, seed=11, precision="bf16")
        reference = random_reference(comfy_host, tiny.layout, H, W, seed=7)
        latent, noise, text_cond, text_uncond = inputs(8)
        model = xdyna_patched(comfy_host, tiny, reference)
        unet = tiny.model.model.diffusion_model
        blocks = counting_blocks(unet, feed_forward_names(comfy_host, unet)[0])
        whole = comfy_eps(model, latent, noise, text_cond, text_uncond, 0.0, T_INDEX)[0]
        # bf16 activations are 2 bytes: the budget of 10 fp32 tokens holds 20
        tokens_a_block(comfy_host, monkeypatch, 10)
        blocks.clear()
        chunked = comfy_eps(model, latent, noise, text_cond, text_uncond, 0.0, T_INDEX)[0]
    tokens = 2 * (FRAMES + 1) * H * W
    assert blocks == [20] * (tokens // 20) + ([tokens % 20] if tokens % 20 else [])
    assert torch.isfinite(chunked).all()
    torch.testing.assert_close(chunked, whole, rtol=2e-2, atol=2e-2)
