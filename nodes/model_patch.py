"""The X-Dyna model patch on a ComfyUI ModelPatcher (DESIGN.md, "How it hooks into ComfyUI").

One UNet evaluation of the released model (spec §3) is reproduced on ComfyUI's own SD1.5 UNet:

- a keyed DIFFUSION_MODEL wrapper prepends the clean reference latent as frame 0 of every CFG chunk,
  expands timesteps, context and ControlNet residuals (zero for the reference), publishes the window's
  state in `transformer_options["xdyna"]`, calls through and drops the reference outputs;
- attn1/attn2 patch pairs add the Dynamics-Adapter and IP-Adapter terms, using the block's own modules;
- GroupNorms of ResNets and the final norm are object-patched with a joint-over-frames version;
- motion modules are injected as slots into the UNet's block sequences and run through a
  `forward_timestep_embed_patch` handler, skipping the reference frame.

Every patch reads the state that only the wrapper sets, so all of them do nothing anywhere else (in a
ControlNet's transformer blocks, in another pack's call of the same model).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import comfy.ldm.modules.attention as comfy_attention
import comfy.model_patcher
import comfy.model_sampling
import comfy.patcher_extension
import torch
from comfy import latent_formats, model_management
from comfy.ldm.modules.diffusionmodules.openaimodel import ResBlock, Upsample
from torch import nn

from ..xdyna_core.components import XDynaComponents
from ..xdyna_core.group_norm import joint_group_norm
from ..xdyna_core.reference import XDynaReference
from ..xdyna_core.reference_attention import dynamics_adapter_term, image_prompt_attention
from .comfy_glue import XDYNA_SAMPLING_SETTINGS

KEY = "xdyna"
STATE = "xdyna"
COND, UNCOND = 0, 1
# X-Dyna's parts on top of SD1.5; all on is the released model, subsets are for ablations and tests.
PARTS = frozenset({"dynamics_adapter", "ip_adapter", "motion_modules", "joint_group_norm"})


class XDynaInputError(ValueError):
    """Inputs that cannot be evaluated by X-Dyna (sizes, frame counts); the message says what to change."""


# --- where X-Dyna's parts sit in ComfyUI's SD1.5 UNet ------------------------------------------------------


def transformer_prefixes() -> dict[tuple[str, int], str]:
    """ComfyUI block id → diffusers prefix of the spatial transformer block in it (16 in SD1.5)."""
    table = {("middle", 0): "mid_block.attentions.0.transformer_blocks.0"}
    for level in range(3):
        for j in range(2):
            table[("input", 1 + 3 * level + j)] = f"down_blocks.{level}.attentions.{j}.transformer_blocks.0"
    for level in range(1, 4):
        for j in range(3):
            table[("output", 3 * level + j)] = f"up_blocks.{level}.attentions.{j}.transformer_blocks.0"
    return table


def motion_placements() -> dict[str, tuple[str, int]]:
    """Motion module prefix → the ComfyUI block it follows (after the ResNet/attention, before any upsampler)."""
    table = {}
    for level in range(4):
        for j in range(2):
            table[f"down_blocks.{level}.motion_modules.{j}"] = ("input", 1 + 3 * level + j)
        for j in range(3):
            table[f"up_blocks.{level}.motion_modules.{j}"] = ("output", 3 * level + j)
    return table


TRANSFORMER_PREFIXES = transformer_prefixes()
MOTION_PLACEMENTS = motion_placements()


def _block_sequence(unet: nn.Module, block: tuple[str, int]) -> nn.Sequential:
    kind, index = block
    if kind == "input":
        return unet.input_blocks[index]
    if kind == "output":
        return unet.output_blocks[index]
    return unet.middle_block


def _transformer_block(unet: nn.Module, block: tuple[str, int], block_index: int) -> nn.Module:
    for layer in _block_sequence(unet, block):
        if hasattr(layer, "transformer_blocks"):
            return layer.transformer_blocks[block_index]
    raise KeyError(f"no spatial transformer in UNet block {block}")


# --- per-call state -------------------------------------------------------------------------------------------


@dataclass
class WindowState:
    """What the patches need during one UNet call: set by the wrapper, visible only inside that call."""

    frames: int  # per CFG chunk: the reference + F window frames
    image_tokens: torch.Tensor  # [chunks, 16, D], each chunk's own tokens
    unet: nn.Module
    patch: XDynaPatch
    stash: dict = field(default_factory=dict)


class JointGroupNormRuntime:
    """Frames per chunk of the call in progress, for the object-patched GroupNorms (None: plain GroupNorm)."""

    def __init__(self) -> None:
        self.frames: int | None = None


class JointGroupNorm(nn.Module):
    """Stands in for a ResNet's GroupNorm: joint over the window's frames during X-Dyna calls, plain otherwise.

    It holds the very same weight and bias Parameters as the GroupNorm it replaces, so state-dict keys, weight
    patches (LoRA) and device moves are unaffected.
    """

    def __init__(self, original: nn.GroupNorm, runtime: JointGroupNormRuntime) -> None:
        super().__init__()
        self.num_groups, self.num_channels, self.eps = original.num_groups, original.num_channels, original.eps
        self.weight, self.bias = original.weight, original.bias
        object.__setattr__(self, "original", original)  # not a child: keeps the module tree unchanged
        object.__setattr__(self, "runtime", runtime)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = self.runtime.frames
        if frames is None:
            return self.original(x)
        weight = None if self.weight is None else self.weight.to(device=x.device, dtype=x.dtype)
        bias = None if self.bias is None else self.bias.to(device=x.device, dtype=x.dtype)
        return joint_group_norm(x, frames, self.num_groups, weight, bias, self.eps)


class MotionModuleSlot(nn.Module):
    """Marks where a motion module runs inside a UNet block; its work happens in `XDynaPatch.motion_handler`.

    The module itself is not a child (the components live in their own ModelPatcher), so injecting slots
    adds no parameters to the UNet. Called plainly (outside an X-Dyna call) it is the identity.
    """

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return x


# --- the patch -----------------------------------------------------------------------------------------------


class XDynaPatch:
    """Everything one patched MODEL needs; its bound methods are the registered patches.

    Args:
        components: the X-Dyna weights (adapter, IP k/v, motion modules).
        reference: the prepared reference (latent and image tokens of both branches).
        strength: weight of the Dynamics-Adapter term (1 = as released).
        parts: which X-Dyna parts act (default all: the released model).
    """

    def __init__(
        self,
        components: XDynaComponents,
        reference: XDynaReference,
        strength: float = 1.0,
        parts: frozenset[str] = PARTS,
    ) -> None:
        unknown = set(parts) - PARTS
        if unknown:
            raise ValueError(f"unknown X-Dyna parts {sorted(unknown)}; known: {sorted(PARTS)}")
        self.components = components
        self.reference = reference
        self.strength = strength
        self.parts = frozenset(parts)
        self.norm_runtime = JointGroupNormRuntime()

    def __deepcopy__(self, memo):  # older ComfyUI deep-copies model_options on clone()
        return self

    # The DIFFUSION_MODEL wrapper --------------------------------------------------------------------------

    def diffusion_model_wrapper(
        self, executor, x, timesteps, context, y=None, control=None, transformer_options=None, **kwargs
    ):
        transformer_options = transformer_options if transformer_options is not None else {}
        chunks_kind = transformer_options.get("cond_or_uncond") or [COND]
        chunks = len(chunks_kind)
        if x.shape[0] % chunks:
            raise XDynaInputError(f"a batch of {x.shape[0]} latents does not split into {chunks} CFG chunks")
        window = x.shape[0] // chunks
        self._check_window(x, window)
        unet = executor.class_obj
        frames = window + 1

        reference = unet_reference_input(self.reference.latent, x)
        x_in = _interleave_reference(x, reference, chunks)
        t_in = _repeat_first_per_chunk(timesteps, chunks)
        context_in = _repeat_first_per_chunk(context, chunks)
        y_in = _repeat_first_per_chunk(y, chunks) if y is not None else None
        control_in = _control_with_reference(control, chunks)
        kwargs = {k: _repeat_first_per_chunk(v, chunks) if _is_per_frame(v, x) else v for k, v in kwargs.items()}

        tokens = torch.cat(
            [
                self.reference.uncond_image_tokens if kind == UNCOND else self.reference.image_tokens
                for kind in chunks_kind
            ]
        )
        options = dict(transformer_options)
        options[STATE] = WindowState(frames, tokens.to(x.device), unet, self)
        if "joint_group_norm" in self.parts:
            self.norm_runtime.frames = frames
        try:
            out = executor(x_in, t_in, context_in, y_in, control_in, options, **kwargs)
        finally:
            self.norm_runtime.frames = None
        return _drop_reference(out, chunks, frames)

    def _check_window(self, x: torch.Tensor, window: int) -> None:
        max_frames = self.components.max_frames
        if window > max_frames:
            raise XDynaInputError(
                f"the model was given {window} frames at once, but X-Dyna's motion modules handle at most "
                f"{max_frames}; sample with XDyna_TemporalSampler (context windows) or fewer frames per batch"
            )
        ref_h, ref_w = self.reference.latent_size
        if (ref_h, ref_w) != tuple(x.shape[-2:]):
            raise XDynaInputError(
                f"the reference latent is {ref_w * 8}x{ref_h * 8} pixels but the video latent is "
                f"{x.shape[-1] * 8}x{x.shape[-2] * 8}; prepare the reference at the generation size "
                f"(XDyna_LoadReference width/height) or change the latent size to match"
            )

    # attn1: Dynamics-Adapter ----------------------------------------------------------------------------

    def attn1_patch(self, n, context_attn1, value_attn1, extra_options):
        _stash("attn1", n, extra_options)
        return n, context_attn1, value_attn1

    def attn1_output_patch(self, out, extra_options):
        taken = _take("attn1", extra_options)
        if taken is None or self.strength == 0 or "dynamics_adapter" not in self.parts:
            return out
        state, hidden, block, index, prefix = taken
        adapter = self.components.adapter(f"{prefix}.attn1")
        if adapter is None:
            return out
        attn1 = _transformer_block(state.unet, block, index).attn1
        term = dynamics_adapter_term(
            hidden,
            state.frames,
            _cast_call(adapter.to_q_ff),
            attn1.to_k,
            attn1.to_v,
            _cast_call(adapter.to_out_ff),
            extra_options["n_heads"],
            attention=comfy_attention.optimized_attention,
        )
        return out + self.strength * term.to(out.dtype)

    # attn2: IP-Adapter ------------------------------------------------------------------------------------

    def attn2_patch(self, n, context_attn2, value_attn2, extra_options):
        _stash("attn2", n, extra_options)
        return n, context_attn2, value_attn2

    def attn2_output_patch(self, out, extra_options):
        taken = _take("attn2", extra_options)
        if taken is None or "ip_adapter" not in self.parts:
            return out
        state, hidden, block, index, prefix = taken
        kv = self.components.image_kv(f"{prefix}.attn2")
        if kv is None:
            return out
        attn2 = _transformer_block(state.unet, block, index).attn2
        ip = image_prompt_attention(
            attn2.to_q(hidden),
            state.image_tokens,
            _cast_call(kv.to_k_ip),
            _cast_call(kv.to_v_ip),
            extra_options["n_heads"],
            attention=comfy_attention.optimized_attention,
        )
        # to_out is affine: to_out(a + b) = to_out(a) + W b, and W b = to_out(b) - to_out(0).
        to_out = attn2.to_out[0]
        projected = to_out(ip) - to_out(torch.zeros_like(ip[:1, :1]))
        return out + projected.to(out.dtype)

    # motion modules ---------------------------------------------------------------------------------------

    def motion_handler(self, layer, x, emb, context, transformer_options, *args, **kwargs):
        state = transformer_options.get(STATE)
        if state is None:
            return x
        module = self.components.motion(layer.prefix)
        if module is None or "motion_modules" not in self.parts:
            return x
        total = x.shape[0]
        chunks = total // state.frames
        clips = x.reshape(chunks, state.frames, *x.shape[1:])
        window = clips[:, 1:].reshape(chunks * (state.frames - 1), *x.shape[1:])
        param = next(module.parameters())
        mixed = module(window.to(param.dtype), state.frames - 1, attention=comfy_attention.optimized_attention).to(
            x.dtype
        )
        mixed = mixed.reshape(chunks, state.frames - 1, *x.shape[1:])
        return torch.cat([clips[:, :1], mixed], dim=1).reshape(total, *x.shape[1:])

    # registration -----------------------------------------------------------------------------------------

    def apply_to(self, model: comfy.model_patcher.ModelPatcher, components_patcher) -> None:
        """Register every patch on `model` (a clone), idempotently, under the key "xdyna"."""
        wrappers = comfy.patcher_extension.WrappersMP
        model.remove_wrappers_with_key(wrappers.DIFFUSION_MODEL, KEY)
        model.add_wrapper_with_key(wrappers.DIFFUSION_MODEL, KEY, self.diffusion_model_wrapper)
        model.set_model_attn1_patch(self.attn1_patch)
        model.set_model_attn1_output_patch(self.attn1_output_patch)
        model.set_model_attn2_patch(self.attn2_patch)
        model.set_model_attn2_output_patch(self.attn2_output_patch)
        model.set_model_forward_timestep_embed_patch((MotionModuleSlot, self.motion_handler))
        model.set_injections(KEY, [comfy.model_patcher.PatcherInjection(inject=_inject_slots, eject=_eject_slots)])
        model.set_additional_models(KEY, [components_patcher])
        unet = model.get_model_object("diffusion_model")
        for name, module in unet.named_modules():
            if isinstance(module, ResBlock):
                for norm in ("in_layers.0", "out_layers.0"):
                    original = model.get_model_object(f"diffusion_model.{name}.{norm}")
                    model.add_object_patch(
                        f"diffusion_model.{name}.{norm}", JointGroupNorm(original, self.norm_runtime)
                    )
        final_norm = model.get_model_object("diffusion_model.out.0")
        model.add_object_patch("diffusion_model.out.0", JointGroupNorm(final_norm, self.norm_runtime))
        model.add_object_patch("model_sampling", xdyna_model_sampling())


# --- helpers ---------------------------------------------------------------------------------------------------


def _stash(kind: str, hidden: torch.Tensor, extra_options: dict) -> None:
    """Keep a block's normed input (what the attention patch sees) for its output patch, during X-Dyna calls."""
    state = extra_options.get(STATE)
    if state is not None:
        state.stash[kind, extra_options.get("block"), extra_options.get("block_index", 0)] = hidden


