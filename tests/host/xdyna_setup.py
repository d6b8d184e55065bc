"""Shared set-up for host tests of the X-Dyna model: tiny official-layout weights turned into pack objects."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

import torch

from tests.fixtures.official_layout import TINY_UNET, UNetLayout
from tests.fixtures.weights import is_zero_initialised, xdyna_unet_state_dict

SD15_LATENT_SCALE = 0.18215


def pack(comfy_host, module: str) -> ModuleType:
    """A module of the pack as ComfyUI loaded it (e.g. `nodes.model_patch`)."""
    return importlib.import_module(f"{comfy_host.pack_module}.{module}")


@dataclass
class TinyXDyna:
    state_dict: dict[str, torch.Tensor]
    model: object  # ModelPatcher of the SD1.5 part
    weights: object  # the pack's XDynaWeights
    layout: UNetLayout


def tiny_xdyna(
    comfy_host,
    seed: int = 0,
    layout: UNetLayout = TINY_UNET,
    residual_gain: float = 1.0,
    output_gain: float = 1.0,
    precision: str = "fp32",
) -> TinyXDyna:
    """Split a tiny official-layout checkpoint and build the MODEL and X-Dyna weights the way XDyna_LoadModel does.

    `residual_gain` scales the layers the real model zero-initialises (adapter and motion outputs): trained
    weights keep those residuals small, and full-gain random ones compound over 20 motion modules into
    activations that fp32 cannot resolve to 1e-4 over a sampling run, whichever implementation computes them.
    `output_gain` scales `conv_out`, bringing the random model's eps to a trained model's unit scale.
    """
    sd = xdyna_unet_state_dict(layout, seed=seed)
    if residual_gain != 1.0:
        sd = {k: v * residual_gain if is_zero_initialised(k) else v for k, v in sd.items()}
    if output_gain != 1.0:
        sd = {k: v * output_gain if k.startswith("conv_out.") else v for k, v in sd.items()}
    checkpoints = pack(comfy_host, "xdyna_core.checkpoints")
    glue = pack(comfy_host, "nodes.comfy_glue")
    model_nodes = pack(comfy_host, "nodes.model_nodes")
    model_patch = pack(comfy_host, "nodes.model_patch")
    parts = checkpoints.split_xdyna_unet(sd, "tiny.ckpt")
    model = glue.build_sd15_model(parts.unet, precision)
    components = model_patch.build_components(parts, model.model_dtype())
    weights = model_nodes.XDynaWeights(
        components, model_patch.components_model_patcher(components), parts.config, "tiny"
    )
    return TinyXDyna(sd, model, weights, layout)


def random_reference(comfy_host, layout: UNetLayout, height: int, width: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    dim = layout.cross_attention_dim
    reference = pack(comfy_host, "xdyna_core.reference").XDynaReference(
        latent=torch.randn(1, 4, height, width, generator=gen),
        image_tokens=torch.randn(1, 16, dim, generator=gen),
        uncond_image_tokens=torch.randn(1, 16, dim, generator=gen),
        image=torch.rand(1, height * 8, width * 8, 3, generator=gen),
    )
    return reference
