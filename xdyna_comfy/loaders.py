"""X-Dyna's weights as ComfyUI objects: the SD1.5 UNet as a MODEL, the ControlNets as core ControlNets.

Dtype selection, manual casting and device placement follow ComfyUI's own loaders, so the memory manager
treats these like models it loaded itself. Configs are read from the tensors' shapes (core recognises the
diffusers layouts only at the real SD1.5 sizes), so tiny test weights in the official layouts load the same way.
"""

from __future__ import annotations

import comfy.model_patcher
import comfy.supported_models
import comfy.utils
import torch
from comfy import model_management

from ..xdyna_core.checkpoints import LATENT_CHANNELS, XDynaLayoutError

# AnimateDiff's schedule, which X-Dyna samples with (docs/xdyna_model.md §4): betas = linspace(0.00085, 0.012, 1000).
XDYNA_SAMPLING_SETTINGS = {"beta_schedule": "sqrt_linear", "linear_start": 0.00085, "linear_end": 0.012}

PRECISIONS = {"auto": None, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def sd15_unet_config(
    unet_sd: dict[str, torch.Tensor], out_channels: int | None = None, source: str = "<state dict>"
) -> dict:
    """ComfyUI's `unet_config` for an SD1.5-architecture UNet in diffusers keys, with widths read from the tensors.

    ComfyUI's own diffusers detection only recognises the real sizes (model_channels 320, context 768), so
    tiny test checkpoints with the same layout need their config derived here. A missing tensor is reported
    as an XDynaLayoutError naming `source`.
    """
    try:
        return _sd15_unet_config(unet_sd, out_channels)
    except KeyError as missing:
        raise XDynaLayoutError(
            source,
            f"the weights lack the tensor {missing.args[0]!r} of the SD1.5 layout: the file is incomplete "
            "or another model; download it again",
        ) from None


def _sd15_unet_config(unet_sd: dict[str, torch.Tensor], out_channels: int | None) -> dict:
    widths = [unet_sd[f"down_blocks.{i}.resnets.0.conv2.weight"].shape[0] for i in range(4)]
    base = unet_sd["conv_in.weight"].shape[0]
    if any(w % base for w in widths):
        raise ValueError(f"block widths {widths} are not multiples of the base width {base}")
    return {
        "use_checkpoint": False,
        "image_size": 32,
        "in_channels": unet_sd["conv_in.weight"].shape[1],
        "out_channels": out_channels if out_channels is not None else unet_sd["conv_out.weight"].shape[0],
        "model_channels": base,
        "num_res_blocks": [2, 2, 2, 2],
        "channel_mult": [w // base for w in widths],
        "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
        "transformer_depth_middle": 1,
        "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
        "use_spatial_transformer": True,
        "use_linear_in_transformer": False,
        "legacy": False,
        "adm_in_channels": None,
        "context_dim": unet_sd["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"].shape[1],
        "num_heads": 8,
        "num_head_channels": -1,
        "use_temporal_attention": False,
        "use_temporal_resblock": False,
    }


def diffusers_to_comfy_unet(unet_sd: dict[str, torch.Tensor], unet_config: dict) -> dict[str, torch.Tensor]:
    """Rename diffusers UNet keys to ComfyUI's (ldm) names (completeness is checked against the built model)."""
    mapping = comfy.utils.unet_to_diffusers(unet_config)
    return {mapping[k]: unet_sd[k] for k in mapping if k in unet_sd}


def build_sd15_model(unet_sd: dict[str, torch.Tensor], precision: str = "auto", source: str = "<state dict>"):
    """A ComfyUI MODEL (ModelPatcher) holding the SD1.5 UNet from these weights, sampling with sqrt_linear betas.

    Dtype selection, manual casting and device placement follow ComfyUI's own diffusion-model loader, so the
    memory manager treats it like any UNet it loaded itself. `source` (the file) is named in errors.
    """
    unet_config = sd15_unet_config(unet_sd, source=source)
    comfy_sd = diffusers_to_comfy_unet(unet_sd, unet_config)
    model_config = comfy.supported_models.SD15(unet_config)
    model_config.sampling_settings = dict(XDYNA_SAMPLING_SETTINGS)

    load_device = model_management.get_torch_device()
    offload_device = model_management.unet_offload_device()
    supported = list(model_config.supported_inference_dtypes)
    unet_dtype = PRECISIONS[precision]
    if unet_dtype is None:
        unet_dtype = model_management.unet_dtype(
            model_params=comfy.utils.calculate_parameters(comfy_sd),
            supported_dtypes=supported,
            weight_dtype=comfy.utils.weight_dtype(comfy_sd),
        )
    manual_cast_dtype = model_management.unet_manual_cast(unet_dtype, load_device, supported)
    model_config.set_inference_dtype(unet_dtype, manual_cast_dtype, device=load_device)

    model = model_config.get_model(comfy_sd, "")
    missing = sorted(set(model.diffusion_model.state_dict()) - set(comfy_sd))
    if missing:
        count = f"{len(missing)} tensor{'s' if len(missing) > 1 else ''}"
        raise XDynaLayoutError(
            source,
            f"the UNet weights lack {count} of the SD1.5 layout (e.g. {missing[:3]} in ComfyUI's names): the file "
            "is incomplete or another model; download it again",
        )
    patcher_class = getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)
    patcher = patcher_class(model, load_device=load_device, offload_device=offload_device)
    if not model_management.is_device_cpu(offload_device):
        model.to(offload_device)
    is_dynamic = getattr(patcher, "is_dynamic", lambda: False)()
    model.load_model_weights(comfy_sd, "", assign=is_dynamic)
    return patcher


def clip_vision_penultimate_of_zeros(clip_vision) -> torch.Tensor:
    """CLIP penultimate hidden states of an all-zero *normalised* pixel tensor: X-Dyna's unconditional image input.

    The official code feeds `zeros_like(pixel_values)` after CLIP normalisation, which is not the encoding of a
    black image, so ComfyUI's `encode_image` (which normalises) cannot produce it.
    """
    model_management.load_model_gpu(clip_vision.patcher)
    size = clip_vision.image_size
    pixels = torch.zeros(1, 3, size, size, device=clip_vision.load_device)
    out = clip_vision.model(pixel_values=pixels, intermediate_output=-2)
    return out[1].to(model_management.intermediate_device())


CONTROLNET_FIX = (
    "; load X-Dyna's controlnet-checkpoint-epoch-5.ckpt (pose) or controlnet-face-checkpoint-epoch-2.ckpt (S-Face) "
    "from Hugging Face Boese0601/X-Dyna"
)
_HINT_CONVS = ["controlnet_cond_embedding.conv_in", *(f"controlnet_cond_embedding.blocks.{i}" for i in range(6))]
_HINT_CONVS.append("controlnet_cond_embedding.conv_out")


def diffusers_controlnet_to_comfy(
    sd: dict[str, torch.Tensor], config: dict, source: str = "<state dict>"
) -> dict[str, torch.Tensor]:
    """Rename a diffusers `ControlNetModel`'s keys to ComfyUI's (ldm) names."""
    names = {k: v for k, v in comfy.utils.unet_to_diffusers(config).items() if k in sd}
    for suffix in ("weight", "bias"):
        names[f"controlnet_mid_block.{suffix}"] = f"middle_block_out.0.{suffix}"
        for i in range(len(config["channel_mult"]) * 3):
            names[f"controlnet_down_blocks.{i}.{suffix}"] = f"zero_convs.{i}.0.{suffix}"
        for i, conv in enumerate(_HINT_CONVS):  # ComfyUI's hint block interleaves convs with SiLUs
            names[f"{conv}.{suffix}"] = f"input_hint_block.{2 * i}.{suffix}"
    unknown = sorted(set(sd) - set(names))
    if unknown:
        raise XDynaLayoutError(
            source,
            f"not an SD1.5 ControlNet in diffusers layout: unexpected keys such as {unknown[:3]}{CONTROLNET_FIX}",
        )
    return {names[k]: v for k, v in sd.items()}


def build_sd15_controlnet(sd: dict[str, torch.Tensor], precision: str = "auto", source: str = "<state dict>"):
    """A core ComfyUI ControlNet from an SD1.5-architecture diffusers ControlNet, config read from the tensors.

    Core's own loader recognises diffusers ControlNets only at the real SD1.5 sizes; this builds the same
    core objects for any width, with the hint channels (3 for pose, 6 for S-Face) taken from the weights.
    `source` (the file) is named in errors.
    """
    import comfy.cldm.cldm
    import comfy.controlnet
    import comfy.ops

    if "controlnet_cond_embedding.conv_in.weight" not in sd:
        raise XDynaLayoutError(
            source, f"not a diffusers-format ControlNet (no controlnet_cond_embedding.conv_in.weight){CONTROLNET_FIX}"
        )
    if "conv_in.weight" in sd and sd["conv_in.weight"].shape[1] != LATENT_CHANNELS:
        raise XDynaLayoutError(
            source,
            f"this ControlNet reads {sd['conv_in.weight'].shape[1]}-channel latents (an inpainting ControlNet?), "
            f"not the {LATENT_CHANNELS}-channel SD1.5 latent{CONTROLNET_FIX}",
        )
    config = sd15_unet_config(sd, out_channels=4, source=source)
    comfy_sd = diffusers_controlnet_to_comfy(sd, config, source)
    load_device = model_management.get_torch_device()
    dtype = PRECISIONS[precision] or model_management.unet_dtype(
        model_params=-1, weight_dtype=comfy.utils.weight_dtype(comfy_sd)
    )
    manual_cast_dtype = model_management.unet_manual_cast(dtype, load_device)
    config.pop("out_channels")
    config.update(
        hint_channels=comfy_sd["input_hint_block.0.weight"].shape[1],
        dtype=dtype,
        device=model_management.unet_offload_device(),
        operations=comfy.ops.pick_operations(dtype, manual_cast_dtype),
    )
    control_model = comfy.cldm.cldm.ControlNet(**config)
    missing, unexpected = control_model.load_state_dict(comfy_sd, strict=False)
    if missing or unexpected:
        raise XDynaLayoutError(
            source,
            f"the ControlNet weights do not fit the SD1.5 layout (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}): the file is incomplete or another model{CONTROLNET_FIX}",
        )
    return comfy.controlnet.ControlNet(control_model, load_device=load_device, manual_cast_dtype=manual_cast_dtype)
