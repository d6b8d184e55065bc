"""The X-Dyna model patch on a ComfyUI ModelPatcher (docs/comfyui_integration.md).

One UNet evaluation of the released model (docs/xdyna_model.md §3) is reproduced on ComfyUI's own SD1.5 UNet:

- a keyed DIFFUSION_MODEL wrapper prepends the clean reference latent as frame 0 of every CFG chunk,
  expands timesteps, context and ControlNet residuals (zero for the reference; a fused ControlNet chain's,
  given per CFG chunk, it adds to the frame rows itself with an `output_block_patch`), publishes the call's
  state in `transformer_options["xdyna"]`, calls through and drops the reference outputs;
- attn1/attn2 patch pairs add the Dynamics-Adapter and IP-Adapter terms, using the block's own modules;
- the ResNets' norm stacks and the final norm stack are object-patched with containers that hold the very
  same GroupNorm layers but normalise jointly over the window's frames during X-Dyna calls;
- the UNet blocks that motion modules follow are object-patched with containers that hold the same layers
  plus a motion-module slot, run through a `forward_timestep_embed_patch` handler that skips frame 0;
- the transformer blocks' feed-forwards are object-patched with containers holding the same layers that run
  them a block of tokens at a time (feed_forward.py), the largest activation of a full-resolution call.

Everything the patch changes in the UNet is an object patch, which ComfyUI backs up once and restores
whenever a model is loaded or unloaded: no patched copy ever edits the module tree in place, so a copy that
dies at any moment (a garbage-collected traceback) cannot take another copy's changes with it, and a
failed sampling run restores the UNet in a `finally` (the OUTER_SAMPLE wrapper). Containers keep the
original module names, so state-dict keys, weight patches (LoRA) and ComfyUI's per-layer casting and
offloading apply to the original layers unchanged.

Every patch reads the per-call state that only the wrapper sets, so all of them do nothing anywhere else
(in a ControlNet's transformer blocks, in another pack's call of the same model).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field

import comfy.ldm.modules.attention as comfy_attention
import comfy.model_patcher
import comfy.model_sampling
import comfy.ops
import comfy.patcher_extension
import torch
import torch.nn.functional as F
from comfy import latent_formats, model_management
from comfy.ldm.modules.diffusionmodules.openaimodel import ResBlock, Upsample
from torch import nn

from ..xdyna_core.components import XDynaComponents
from ..xdyna_core.group_norm import joint_group_norm
from ..xdyna_core.reference import XDynaReference
from ..xdyna_core.reference_attention import dynamics_adapter_term, image_prompt_attention
from ..xdyna_core.seeds import SEED_MAX, torch_seed
from ..xdyna_core.validation import XDynaInputError
from .controlnets import CHUNK_RESIDUALS, ChunkResiduals, adopt_controls, check_controls
from .feed_forward import chunked_feed_forward, feed_forward_keys
from .sigmas import xdyna_model_sampling

KEY = "xdyna"
STATE = "xdyna"
COND, UNCOND = 0, 1
# X-Dyna's parts on top of SD1.5; all on is the released model, subsets are for ablations and tests.
PARTS = frozenset({"dynamics_adapter", "ip_adapter", "motion_modules", "joint_group_norm"})
SLOT_NAME = "xdyna_motion_module"  # not a number: the block's own layers keep their indices (and keys)


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


def block_key(block: tuple[str, int]) -> str:
    """The ModelPatcher key of a UNet block sequence (`diffusion_model.input_blocks.1`, ...)."""
    kind, index = block
    if kind == "middle":
        return "diffusion_model.middle_block"
    return f"diffusion_model.{kind}_blocks.{index}"


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
    """What the patches need during one UNet call: made by the wrapper, visible only inside that call."""

    frames: int  # per CFG chunk: the reference + F window frames
    image_tokens: torch.Tensor  # [chunks, 16, D], each chunk's own tokens, in the call's dtype and device
    unet: nn.Module
    patch: XDynaPatch
    stash: dict = field(default_factory=dict)


# Frames per CFG chunk of the X-Dyna call running in this thread (None: none is). The norm containers cannot
# receive `transformer_options`, so the wrapper sets this for exactly the duration of its call; a context
# variable is per thread, so model copies evaluated on several devices at once never see each other's value.
_JOINT_NORM_FRAMES: contextvars.ContextVar[int | None] = contextvars.ContextVar("xdyna_joint_norm_frames", default=None)


class JointNormSequential(nn.Sequential):
    """A norm stack `(GroupNorm, ...)` whose GroupNorm is joint over the window's frames during X-Dyna calls.

    It holds the original layers under their original names, so `in_layers.0.weight` still names the same
    GroupNorm: ComfyUI's weight patches, dtype casting and lowvram offloading act on it as before. Outside an
    X-Dyna call it is the plain stack.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = _JOINT_NORM_FRAMES.get()
        layers = list(self)
        if frames is None or not layers or not isinstance(layers[0], nn.GroupNorm):
            return super().forward(x)
        h = joint_group_norm(x, frames, layers[0])
        for layer in layers[1:]:
            h = layer(h)
        return h


