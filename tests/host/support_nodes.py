"""Test-only nodes that stand in for downloads: real ComfyUI VAE / CLIP vision objects with tiny seeded weights.

They are registered into the booted ComfyUI only by the tests that need them (the pack never ships them), so
graphs can run end to end without multi-gigabyte files. Everything they return is a genuine ComfyUI object.
"""

from __future__ import annotations

import gc
import hashlib
import os
import random
import threading

import torch

TINY_CLIP_VISION = {
    "attention_dropout": 0.0,
    "dropout": 0.0,
    "hidden_act": "gelu",
    "hidden_size": 32,
    "image_size": 28,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 64,
    "layer_norm_eps": 1e-05,
    "model_type": "clip_vision_model",
    "num_attention_heads": 2,
    "num_channels": 3,
    "num_hidden_layers": 3,
    "patch_size": 14,
    "projection_dim": 16,
    "torch_dtype": "float32",
}

TINY_VAE = {
    "params": {
        "embed_dim": 4,
        "ddconfig": {
            "double_z": True,
            "z_channels": 4,
            "resolution": 256,
            "in_channels": 3,
            "out_ch": 3,
            "ch": 32,
            "ch_mult": [1, 1, 1, 1],
            "num_res_blocks": 1,
            "attn_resolutions": [],
            "dropout": 0.0,
        },
    }
}


def seeded_state_dict(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Random values for every tensor of `module` (ComfyUI's ops leave weights uninitialised)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, tensor in module.state_dict().items():
        if tensor.ndim <= 1 and name.endswith("weight"):
            out[name] = 1.0 + 0.05 * torch.randn(tensor.shape, generator=gen)
        elif tensor.ndim <= 1:
            out[name] = 0.02 * torch.randn(tensor.shape, generator=gen)
        else:
            fan_in = max(1, tensor[0].numel())
            out[name] = torch.randn(tensor.shape, generator=gen) / fan_in**0.5
    return out


class TinyVAE:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0})}}

    RETURN_TYPES = ("VAE",)
    FUNCTION = "load"
    CATEGORY = "testing"

    def load(self, seed):
        import comfy.sd

        vae = comfy.sd.VAE(sd={"placeholder": torch.zeros(1)}, config=TINY_VAE)
        vae.first_stage_model.load_state_dict(seeded_state_dict(vae.first_stage_model, seed))
        return (vae,)


class TinyClipVision:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0})}}

    RETURN_TYPES = ("CLIP_VISION",)
    FUNCTION = "load"
    CATEGORY = "testing"

    def load(self, seed):
        import comfy.clip_vision

        clip = comfy.clip_vision.ClipVisionModel(dict(TINY_CLIP_VISION))
        clip.load_sd(seeded_state_dict(clip.model, seed))
        return (clip,)


class TinyConditioning:
    """Random text conditioning of the tiny UNet's context width (stands in for CLIP text encoding)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0}), "width": ("INT", {"default": 32})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "testing"

    def make(self, seed, width):
        gen = torch.Generator().manual_seed(seed)
        return ([[torch.randn(1, 77, width, generator=gen), {}]],)


X_DYNA_PATCH_TYPES = ("MotionModuleSlot", "JointNormSequential", "ChunkedFeedForward")


def xdyna_modules_in(model) -> int:
    """How many X-Dyna containers or slots sit in a MODEL's live UNet module tree (0 for a clean UNet)."""
    unet = model.model.diffusion_model
    return sum(type(m).__name__ in X_DYNA_PATCH_TYPES for m in unet.modules())


class InspectModel:
    """Passes a MODEL through, recording how many X-Dyna modules its live UNet holds at this moment."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",)}}

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")  # look again on every run

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "inspect"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    def inspect(self, model):
        return {"ui": {"xdyna_modules": [xdyna_modules_in(model)]}, "result": (model,)}


class LatentDigest:
    """Passes a LATENT through, recording the sha256 of its samples (bit-identity across runs and servers)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",)}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "digest"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    def digest(self, samples):
        data = samples["samples"].detach().cpu().contiguous().float().numpy().tobytes()
        return {"ui": {"sha256": [hashlib.sha256(data).hexdigest()]}, "result": (samples,)}


