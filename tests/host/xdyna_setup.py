"""Shared set-up for host tests of the X-Dyna model: tiny official-layout weights turned into pack objects."""

from __future__ import annotations

import importlib
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType

import torch

from tests.fixtures.official_layout import TINY_UNET, UNetLayout
from tests.fixtures.weights import is_zero_initialised, xdyna_unet_state_dict
from tests.oracles.xdyna_unet3d import xdyna_unet3d

SD15_LATENT_SCALE = 0.18215


def pack(comfy_host, module: str) -> ModuleType:
    """A module of the pack as ComfyUI loaded it (e.g. `xdyna_comfy.model_patch`)."""
    return importlib.import_module(f"{comfy_host.pack_module}.{module}")


# X-Dyna Apply ControlNets' range inputs as released: both ControlNets at strength 1 over the whole run
RELEASED_CONTROL = dict(
    pose_strength=1.0, pose_start=0.0, pose_end=1.0, face_strength=1.0, face_start=0.0, face_end=1.0
)


def apply_controlnets(comfy_host, positive, negative, **inputs):
    """(positive, negative) from X-Dyna Apply ControlNets, with the released ranges unless `inputs` set them."""
    node = pack(comfy_host, "nodes.sampling_nodes").XDynaApplyControlNets
    return node.execute(positive, negative, **{**RELEASED_CONTROL, **inputs}).args


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
    glue = pack(comfy_host, "xdyna_comfy.loaders")
    model_nodes = pack(comfy_host, "nodes.model_nodes")
    model_patch = pack(comfy_host, "xdyna_comfy.model_patch")
    parts = checkpoints.split_xdyna_unet(sd, "tiny.ckpt")
    model = glue.build_sd15_model(parts.unet, precision)
    components = model_patch.build_components(parts, model.model_dtype())
    weights = model_nodes.XDynaWeights(
        components, model_patch.components_model_patcher(components), parts.config, "tiny"
    )
    return TinyXDyna(sd, model, weights, layout)


def xdyna_patched(comfy_host, tiny: TinyXDyna, reference):
    """A clone of the tiny MODEL with the released X-Dyna patch (all parts, strength 1) applied."""
    model = tiny.model.clone()
    model_patch = pack(comfy_host, "xdyna_comfy.model_patch")
    model_patch.XDynaPatch(tiny.weights.components, reference).apply_to(model, tiny.weights.patcher)
    return model


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


# --- precision: ComfyUI on the CPU computing as it does on a GPU ---------------------------------------------

# (weights stored in, UNet computes in) for each precision tier; `precision` is the loaders' widget value.
PRECISION_TIERS = {
    "fp16": ("fp16", torch.float16),  # an NVIDIA GPU with precision auto or fp16
    "bf16": ("bf16", torch.bfloat16),  # bf16 weights on a GPU that computes in bf16
    "fp16-weights-fp32-compute": ("fp16", torch.float32),  # ComfyUI's manual cast (the CPU's own choice)
    "bf16-weights-fp16-compute": ("bf16", torch.float16),  # manual cast on a GPU without bf16
}
STORAGE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


@contextmanager
def device_computes_in(compute: torch.dtype):
    """Make ComfyUI's device capability checks answer as a GPU that computes in `compute` would.

    ComfyUI decides per loader whether to compute in the weights' dtype or to cast them (manual cast) from
    `should_use_fp16` / `should_use_bf16` of the device, which answer False for the CPU. Everything after
    that decision is ComfyUI's own code on the path a GPU takes; PyTorch computes fp16 and bf16 on the CPU.
    """
    import comfy.model_management as mm

    saved = mm.should_use_fp16, mm.should_use_bf16
    mm.should_use_fp16 = lambda *args, **kwargs: compute == torch.float16
    mm.should_use_bf16 = lambda *args, **kwargs: compute == torch.bfloat16
    try:
        yield
    finally:
        mm.should_use_fp16, mm.should_use_bf16 = saved


# --- one UNet evaluation through ComfyUI's sampler, and the same by the oracle -------------------------------


def comfy_eps(model, latent, noise, text_cond, text_uncond, cfg: float, t_index: int):
    """CFG eps from one Euler step of ComfyUI's own sampler from sigma_t to 0, and the noisy x and sigma.

    cfg 0 returns the unconditional branch's eps, cfg 1 the conditional one's (ComfyUI then skips the other).
    """
    import comfy.sample
    import comfy.samplers

    sigma = model.get_model_object("model_sampling").sigmas[t_index].item()
    sigmas = torch.tensor([sigma, 0.0])
    positive, negative = [[text_cond, {}]], [[text_uncond, {}]]
    sampler = comfy.samplers.sampler_object("euler")
    out = comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas, positive, negative, latent, disable_pbar=True)
    x = latent * SD15_LATENT_SCALE + sigma * noise
    return (x - out * SD15_LATENT_SCALE) / sigma, x, sigma


def oracle_eps(state_dict, reference, x, sigma, t_index, text_cond, text_uncond, dtype=torch.float32, **switches):
    """eps `[2, F, 4, h, w]` (conditional, unconditional) of the UNet3D oracle computing in `dtype`."""
    frames = x.shape[0]
    noisy = (x / (sigma**2 + 1) ** 0.5).unsqueeze(0).expand(2, frames, *x.shape[1:]).to(dtype)
    ref = (reference.latent * SD15_LATENT_SCALE).expand(2, *reference.latent.shape[1:]).to(dtype)
    text = torch.cat([text_cond, text_uncond]).to(dtype)
    tokens = torch.cat([reference.image_tokens, reference.uncond_image_tokens]).to(dtype)
    sd = {k: v.to(dtype) for k, v in state_dict.items()}
    return xdyna_unet3d(sd, noisy, ref, float(t_index), text, tokens, **switches)


def recording(model):
    """A copy of `model` whose UNet records the timestep of each call and returns zeros instead of working."""
    import comfy.patcher_extension

    seen: list[float] = []

    def record(executor, x, timesteps, *args, **kwargs):
        seen.append(float(timesteps.flatten()[0]))
        return torch.zeros_like(x)

    copy = model.clone()
    copy.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_record", record)
    return copy, seen


def retarget_inputs(driving=("1", 0), reference=("2", 0), **options) -> dict:
    """API-prompt inputs of an X-Dyna Pose Retarget node: these links, the node's defaults but no smoothing at
    8 fps, then `options`."""
    inputs = {
        "driving_pose": list(driving),
        "reference_pose": list(reference),
        "mode": "proportions",
        "anchor_frame": 0,
        "driver_lengths": "clip",
        "smoothing": False,
        "frame_rate": 8.0,
        "min_cutoff": 1.0,
        "beta": 5.0,
        "driving_person": 0,
        "reference_person": 0,
    }
    inputs.update(options)
    return inputs