class MotionModuleSlot(nn.Module):
    """Marks where a motion module runs inside a UNet block; its work happens in `XDynaPatch.motion_handler`.

    The module itself is not a child (the components live in their own ModelPatcher), so slots add no
    parameters to the UNet. Called plainly (outside an X-Dyna call) it is the identity, and the handler of a
    patch runs only the slots that patch made.
    """

    def __init__(self, prefix: str, owner: object) -> None:
        super().__init__()
        self.prefix = prefix
        object.__setattr__(self, "owner", owner)  # not a child module

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return x


def _children(container: nn.Module) -> list[tuple[str, nn.Module]]:
    """A container's own layers, without X-Dyna slots (so re-patching a patched copy never nests)."""
    return [(k, m) for k, m in container._modules.items() if not isinstance(m, MotionModuleSlot)]


def sequence_with_slot(original: nn.Sequential, prefix: str, owner: object) -> nn.Sequential:
    """A copy of a UNet block sequence (same layers, same names) with a motion-module slot before any upsampler."""
    items = _children(original)
    position = len(items) - 1 if items and isinstance(items[-1][1], Upsample) else len(items)
    items.insert(position, (SLOT_NAME, MotionModuleSlot(prefix, owner)))
    patched = type(original)(OrderedDict(items))
    patched.train(original.training)
    return patched


