"""The SD1.5 part of an X-Dyna checkpoint becomes a ComfyUI MODEL that computes what the weights say."""

from __future__ import annotations

import importlib

import pytest
import torch

from tests.fixtures.official_layout import SD15_UNET, TINY_UNET, unet_key_groups
from tests.fixtures.weights import xdyna_unet_state_dict


def glue(comfy_host):
    return importlib.import_module(f"{comfy_host.pack_module}.xdyna_comfy.loaders")


def test_every_sd15_key_maps_onto_comfyui(comfy_host):
    """Our official-layout key list and ComfyUI's own SD1.5 UNet agree key for key, shape for shape."""
    import comfy.supported_models
    import comfy.utils

    shapes = unet_key_groups(SD15_UNET)["unet"]
    fake = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    config = glue(comfy_host).sd15_unet_config(fake)
    mapping = comfy.utils.unet_to_diffusers(config)
    assert set(shapes) <= set(mapping)  # the map also names optional keys (shortcuts, SDXL embeddings)
    model_config = comfy.supported_models.SD15(dict(config))
    with torch.device("meta"):
        unet = comfy.ldm.modules.diffusionmodules.openaimodel.UNetModel(**model_config.unet_config)
    comfy_shapes = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    assert {mapping[k]: s for k, s in shapes.items()} == comfy_shapes


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_tiny_checkpoint_builds_an_sqrt_linear_sd15_model(comfy_host, precision):
    sd = xdyna_unet_state_dict(TINY_UNET, seed=3)
    unet_sd = {k: v for k, v in sd.items() if k in unet_key_groups(TINY_UNET)["unet"]}
    patcher = glue(comfy_host).build_sd15_model(unet_sd, precision)
    model = patcher.model
    assert model.diffusion_model.model_channels == 32
    betas = torch.linspace(0.00085, 0.012, 1000, dtype=torch.float64)
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    expected_sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
    assert torch.allclose(model.model_sampling.sigmas.double(), expected_sigmas, rtol=1e-5)
    # the weights are the checkpoint's, not a fresh initialisation
    conv_in = model.diffusion_model.input_blocks[0][0].weight
    assert torch.equal(conv_in.float().cpu(), sd["conv_in.weight"])
    if precision == "fp32":
        assert conv_in.dtype == torch.float32


def test_incomplete_unet_is_refused(comfy_host):
    sd = xdyna_unet_state_dict(TINY_UNET, seed=0)
    unet_sd = {k: v for k, v in sd.items() if k in unet_key_groups(TINY_UNET)["unet"] and "mid_block" not in k}
    with pytest.raises(ValueError, match="lack .* tensors of the SD1.5 layout"):
        glue(comfy_host).build_sd15_model(unet_sd, "fp32")