def _take(kind: str, extra_options: dict):
    """(state, stashed input, block, block index, diffusers prefix) of an X-Dyna transformer block, else None."""
    state = extra_options.get(STATE)
    if state is None:
        return None
    block, index = extra_options.get("block"), extra_options.get("block_index", 0)
    hidden = state.stash.pop((kind, block, index), None)
    block = tuple(block) if block else None
    prefix = TRANSFORMER_PREFIXES.get(block)
    if hidden is None or prefix is None or index != 0:  # SD1.5 has one transformer block per spatial transformer
        return None
    return state, hidden, block, index, prefix


class XDynaSampling(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.EPS):
    """EPS sampling with AnimateDiff's betas (sqrt_linear), which the official DDIM schedule uses (spec §4)."""


def xdyna_model_sampling() -> nn.Module:
    config = type("XDynaSamplingConfig", (), {"sampling_settings": dict(XDYNA_SAMPLING_SETTINGS)})()
    return XDynaSampling(config)


def unet_reference_input(latent: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The clean reference latent as the UNet sees it: scaled by the SD1.5 factor, never noised (spec §3)."""
    return latent_formats.SD15().process_in(latent).to(device=like.device, dtype=like.dtype)


def _interleave_reference(x: torch.Tensor, reference: torch.Tensor, chunks: int) -> torch.Tensor:
    clips = x.reshape(chunks, -1, *x.shape[1:])
    ref = reference.expand(chunks, *reference.shape[1:]).unsqueeze(1)
    return torch.cat([ref, clips], dim=1).reshape(-1, *x.shape[1:])


def _repeat_first_per_chunk(t: torch.Tensor, chunks: int) -> torch.Tensor:
    clips = t.reshape(chunks, -1, *t.shape[1:])
    return torch.cat([clips[:, :1], clips], dim=1).reshape(-1, *t.shape[1:])


def _drop_reference(out: torch.Tensor, chunks: int, frames: int) -> torch.Tensor:
    return out.reshape(chunks, frames, *out.shape[1:])[:, 1:].reshape(-1, *out.shape[1:])


def _is_per_frame(value, x: torch.Tensor) -> bool:
    return isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == x.shape[0]


def _control_with_reference(control, chunks: int):
    """ControlNet residuals for [reference + frames]: the reference frame gets zeros (spec §3.5)."""
    if control is None:
        return None
    padded = {}
    for name, residuals in control.items():
        if not isinstance(residuals, list):
            padded[name] = residuals
            continue
        padded[name] = [None if r is None else _zero_first_per_chunk(r, chunks) for r in residuals]
    return padded


def _zero_first_per_chunk(r: torch.Tensor, chunks: int) -> torch.Tensor:
    clips = r.reshape(chunks, -1, *r.shape[1:])
    return torch.cat([torch.zeros_like(clips[:, :1]), clips], dim=1).reshape(-1, *r.shape[1:])


def _cast_call(layer: nn.Linear):
    """Run an X-Dyna projection in its own dtype/device and hand back the caller's dtype."""

    def call(x: torch.Tensor) -> torch.Tensor:
        weight = layer.weight
        return layer(x.to(device=weight.device, dtype=weight.dtype)).to(x.dtype)

    return call


def _inject_slots(model: comfy.model_patcher.ModelPatcher) -> None:
    unet = model.model.diffusion_model
    for prefix, block in MOTION_PLACEMENTS.items():
        sequence = _block_sequence(unet, block)
        if any(isinstance(m, MotionModuleSlot) and m.prefix == prefix for m in sequence):
            continue
        position = len(sequence) - 1 if isinstance(sequence[-1], Upsample) else len(sequence)
        sequence.insert(position, MotionModuleSlot(prefix))


def _eject_slots(model: comfy.model_patcher.ModelPatcher) -> None:
    unet = model.model.diffusion_model
    for block in set(MOTION_PLACEMENTS.values()):
        sequence = _block_sequence(unet, block)
        for position in reversed(range(len(sequence))):
            if isinstance(sequence[position], MotionModuleSlot):
                del sequence[position]


def components_model_patcher(components: XDynaComponents) -> comfy.model_patcher.ModelPatcher:
    """The X-Dyna weights as a ModelPatcher, so ComfyUI's memory manager loads and offloads them with the UNet."""
    return comfy.model_patcher.ModelPatcher(
        components,
        load_device=model_management.get_torch_device(),
        offload_device=model_management.unet_offload_device(),
    )