def joint_norm_stack(original: nn.Sequential) -> JointNormSequential:
    stack = JointNormSequential(OrderedDict(_children(original)))
    stack.train(original.training)
    return stack


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
        output_patch = None
        if isinstance(control, ChunkResiduals):
            control_in, output_patch = _chunk_control(control, chunks)
        else:
            control_in = _control_with_reference(control, chunks)
        kwargs = {k: _repeat_first_per_chunk(v, chunks) if _is_per_frame(v, x) else v for k, v in kwargs.items()}

        tokens = torch.cat(
            [
                self.reference.uncond_image_tokens if kind == UNCOND else self.reference.image_tokens
                for kind in chunks_kind
            ]
        )
        options = dict(transformer_options)
        options[STATE] = WindowState(frames, tokens.to(device=x.device, dtype=x.dtype), unet, self)
        if output_patch is not None:  # first, where core adds an output residual, before other packs' patches
            patches = dict(options.get("patches", {}))
            patches["output_block_patch"] = [output_patch, *patches.get("output_block_patch", [])]
            options["patches"] = patches
        token = _JOINT_NORM_FRAMES.set(frames if "joint_group_norm" in self.parts else None)
        try:
            out = executor(x_in, t_in, context_in, y_in, control_in, options, **kwargs)
        finally:
            _JOINT_NORM_FRAMES.reset(token)
        return _drop_reference(out, chunks, frames)

    def _check_window(self, x: torch.Tensor, window: int) -> None:
        max_frames = self.components.max_frames
        if window > max_frames:
            raise XDynaInputError(
                f"the model was given {window} frames at once, but X-Dyna's motion modules handle at most "
                f"{max_frames}; sample with XDyna_TemporalSampler (context windows) or fewer frames per batch"
            )
        self._check_reference_size(x.shape[-2:])

    def _check_reference_size(self, latent_size) -> None:
        ref_h, ref_w = self.reference.latent_size
        if (ref_h, ref_w) != tuple(latent_size):
            raise XDynaInputError(
                f"the reference latent is {ref_w * 8}x{ref_h * 8} pixels but the video latent is "
                f"{latent_size[1] * 8}x{latent_size[0] * 8}; prepare the reference at the generation size "
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
            adapter.to_q_ff,
            attn1.to_k,
            attn1.to_v,
            adapter.to_out_ff,
            extra_options["n_heads"],
            attention=_attention(extra_options),
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
            kv.to_k_ip,
            kv.to_v_ip,
            extra_options["n_heads"],
            attention=_attention(extra_options),
        )
        # The release adds the image attention before to_out, which is affine: to_out(a + b) = to_out(a) + W b.
        return out + _weight_only(attn2.to_out[0], ip).to(out.dtype)

    # motion modules ---------------------------------------------------------------------------------------

    def motion_handler(self, layer, x, emb, context, transformer_options, *args, **kwargs):
        state = transformer_options.get(STATE)
        if state is None or state.patch is not self or layer.owner is not self:
            return x
        module = self.components.motion(layer.prefix)
        if module is None or "motion_modules" not in self.parts:
            return x
        total = x.shape[0]
        chunks = total // state.frames
        clips = x.reshape(chunks, state.frames, *x.shape[1:])
        window = clips[:, 1:].reshape(chunks * (state.frames - 1), *x.shape[1:])
        mixed = module(window, state.frames - 1, attention=_attention(transformer_options)).to(x.dtype)
        mixed = mixed.reshape(chunks, state.frames - 1, *x.shape[1:])
        return torch.cat([clips[:, :1], mixed], dim=1).reshape(total, *x.shape[1:])

    # failures -----------------------------------------------------------------------------------------------

    def outer_sample_wrapper(self, executor, *args, **kwargs):
        """One sampling run, after which the shared UNet is as it was before, however the run ends.

        X-Dyna's object patches live in the UNet only while a run samples: ComfyUI applies them when it loads
        the model for the run, and they are taken out again here (weights and devices stay as loaded, so the
        next run only re-applies them). ComfyUI keeps a failed node's exception, and with it every frame's
        locals (this patched copy among them), until the garbage collector happens to free it; the finished
        frames' locals are dropped here, so the copy and the tensors it held are released at once.
        """
        guider = executor.class_obj
        args, kwargs = _seed_in_torch_range(guider, args, kwargs)
        noise = args[0] if args else kwargs["noise"]
        self.check_run(guider, noise)
        adopt_controls(getattr(guider, "conds", {}) or {})
        try:
            return executor(*args, **kwargs)
        except BaseException as error:
            traceback.clear_frames(error.__traceback__)
            raise
        finally:
            patcher = getattr(guider, "model_patcher", None)
            if patcher is not None:
                restore_unet(patcher)

    def check_run(self, guider, noise: torch.Tensor) -> None:
        """Everything a run's inputs must agree on, checked once before anything is loaded or sampled."""
        if noise.ndim != 4:
            raise XDynaInputError(
                f"X-Dyna samples SD1.5 video latents [frames, 4, h, w], got shape {tuple(noise.shape)}"
            )
        self._check_reference_size(noise.shape[-2:])
        conds = getattr(guider, "conds", {}) or {}
        unet = guider.model_patcher.get_model_object("diffusion_model")
        check_controls(list(conds.values()), noise.shape[0], tuple(noise.shape[-2:]), unet)

    # registration -----------------------------------------------------------------------------------------

    def apply_to(self, model: comfy.model_patcher.ModelPatcher, components_patcher) -> None:
        """Register every patch on `model` (a clone) under the key "xdyna".

        Applying again replaces the earlier X-Dyna patches (the last settings win), never stacks on them.
        """
        wrappers = comfy.patcher_extension.WrappersMP
        for kind, wrapper in (
            (wrappers.DIFFUSION_MODEL, self.diffusion_model_wrapper),
            (wrappers.OUTER_SAMPLE, self.outer_sample_wrapper),
        ):
            model.remove_wrappers_with_key(kind, KEY)
            model.add_wrapper_with_key(kind, KEY, wrapper)
        remove_xdyna_patches(model)
        model.set_model_attn1_patch(self.attn1_patch)
        model.set_model_attn1_output_patch(self.attn1_output_patch)
        model.set_model_attn2_patch(self.attn2_patch)
        model.set_model_attn2_output_patch(self.attn2_output_patch)
        model.set_model_forward_timestep_embed_patch((MotionModuleSlot, self.motion_handler))
        model.set_additional_models(KEY, [components_patcher])
        for prefix, block in MOTION_PLACEMENTS.items():
            key = block_key(block)
            model.add_object_patch(key, sequence_with_slot(model.get_model_object(key), prefix, self))
        for key in norm_stack_keys(model.get_model_object("diffusion_model")):
            model.add_object_patch(key, joint_norm_stack(model.get_model_object(key)))
        for key in feed_forward_keys(model.get_model_object("diffusion_model")):
            model.add_object_patch(key, chunked_feed_forward(model.get_model_object(key)))
        model.add_object_patch("model_sampling", xdyna_model_sampling())
        model.model_options.setdefault("transformer_options", {})[CHUNK_RESIDUALS] = True


