"""Node-input checks that need ComfyUI's own classes: MODEL, VAE, CLIP_VISION, CONTROL_NET, and the X-Dyna patch.

An API prompt can put any value where a linked input belongs (ComfyUI validates the types of links, not of
literals), so each node names what it got instead of failing later with "'str' object has no attribute".
The messages take the shape of `xdyna_core.validation` (node, input, what was found, what to do).
"""

from __future__ import annotations

import comfy.clip_vision
import comfy.controlnet
import comfy.model_patcher
import comfy.patcher_extension
import comfy.sd

from ..xdyna_core.validation import input_error, require
from .model_patch import KEY, XDynaPatch

LOAD_MODEL = "the MODEL output of X-Dyna Load Model"
APPLY_ADAPTER = "X-Dyna Apply Dynamics-Adapter"


def require_model(value, node: str, name: str = "model", source: str = LOAD_MODEL):
    return require(value, comfy.model_patcher.ModelPatcher, node, name, "a MODEL", source)


def require_vae(value, node: str, name: str = "vae"):
    return require(value, comfy.sd.VAE, node, name, "a VAE", "the VAE output of a checkpoint loader (SD1.5's VAE)")


def require_clip_vision(value, node: str, name: str = "clip_vision"):
    return require(
        value,
        comfy.clip_vision.ClipVisionModel,
        node,
        name,
        "a CLIP_VISION model",
        "Load CLIP Vision with CLIP ViT-H/14 (the IP-Adapter's image encoder)",
    )


def require_control_net(value, node: str, name: str):
    return require(
        value,
        comfy.controlnet.ControlBase,
        node,
        name,
        "a CONTROL_NET",
        "X-Dyna Load ControlNet (or Load ControlNet Model)",
    )


def xdyna_patch_of(model) -> XDynaPatch | None:
    """The X-Dyna patch registered on `model` by X-Dyna Apply Dynamics-Adapter, or None for a plain MODEL."""
    for wrapper in model.get_wrappers(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, KEY):
        patch = getattr(wrapper, "__self__", None)
        if isinstance(patch, XDynaPatch):
            return patch
    return None


def require_xdyna_model(value, node: str, name: str = "model"):
    """A MODEL patched by X-Dyna Apply Dynamics-Adapter: a plain SD1.5 MODEL would sample frames one by one,
    without the reference, the Dynamics-Adapter or the motion modules, and give no sign of it."""
    model = require_model(value, node, name, f"the MODEL output of {APPLY_ADAPTER}")
    if xdyna_patch_of(model) is None:
        raise input_error(
            node,
            name,
            "is a MODEL without the X-Dyna patch (no reference frame, Dynamics-Adapter or motion modules), which "
            "would sample unrelated still frames",
            f"pass it through {APPLY_ADAPTER} first (X-Dyna Load Model's MODEL and xdyna outputs, and the "
            "reference) and connect that node's MODEL here",
        )
    return model