class FailDuringSampling:
    """A MODEL whose UNet raises on its `call`-th evaluation: a stand-in for running out of GPU memory mid-run."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "call": ("INT", {"default": 2, "min": 1})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "testing"

    def patch(self, model, call):
        import comfy.patcher_extension

        calls = {"n": 0}

        def fail(executor, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] >= call:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated by the X-Dyna tests)")
            return executor(*args, **kwargs)

        failing = model.clone()
        failing.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "xdyna_test_fail", fail)
        return (failing,)


SUPPORT_NODES = {
    "XDynaTest_TinyVAE": TinyVAE,
    "XDynaTest_TinyClipVision": TinyClipVision,
    "XDynaTest_TinyConditioning": TinyConditioning,
    "XDynaTest_InspectModel": InspectModel,
    "XDynaTest_LatentDigest": LatentDigest,
    "XDynaTest_FailDuringSampling": FailDuringSampling,
}

GC_STRESS_ENV = "XDYNA_TEST_GC_STRESS"  # a seed: a server started with it collects garbage at random moments


def start_gc_stress(seed: int, max_pause: float = 0.5, full_share: float = 0.15) -> threading.Thread:
    """A daemon thread forcing garbage collections at random moments, so finalizers run at arbitrary points.

    A full collection of a booted ComfyUI takes about half a second, so most are of the young generations
    (which hold what the last prompt made) and a share `full_share` are full.
    """
    rng = random.Random(seed)

    def run() -> None:
        event = threading.Event()
        while not event.wait(rng.uniform(0.0, max_pause)):
            gc.collect(2 if rng.random() < full_share else rng.choice((0, 1)))

    thread = threading.Thread(target=run, name="xdyna-test-gc-stress", daemon=True)
    thread.start()
    return thread


if os.environ.get(GC_STRESS_ENV):
    start_gc_stress(int(os.environ[GC_STRESS_ENV]))

COMPUTE_ENV = "XDYNA_TEST_COMPUTE"  # fp16 or bf16: a server whose device answers as a GPU computing in it would


def compute_like_a_gpu(dtype: str) -> None:
    """What `xdyna_setup.device_computes_in` does in process, for a whole server (see there)."""
    import comfy.model_management as mm

    mm.should_use_fp16 = lambda *args, **kwargs: dtype == "fp16"
    mm.should_use_bf16 = lambda *args, **kwargs: dtype == "bf16"


if os.environ.get(COMPUTE_ENV):
    compute_like_a_gpu(os.environ[COMPUTE_ENV])


class TinyControlNet:
    """A real core ControlNet object built by the pack's loader from tiny official-layout (diffusers) weights."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0}), "hint_channels": ("INT", {"default": 3})}}

    RETURN_TYPES = ("CONTROL_NET",)
    FUNCTION = "load"
    CATEGORY = "testing"

    glue = None  # the pack's comfy_glue module, set by the test that registers these nodes

    def load(self, seed, hint_channels, precision="fp32"):
        from tests.fixtures.official_layout import TINY_UNET
        from tests.fixtures.weights import controlnet_state_dict

        sd = controlnet_state_dict(TINY_UNET, hint_channels, seed)
        return (self.glue.build_sd15_controlnet(sd, precision),)


SUPPORT_NODES["XDynaTest_TinyControlNet"] = TinyControlNet


# --- bad inputs, as other packs and broken models hand them over ------------------------------------------------


def _poisoned(images: torch.Tensor, value: float) -> torch.Tensor:
    """One value of one frame replaced (frame 57 of a 100-frame clip, the middle one of shorter clips)."""
    out = images.clone()
    frame = 57 if images.shape[0] > 57 else images.shape[0] // 2
    out[frame, images.shape[1] // 2, images.shape[2] // 2, 1] = value
    return out


IMAGE_DEFECTS = {
    "none": lambda x: x,
    "nan_in_one_frame": lambda x: _poisoned(x, float("nan")),
    "inf_in_one_frame": lambda x: _poisoned(x, float("inf")),
    "uint8": lambda x: (x * 255).round().to(torch.uint8),
    "uint8_as_float": lambda x: (x * 255).round() / 255,  # what a uint8 image means, as a float IMAGE
    "fp16": lambda x: x.half(),
    "bf16": lambda x: x.bfloat16(),
    "one_channel": lambda x: x[..., :1].contiguous(),
    "two_channels": lambda x: x[..., :2].contiguous(),
    "rgba_opaque": lambda x: torch.cat([x, torch.ones_like(x[..., :1])], dim=-1),
    "rgba_transparent": lambda x: torch.cat([x, torch.full_like(x[..., :1], 0.5)], dim=-1),
    "no_batch_dimension": lambda x: x[0],
    "empty_batch": lambda x: x[:0],
    "channels_first": lambda x: x.movedim(-1, 1).contiguous(),
    "mask_like": lambda x: x[..., 0].contiguous(),
    "scaled_0_255": lambda x: x * 255,
    "int32": lambda x: (x * 255).round().to(torch.int32),
}


class RandomClip:
    """A seeded random IMAGE batch in [0, 1] (stands in for loaded frames)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "frames": ("INT", {"default": 4, "min": 1}),
                "width": ("INT", {"default": 48, "min": 1}),
                "height": ("INT", {"default": 64, "min": 1}),
                "seed": ("INT", {"default": 0}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "make"
    CATEGORY = "testing"

    def make(self, frames, width, height, seed):
        return (torch.rand(frames, height, width, 3, generator=torch.Generator().manual_seed(seed)),)


class BadImage:
    """An IMAGE with one defect of IMAGE_DEFECTS, as another pack or a broken model could emit it."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "defect": (list(IMAGE_DEFECTS),)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "spoil"
    CATEGORY = "testing"

    def spoil(self, image, defect):
        return (IMAGE_DEFECTS[defect](image),)


class NaNDuringSampling:
    """A MODEL whose UNet output turns NaN in its last frame from its `call`-th evaluation (an fp16 overflow)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "call": ("INT", {"default": 1, "min": 1})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "testing"

    def patch(self, model, call):
        import comfy.patcher_extension

        calls = {"n": 0}

        def overflow(executor, *args, **kwargs):
            out = executor(*args, **kwargs)
            calls["n"] += 1
            if calls["n"] >= call:
                out = out.clone()
                out[-1] = float("nan")
            return out

        spoiled = model.clone()
        key = "xdyna_test_nan"
        spoiled.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, key, overflow)
        return (spoiled,)


SUPPORT_NODES["XDynaTest_RandomClip"] = RandomClip
SUPPORT_NODES["XDynaTest_BadImage"] = BadImage
SUPPORT_NODES["XDynaTest_NaNDuringSampling"] = NaNDuringSampling