def norm_stack_keys(unet: nn.Module) -> list[str]:
    """ModelPatcher keys of the norm stacks X-Dyna normalises jointly: each ResNet's two, and the final one."""
    keys = []
    for name, module in list(unet.named_modules()):  # a snapshot: nothing iterates the live tree while it changes
        if isinstance(module, ResBlock):
            if getattr(module, "use_scale_shift_norm", False) or getattr(module, "updown", False):
                raise XDynaInputError(f"UNet ResNet {name} is not SD1.5's (scale-shift norm or resampling)")
            keys += [f"diffusion_model.{name}.in_layers", f"diffusion_model.{name}.out_layers"]
    return [*keys, "diffusion_model.out"]


def remove_xdyna_patches(model: comfy.model_patcher.ModelPatcher) -> None:
    """Drop X-Dyna's attention and motion patches from `model`'s patch lists (other packs' stay, in order)."""
    patches = model.model_options.get("transformer_options", {}).get("patches", {})
    for name, entries in list(patches.items()):
        kept = [entry for entry in entries if not _is_xdyna_entry(entry)]
        if len(kept) != len(entries):
            patches[name] = kept


def _is_xdyna_entry(entry) -> bool:
    handler = entry[1] if isinstance(entry, tuple) and len(entry) == 2 else entry
    return isinstance(getattr(handler, "__self__", None), XDynaPatch)


