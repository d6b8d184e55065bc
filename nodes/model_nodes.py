"""Model nodes: load the X-Dyna UNet, prepare the reference, patch the MODEL."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from comfy_api.latest import io

from ..xdyna_comfy import folders, loaders
from ..xdyna_comfy.context_windows import ContextOptions
from ..xdyna_comfy.inputs import require_clip_vision, require_model, require_vae
from ..xdyna_comfy.model_patch import (
    TRANSFORMER_PREFIXES,
    XDynaPatch,
    _transformer_block,
    build_components,
    components_model_patcher,
)
from ..xdyna_core.checkpoints import UNetShapeConfig, load_xdyna_unet
from ..xdyna_core.components import XDynaComponents
from ..xdyna_core.image_prep import CROP_ANCHORS, fit_to_size
from ..xdyna_core.ip_adapter import load_ip_adapter_plus
from ..xdyna_core.reference import XDynaReference
from ..xdyna_core.validation import (
    finite_number,
    image_batch,
    input_error,
    require,
    require_finite,
    require_reference,
)
from .preprocess import (
    check_generation_size,
    generation_size_inputs,
)
from .types import XDynaReferenceType, XDynaWeightsType

logger = logging.getLogger("xdyna")
CATEGORY = "X-Dyna"
LOAD_MODEL = "X-Dyna Load Model"
LOAD_REFERENCE = "X-Dyna Load Reference"
APPLY_ADAPTER = "X-Dyna Apply Dynamics-Adapter"
VAE_FIX = (
    "the VAE overflowed (SD1.5's VAE does in fp16) or its weights are damaged: start ComfyUI with --fp32-vae "
    "(or --bf16-vae), or load another SD1.5 VAE"
)


@dataclass
class XDynaWeights:
    """The X-Dyna additions of one checkpoint, shared by every MODEL patched with them."""

    components: XDynaComponents
    patcher: object  # ModelPatcher of `components`, registered as an additional model of patched MODELs
    config: UNetShapeConfig
    source: str


class XDynaLoadModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="XDyna_LoadModel",
            display_name=LOAD_MODEL,
            category=CATEGORY,
            description=(
                "Loads the X-Dyna UNet checkpoint: its SD1.5 UNet as a MODEL (sampling with AnimateDiff's "
                "sqrt_linear betas) and its Dynamics-Adapter, IP-Adapter k/v and motion modules."
            ),
            inputs=[
                io.Combo.Input(
                    "ckpt_name",
                    options=folders.model_files(folders.XDYNA_FOLDER),
                    tooltip="unet-checkpoint-epoch-5.ckpt (or its .safetensors conversion) in models/xdyna.",
                ),
                io.Combo.Input(
                    "precision",
                    options=list(loaders.PRECISIONS),
                    default="auto",
                    tooltip="Weight precision. auto lets ComfyUI choose for your device (fp16 on most GPUs).",
                ),
            ],
            outputs=[io.Model.Output(), XDynaWeightsType.Output(display_name="xdyna")],
        )

    @classmethod
    def execute(cls, ckpt_name: str, precision: str) -> io.NodeOutput:
        path = folders.model_path(folders.XDYNA_FOLDER, ckpt_name)
        parts = load_xdyna_unet(path)
        model = loaders.build_sd15_model(parts.unet, precision, str(path))
        # Stored like the UNet's weights; ComfyUI's casting layers compute them in the UNet's compute dtype.
        dtype = model.model_dtype()
        components = build_components(parts, dtype)
        weights = XDynaWeights(components, components_model_patcher(components), parts.config, str(path))
        logger.info("X-Dyna: loaded %s (%s)", ckpt_name, dtype)
        return io.NodeOutput(model, weights)


class XDynaLoadReference(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="XDyna_LoadReference",
            display_name=LOAD_REFERENCE,
            category=CATEGORY,
            description=(
                "Prepares the reference image as X-Dyna consumes it: cropped and resized to the generation "
                "size, VAE-encoded (frame 0 of every window), and its IP-Adapter-plus image tokens."
            ),
            inputs=[
                io.Image.Input("image", tooltip="The person to animate."),
                io.Vae.Input("vae", tooltip="The SD1.5 VAE."),
                io.ClipVision.Input("clip_vision", tooltip="CLIP ViT-H/14, the IP-Adapter image encoder."),
                io.Combo.Input(
                    "ip_adapter",
                    options=folders.model_files(folders.IPADAPTER_FOLDER),
                    tooltip="ip-adapter-plus_sd15.bin (or .safetensors) in models/ipadapter.",
                ),
                *generation_size_inputs(
                    "Generation width (multiple of 8).",
                    "Generation height (multiple of 8).",
                ),
                io.Combo.Input(
                    "crop",
                    options=list(CROP_ANCHORS),
                    default="center",
                    tooltip="How the reference is cropped to the generation aspect (center as released).",
                ),
            ],
            outputs=[XDynaReferenceType.Output(display_name="reference"), io.Image.Output(display_name="image")],
        )

    @classmethod
    def execute(cls, image, vae, clip_vision, ip_adapter: str, width: int, height: int, crop: str) -> io.NodeOutput:
        check_generation_size(width, height)
        image = image_batch(image, LOAD_REFERENCE)
        vae = require_vae(vae, LOAD_REFERENCE)
        clip_vision = require_clip_vision(clip_vision, LOAD_REFERENCE)
        if image.shape[0] != 1:
            logger.warning("X-Dyna: the reference input has %d images; using the first", image.shape[0])
        image = image[:1]
        resampler = load_ip_adapter_plus(folders.model_path(folders.IPADAPTER_FOLDER, ip_adapter))
        fitted, _ = fit_to_size(image, width, height, anchor=crop)
        latent = vae.encode(fitted)
        require_finite(latent, LOAD_REFERENCE, "the vae input's latent of the reference", VAE_FIX)
        # The CLIP input is the raw reference (shortest side 224, centre crop), as released.
        features = clip_vision.encode_image(image, crop=True)["penultimate_hidden_states"]
        check_image_features(features, resampler, ip_adapter)
        uncond_features = loaders.clip_vision_penultimate_of_zeros(clip_vision)
        with torch.inference_mode():
            tokens = resampler(features.float().cpu())
            uncond_tokens = resampler(uncond_features.float().cpu())
        for encoded in (tokens, uncond_tokens):
            require_finite(
                encoded,
                LOAD_REFERENCE,
                "the reference's image tokens (clip_vision, then ip_adapter)",
                "the CLIP vision model overflowed in half precision or a weight file is damaged: start ComfyUI "
                "with --force-fp32, or download CLIP ViT-H/14 and ip-adapter-plus_sd15.bin again",
            )
        reference = XDynaReference(latent.float().cpu(), tokens, uncond_tokens, fitted)
        return io.NodeOutput(reference, fitted)


class XDynaApplyDynamicsAdapter(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="XDyna_ApplyDynamicsAdapter",
            display_name=APPLY_ADAPTER,
            category=CATEGORY,
            description=(
                "Patches an SD1.5 MODEL into X-Dyna: the reference as frame 0 of every window, the "
                "Dynamics-Adapter in self-attention, IP-Adapter image tokens in cross-attention, GroupNorm "
                "joint over frames and the motion modules. Any stock sampler then evaluates X-Dyna."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The MODEL from X-Dyna Load Model."),
                XDynaWeightsType.Input("xdyna", tooltip="The X-Dyna weights from X-Dyna Load Model."),
                XDynaReferenceType.Input("reference", tooltip="The reference from X-Dyna Load Reference."),
                io.Float.Input(
                    "strength",
                    default=1.0,
                    min=0.0,
                    max=2.0,
                    step=0.05,
                    tooltip="Weight of the Dynamics-Adapter (1 = as the model was trained).",
                ),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, xdyna: XDynaWeights, reference: XDynaReference, strength: float) -> io.NodeOutput:
        model = require_model(model, APPLY_ADAPTER)
        xdyna = require(
            xdyna, XDynaWeights, APPLY_ADAPTER, "xdyna", "X-Dyna weights", "the xdyna output of X-Dyna Load Model"
        )
        reference = require_reference(reference, APPLY_ADAPTER)
        strength = finite_number(strength, APPLY_ADAPTER, "strength", 0.0, 2.0)
        check_model_matches(model, xdyna, reference)
        patched = model.clone()
        XDynaPatch(xdyna.components, reference, strength).apply_to(patched, xdyna.patcher)
        # Videos longer than one window are tiled as released (16/4, closed loop) by any sampler.
        ContextOptions().apply_to(patched)
        return io.NodeOutput(patched)


def check_image_features(features: torch.Tensor, resampler, ip_adapter: str) -> None:
    """The IP-Adapter's Resampler must read the CLIP vision model's hidden width (1280 for ViT-H/14)."""
    expected, found = resampler.proj_in.in_features, features.shape[-1]
    if found != expected:
        raise input_error(
            LOAD_REFERENCE,
            "ip_adapter",
            f"{ip_adapter!r} reads {expected}-wide image features, but the CLIP vision model gives {found}-wide ones",
            "the two were made for different image encoders: X-Dyna uses ip-adapter-plus_sd15.bin with CLIP "
            "ViT-H/14 (1280-wide); an IP-Adapter for ViT-bigG or SDXL does not fit",
        )


def check_model_matches(model, xdyna: XDynaWeights, reference: XDynaReference) -> None:
    """The MODEL must be an SD1.5-architecture UNet with the widths of the X-Dyna weights."""
    unet = model.get_model_object("diffusion_model")
    found = None
    try:
        for block, prefix in TRANSFORMER_PREFIXES.items():
            adapter = xdyna.components.adapter(f"{prefix}.attn1")
            attn1 = _transformer_block(unet, block, 0).attn1
            if adapter is not None and attn1.to_q.weight.shape[0] != adapter.to_q_ff.weight.shape[0]:
                found = f"width {attn1.to_q.weight.shape[0]} at {prefix}, X-Dyna has {adapter.to_q_ff.weight.shape[0]}"
                break
    except (AttributeError, IndexError, KeyError, TypeError):
        found = f"a {type(unet).__name__} without SD1.5's block layout"
    if found:
        raise ValueError(
            f"the MODEL does not fit these X-Dyna weights ({found}); use the MODEL output of X-Dyna Load Model "
            f"(X-Dyna is built on SD1.5, not SDXL or other families)"
        )
    kv = next(iter(xdyna.components.ip_adapter.values()), None)
    if kv is not None and kv.to_k_ip.weight.shape[1] != reference.image_tokens.shape[-1]:
        raise ValueError(
            f"the reference's image tokens are {reference.image_tokens.shape[-1]}-wide but the X-Dyna IP-Adapter "
            f"expects {kv.to_k_ip.weight.shape[1]}; load ip-adapter-plus_sd15 (not an SDXL or ViT-bigG variant)"
        )


NODES = [XDynaLoadModel, XDynaLoadReference, XDynaApplyDynamicsAdapter]