def _seed_in_torch_range(guider, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """The run's arguments with its seed read as `seeds.torch_seed` reads it (the same draws for every seed), so
    that core's samplers, which seed generators with `seed + 1`, take the whole widget range up to 2**64 - 1."""
    try:
        bound = inspect.signature(guider.outer_sample).bind(*args, **kwargs)
    except (TypeError, ValueError):  # another ComfyUI's signature: leave the run as it is
        return args, kwargs
    seed = bound.arguments.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= SEED_MAX:
        bound.arguments["seed"] = torch_seed(seed)
    return bound.args, bound.kwargs


def restore_unet(patcher: comfy.model_patcher.ModelPatcher) -> None:
    """Put back the UNet modules that `patcher`'s object patches replaced (weights and devices stay as loaded)."""
    patcher.unpatch_model(device_to=None, unpatch_weights=False)


# --- helpers ---------------------------------------------------------------------------------------------------


def _attention(transformer_options: dict):
    """ComfyUI's attention with the call's options, so a user's `optimized_attention_override` applies too."""
    return functools.partial(comfy_attention.optimized_attention, transformer_options=transformer_options)


def _weight_only(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`W x` of a linear layer, without its bias, with the weight ComfyUI would use (cast, offloaded, patched)."""
    if hasattr(layer, "comfy_cast_weights"):
        weight, _ = comfy.ops.cast_bias_weight(layer, x)
    else:
        weight = layer.weight.to(device=x.device, dtype=x.dtype)
    return F.linear(x, weight)


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


def unet_reference_input(latent: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The clean reference latent as the UNet sees it: scaled by the SD1.5 factor, never noised (docs/xdyna_model.md §3)."""
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
    """ControlNet residuals for [reference + frames]: the reference frame gets zeros (docs/xdyna_model.md §3.5).

    The residual lists are rewritten in place: the caller (core's `_calc_cond_batch`) holds the same dict for
    the whole UNet call, so the window's residuals are not held twice, and the UNet, which pops each residual
    as it adds it, frees them as it goes.
    """
    if control is None:
        return None
    for residuals in control.values():
        if isinstance(residuals, list):
            for i in range(len(residuals)):
                if residuals[i] is not None:
                    residuals[i] = _zero_first_per_chunk(residuals[i], chunks)
    return control


def _chunk_control(control: ChunkResiduals, chunks: int):
    """The UNet's `control` for residuals given per CFG chunk, and an `output_block_patch` that adds the output
    residuals to the frame rows of each chunk's skip connection, where core's `apply_control` would add them.

    Chunks sharing a residual set get it broadcast, so the call holds one set, not one per branch, and no zeros
    for the reference frames: the values are core's (`hsp += residual`, the reference rows unchanged). Each set
    is popped as the UNet goes, as core pops its lists. Other keys (the middle residual, small) go the usual way.
    """
    if len(control.chunks) != chunks:
        raise ValueError(f"ControlNet residuals for {len(control.chunks)} CFG chunks in a call of {chunks}")
    sets = list({id(r): r for r in control.chunks}.values())  # each distinct set once
    standard = _control_with_reference({**control.joined_except("output"), "output": []}, chunks)

    def add_output(h, hsp, transformer_options):
        popped = {id(r): r["output"].pop() if r.get("output") else None for r in sets}
        if hsp is None or all(v is None for v in popped.values()):
            return h, hsp
        clips = hsp.unflatten(0, (chunks, -1))[:, 1:]  # [chunks, frames, ...] without the reference rows
        residuals = [popped[id(r)] for r in control.chunks]
        if len(sets) == 1:
            clips += residuals[0].unsqueeze(0)
        else:
            for chunk, residual in enumerate(residuals):
                if residual is not None:
                    clips[chunk] += residual
        return h, hsp

    return standard, add_output


def _zero_first_per_chunk(r: torch.Tensor, chunks: int) -> torch.Tensor:
    clips = r.reshape(chunks, -1, *r.shape[1:])
    return torch.cat([torch.zeros_like(clips[:, :1]), clips], dim=1).reshape(-1, *r.shape[1:])


def build_components(parts, dtype: torch.dtype) -> XDynaComponents:
    """The X-Dyna weights of a split checkpoint as modules of ComfyUI's casting layers, stored in `dtype`.

    `comfy.ops.manual_cast` layers cast their weights to each input's dtype and device, so the components
    compute in the UNet's compute dtype (also when it differs from the stored one) and ComfyUI's memory
    manager can leave any of them on the offload device under a lowvram budget.
    """
    return XDynaComponents.from_parts(
        parts.dynamics_adapter,
        parts.ip_adapter,
        parts.motion_modules,
        motion_heads=parts.config.attention_heads,
        operations=comfy.ops.manual_cast,
        dtype=dtype,
    )


def components_model_patcher(components: XDynaComponents) -> comfy.model_patcher.ModelPatcher:
    """The X-Dyna weights as a ModelPatcher, so ComfyUI's memory manager loads and offloads them with the UNet."""
    return comfy.model_patcher.ModelPatcher(
        components,
        load_device=model_management.get_torch_device(),
        offload_device=model_management.unet_offload_device(),
    )
