"""X-Dyna's ControlNets on ComfyUI: each frame's residuals computed once per evaluation, hints fetched per window.

A ControlNet's output for a frame depends only on that frame's latent, the step, the text context and the
frame's hint, never on the window (docs/xdyna_model.md §3.5, §6). The release (and core ComfyUI) nevertheless
run it for every frame of every window and for both CFG branches. `XDynaControlNet`, a core `ControlNet`
with the same weights and settings, instead:

- shares one evaluation between CFG branches whose contexts (and extra conditions) are equal, as the released
  empty prompt makes them, whether core batches the branches into one UNet call or, short of memory, runs
  them one after the other; branches that differ (a user prompt, `control_apply_to_uncond`) get their own;
- keeps a frame's residuals from the first window of an evaluation that needs them to the last, following the
  window plan the context-window wrapper publishes, so overlapping and wrapped-round frames are computed once;
  the cache holds only frames still to be used and, past a memory budget, moves to the offload device or,
  where there is none to move to (a CPU run, `--gpu-only`), holds what fits and recomputes the rest;
- for a chain of them (X-Dyna's pose and S-Face ControlNets), the outermost computes each frame through the
  whole chain and caches the merged residuals: one residual set per frame held between windows, not one per
  ControlNet; on an X-Dyna MODEL it hands them to the UNet call per CFG chunk (`ChunkResiduals`), so branches
  that share an evaluation share one set during the call too;
- reads its hints from a `HintFrames` clip, a window's frames at a time, so no full-clip float32 hint ever
  exists on the compute device (or anywhere, for clips that render on demand).

The numbers are those of core's ControlNet on the same inputs: the same layers, strength, timestep range and
residual merging with a chained ControlNet.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import comfy.controlnet
import comfy.ldm.modules.diffusionmodules.openaimodel as openaimodel
import comfy.model_base
import comfy.model_management
import comfy.utils
import torch

from ..xdyna_core.hints import HintFrames, TensorHintFrames, normalise

logger = logging.getLogger("xdyna")

WINDOW_CALL = "xdyna_window"  # transformer_options key of the window being evaluated
# transformer_options flag, set on X-Dyna MODELs: their UNet call takes a fused chain's residuals per CFG chunk
CHUNK_RESIDUALS = "xdyna_chunk_residuals"
CACHE_BUDGET_BYTES = 2 << 30  # residuals kept between windows on the compute device, before spilling or recomputing

_evaluations = itertools.count()
Residuals = dict[str, list[torch.Tensor | None]]  # a ControlNet's outputs: {"middle": [...], "output": [...]}


def _map(residuals: Residuals, fn) -> Residuals:
    return {key: [None if v is None else fn(v) for v in layers] for key, layers in residuals.items()}


def _values(residuals: Residuals):
    return (v for layers in residuals.values() for v in layers if v is not None)


def _concat(parts: Sequence[Residuals]) -> Residuals:
    """Residuals of consecutive batch rows joined along the batch."""
    return {
        key: [None if layer[0] is None else torch.cat(layer) for layer in zip(*(p[key] for p in parts))]
        for key in parts[0]
    }


@dataclass(frozen=True)
class ChunkResiduals:
    """A fused chain's residuals for a UNet call, one set per CFG chunk of the batch (in batch order) instead of
    joined along it: chunks that share an evaluation share the very same set, so the call holds each frame's
    residuals once, not once per branch. Only the X-Dyna UNet call takes this form (`CHUNK_RESIDUALS`); it
    adds the residuals itself, frame rows only (xdyna_comfy/model_patch.py)."""

    chunks: tuple[Residuals, ...]

    def joined_except(self, key: str) -> Residuals:
        """The residuals of every other key joined along the batch, as core's ControlNets give them."""
        return _concat([{k: v for k, v in r.items() if k != key} for r in self.chunks])


def new_evaluation_id() -> int:
    """A fresh id for one model evaluation of the whole video (a step, or a sub-step of a multi-step sampler)."""
    return next(_evaluations)


@dataclass(frozen=True)
class WindowCall:
    """The window a UNet call evaluates, as the ControlNets need to know it.

    Args:
        evaluation: id of the model evaluation the window belongs to (residuals are reused within it only).
        frames: the video frames of the window, in the order of the batch.
        index: the window's position in the evaluation's plan.
        last_use: frame → index of the last window of the evaluation that needs it (empty: no reuse).
        uses: id of a ControlNet → how many condition chunks of the window run it. Core batches the chunks
            into one UNet call when memory allows and splits them otherwise; until a ControlNet has served
            them all it keeps the window's residuals for the chunks still due (empty: no such sharing).
    """

    evaluation: int
    frames: tuple[int, ...]
    index: int = 0
    last_use: Mapping[int, int] = field(default_factory=dict)
    uses: Mapping[int, int] = field(default_factory=dict)


def last_uses(windows: Sequence[Sequence[int]]) -> dict[int, int]:
    """Frame → the index of the last window that contains it."""
    return {frame: i for i, window in enumerate(windows) for frame in window}


def control_uses(conds) -> dict[int, int]:
    """id of each ControlNet in the conditioning (chains included) → the number of condition chunks that run it."""
    uses: dict[int, int] = {}
    for chain in _chains(conds):
        for control in chain:
            uses[id(control)] = uses.get(id(control), 0) + 1
    return uses


def normalisation_ranges(hints: HintFrames, stream_channels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel `(low, high)` of the release's min-max normalisation: each stream's min and max over the clip.

    Pose hints are one stream; S-Face hints are two (the local and the global canvas), normalised apart.
    """
    low, high = hints.value_range()
    streams = max(1, hints.channels // stream_channels)
    low = low.reshape(streams, -1).amin(1, keepdim=True).expand(-1, stream_channels).reshape(-1)
    high = high.reshape(streams, -1).amax(1, keepdim=True).expand(-1, stream_channels).reshape(-1)
    return low.clone(), high.clone()


def can_adopt(control) -> bool:
    """Whether a core ControlNet can run as an XDynaControlNet: a plain image-hint ControlNet (SD1.5-style)."""
    return (
        type(control) is comfy.controlnet.ControlNet
        and control.latent_format is None
        and control.vae is None
        and not control.concat_mask
        and not control.extra_concat_orig
    )


class XDynaControlNet(comfy.controlnet.ControlNet):
    """A core ControlNet that evaluates each frame once per evaluation and reads its hints from `HintFrames`."""

    hint_frames: HintFrames | None = None
    hint_ranges: tuple[torch.Tensor, torch.Tensor] | None = None
    xdyna_name: str | None = None
    planned_cache_bytes = 0  # residuals this run may keep between windows on the compute device (`plan_residual_cache`)

    @classmethod
    def adopt(
        cls,
        base: comfy.controlnet.ControlNet,
        hints: HintFrames,
        ranges: tuple[torch.Tensor, torch.Tensor] | None = None,
        name: str | None = None,
    ) -> XDynaControlNet:
        """An XDynaControlNet with `base`'s weights and settings (strength, range, chain) and these hints."""
        control = cls(
            None,
            global_average_pooling=base.global_average_pooling,
            load_device=base.load_device,
            manual_cast_dtype=base.manual_cast_dtype,
        )
        control.control_model = base.control_model
        control.control_model_wrapped = base.control_model_wrapped
        base.copy_to(control)
        control.cond_hint_original = None  # the clip lives in hint_frames, never whole on the device
        control.previous_controlnet = base.previous_controlnet
        control.hint_frames = hints
        control.hint_ranges = ranges
        control.xdyna_name = name or getattr(base, "xdyna_name", None)
        control._reset()
        control._reset_log()
        return control

    def _reset(self) -> None:
        self._evaluation: int | None = None
        self._window: int | None = None  # index of the window being served, and its condition chunks served
        self._served = 0
        self._groups: list[tuple[torch.Tensor, dict]] = []
        # (group, frame) → residuals [1, ...]: the chain's merged ones when it fuses, else this one's unscaled
        self._cache: dict[tuple[int, int], Residuals] = {}

    def _reset_log(self) -> None:
        self._spilled = False  # moved to the offload device (logged once a run)
        self._dropping = False  # recomputing past the budget instead (logged once a run)

    def copy(self) -> XDynaControlNet:
        return XDynaControlNet.adopt(self, self.hint_frames, self.hint_ranges, self.xdyna_name)

    def copy_to(self, c) -> None:
        super().copy_to(c)
        if isinstance(c, XDynaControlNet):
            c.hint_frames, c.hint_ranges, c.xdyna_name = self.hint_frames, self.hint_ranges, self.xdyna_name
            c.planned_cache_bytes = self.planned_cache_bytes

    def cleanup(self) -> None:  # core's call at the end of a sampling run
        super().cleanup()
        self._reset()
        self._reset_log()
        self.planned_cache_bytes = 0

    def inference_memory_requirements(self, dtype) -> int:
        """Core's figure for the chain, plus the residuals this run may keep between windows: ComfyUI's memory
        manager adds it to what it frees on the compute device before the run (`plan_residual_cache`)."""
        return super().inference_memory_requirements(dtype) + self.planned_cache_bytes

    def residual_bytes(self, latent_size: tuple[int, int]) -> int:
        """Bytes of one frame's residuals (one per input block and the middle one) at this latent size."""
        element = torch.empty((), dtype=self._compute_dtype).element_size()
        return residual_elements(self.control_model, latent_size) * element

    @property
    def _compute_dtype(self) -> torch.dtype:
        """The dtype the network computes (and returns its residuals) in: the manual cast's, else its weights'."""
        return self.manual_cast_dtype if self.manual_cast_dtype is not None else self.control_model.dtype

    @property
    def hint_shape(self) -> tuple[int, int, int, int]:
        """`(frames, channels, height, width)` of the hint clip, as core's `cond_hint_original` would have."""
        frames, height, width, channels = self.hint_frames.shape
        return (frames, channels, height, width)

    # --- evaluation -------------------------------------------------------------------------------------

    def get_control(self, x_noisy, t, cond, batched_number, transformer_options):
        fused = self._fuses_chain()
        control_prev = None
        if fused:
            if not any(link._active(t) for link in chain_of(self)):
                return None
        else:
            if self.previous_controlnet is not None:
                control_prev = self.previous_controlnet.get_control(
                    x_noisy, t, cond, batched_number, transformer_options
                )
            if not self._active(t):
                return control_prev

        chunks = max(1, batched_number)
        per_chunk = x_noisy.shape[0] // chunks
        call = transformer_options.get(WINDOW_CALL)
        if call is None or len(call.frames) != per_chunk:
            call = WindowCall(new_evaluation_id(), tuple(range(per_chunk)))
        if call.evaluation != self._evaluation:
            self._reset()
            self._evaluation = call.evaluation
        if call.index != self._window:
            self._next_window(call)
        self._served += chunks
        branches_due = self._served < call.uses.get(id(self), 0)  # core split the chunks: more calls will come

        context = cond.get("crossattn_controlnet", cond["c_crossattn"])
        extras = {c: cond[c] for c in self.extra_conds if cond.get(c) is not None}
        per_group: dict[int, Residuals] = {}
        outputs = []
        for chunk in range(chunks):
            rows = slice(chunk * per_chunk, (chunk + 1) * per_chunk)
            chunk_extras = {k: v[rows] for k, v in extras.items()}
            group = self._group_of(context[rows], chunk_extras)
            if group is None:  # the chunk's frames have different contexts: evaluate it whole, uncached
                outputs.append(self._fresh(x_noisy[rows], t[rows], context[rows], chunk_extras, call.frames, fused))
                continue
            if group not in per_group:
                per_group[group] = self._window_residuals(group, x_noisy[rows], t[rows], call, branches_due, fused)
            outputs.append(per_group[group])
        if fused and transformer_options.get(CHUNK_RESIDUALS):
            return ChunkResiduals(tuple(outputs))  # each set a tensor of its own, added by the X-Dyna call
        joined = outputs[0] if len(outputs) == 1 else _concat(outputs)  # each output is a tensor of its own
        return joined if fused else self.control_merge(joined, control_prev, output_dtype=None)

    # --- chains ---------------------------------------------------------------------------------------------

    def _fuses_chain(self) -> bool:
        """Whether this ControlNet caches the merged residuals of its whole chain (one residual set per frame,
        not one per ControlNet): every link an XDynaControlNet reading the same extra conditions. Otherwise
        (a core ControlNet, T2I adapter or ControlLoRA further down) each link computes and merges as core's do.
        """
        return all(
            isinstance(link, XDynaControlNet) and link.extra_conds == self.extra_conds for link in chain_of(self)
        )

    def _active(self, t: torch.Tensor) -> bool:
        """Whether `t` lies in this ControlNet's start/end range (core's test in `get_control`)."""
        low_high = self.timestep_range
        return low_high is None or not (t[0] > low_high[0] or t[0] < low_high[1])

    def _chain_rows(self, x, t, context, extras, frames) -> Residuals | None:
        """The merged, scaled residuals of this ControlNet and those chained before it, for these rows: what
        core's chain of `get_control` calls gives (each link's strength, range and `control_merge`), row by row,
        since every step of it is elementwise."""
        previous = self.previous_controlnet
        merged = None if previous is None else previous._chain_rows(x, t, context, extras, frames)
        if not self._active(t):
            return merged
        return self.control_merge(self._evaluate(x, t, context, extras, frames), merged, output_dtype=None)

    def _fresh(self, x, t, context, extras, frames, fused: bool) -> Residuals:
        """Residuals for these rows, computed now: the chain's merged ones, or this ControlNet's unscaled ones."""
        if fused:
            return self._chain_rows(x, t, context, extras, frames)
        return self._evaluate(x, t, context, extras, frames)

    def _group_of(self, context: torch.Tensor, extras: dict) -> int | None:
        """The sharing group of a chunk whose frames all have one context; None if its frames differ."""
        first = context[:1]
        first_extras = {k: v[:1] for k, v in extras.items()}
        if not torch.equal(context, first.expand_as(context)):
            return None
        if not all(torch.equal(v, first_extras[k].expand_as(v)) for k, v in extras.items()):
            return None
        for i, (known, known_extras) in enumerate(self._groups):
            if _same_tensor(known, first):
                if known_extras.keys() == first_extras.keys() and all(
                    torch.equal(known_extras[k], first_extras[k]) for k in known_extras
                ):
                    return i
        # copies: a view would keep this window's whole context batch alive for the rest of the evaluation
        self._groups.append((first.clone(), {k: v.clone() for k, v in first_extras.items()}))
        return len(self._groups) - 1

    def _window_residuals(
        self, group: int, x: torch.Tensor, t: torch.Tensor, call: WindowCall, branches_due: bool, fused: bool
    ) -> Residuals:
        """This window's residuals for one sharing group (the chain's merged ones when `fused`, else this
        ControlNet's unscaled ones): cached frames reused, the others computed."""
        context, extras = self._groups[group]
        missing = [i for i, frame in enumerate(call.frames) if (group, frame) not in self._cache]
        per_frame: dict[int, Residuals] = {}
        if missing:
            rows = torch.tensor(missing, device=x.device)
            fresh = self._fresh(
                x[rows],
                t[rows.to(t.device)],
                context.expand(len(missing), *context.shape[1:]),
                {k: v.expand(len(missing), *v.shape[1:]) for k, v in extras.items()},
                [call.frames[i] for i in missing],
                fused,
            )
            for n, i in enumerate(missing):
                per_frame[i] = _map(fresh, lambda v, n=n: v[n : n + 1])
        for i, frame in enumerate(call.frames):
            if i not in per_frame:
                per_frame[i] = _map(self._cache[group, frame], lambda v: v.to(x.device))
        self._keep(group, call, {call.frames[i]: per_frame[i] for i in missing}, branches_due, x.device)
        return _concat([per_frame[i] for i in range(len(call.frames))])

    def _next_window(self, call: WindowCall) -> None:
        """Start serving another window: drop what neither it nor a later window needs."""
        self._window, self._served = call.index, 0
        for key in [k for k in self._cache if call.last_use.get(k[1], -1) < call.index]:
            del self._cache[key]

    def _keep(
        self, group: int, call: WindowCall, computed: dict[int, Residuals], branches_due: bool, device: torch.device
    ) -> None:
        """Cache what later windows of this evaluation need and, while branches are due, this window's frames."""
        for frame, residuals in computed.items():
            if branches_due or call.last_use.get(frame, -1) > call.index:
                self._cache[group, frame] = _map(residuals, torch.clone)
        if not branches_due:
            for key in [k for k in self._cache if k[0] == group and call.last_use.get(k[1], -1) <= call.index]:
                del self._cache[key]  # this group's frames no later window needs (other groups may still be due)
        self._bound(call, device)

    def _bound(self, call: WindowCall, device: torch.device) -> None:
        """Keep the cache within `CACHE_BUDGET_BYTES`: move it to the offload device or, where that is the
        device it is on already (a CPU run, `--gpu-only`), drop the frames needed last; a later window that
        needs a dropped frame computes it again (the same residuals up to rounding, more ControlNet work)."""
        sizes = {key: sum(v.numel() * v.element_size() for v in _values(r)) for key, r in self._cache.items()}
        nbytes = sum(sizes.values())
        if nbytes <= CACHE_BUDGET_BYTES:
            return
        links = reversed(chain_of(self)) if self._fuses_chain() else [self]  # the merged cache is the chain's
        name = " and ".join(link.xdyna_name or "ControlNet" for link in links)
        target = self._spill_target(device)
        if target is not None:
            if not self._spilled:
                logger.info(
                    "X-Dyna: %s residuals kept between windows (%.0f MB) exceed %.0f MB; holding them on %s",
                    name,
                    nbytes / 2**20,
                    CACHE_BUDGET_BYTES / 2**20,
                    target,
                )
                self._spilled = True
            self._cache = {k: _map(r, lambda v: v.to(target)) for k, r in self._cache.items()}
            return
        if not self._dropping:
            logger.info(
                "X-Dyna: %s residuals kept between windows (%.0f MB) exceed %.0f MB and the offload device is the "
                "one they are computed on; recomputing frames past the budget in the windows that need them "
                "(more ControlNet work, the same output up to rounding)",
                name,
                nbytes / 2**20,
                CACHE_BUDGET_BYTES / 2**20,
            )
            self._dropping = True

        def next_use(key: tuple[int, int]) -> int:  # frames of this window (a CFG branch still due) come first
            return call.index if key[1] in call.frames else call.last_use.get(key[1], -1)

        for key in sorted(self._cache, key=lambda k: (next_use(k), k), reverse=True):
            if nbytes <= CACHE_BUDGET_BYTES:
                break
            nbytes -= sizes[key]
            del self._cache[key]

    def _spill_target(self, device: torch.device) -> torch.device | None:
        """The offload device, when it is not `device` (where the residuals are computed); else None."""
        offload = torch.device(self.control_model_wrapped.offload_device)
        if offload.type != device.type:
            return offload
        return None if offload.index is None or device.index is None or offload.index == device.index else offload

    def _evaluate(self, x, t, context, extras, frames) -> Residuals:
        """The ControlNet on these rows (unscaled residuals), as core's `get_control` computes them."""
        dtype = self._compute_dtype
        extra = self.extra_args.copy()
        for key, value in extras.items():
            extra[key] = comfy.model_base.convert_tensor(value, dtype, x.device)
        timestep = self.model_sampling_current.timestep(t)
        x_in = self.model_sampling_current.calculate_input(t, x)
        return self.control_model(
            x=x_in.to(dtype),
            hint=self._hints(frames, x, dtype),
            timesteps=timestep.to(dtype),
            context=comfy.model_management.cast_to_device(context, x.device, dtype),
            **extra,
        )

    def _hints(self, frames: Sequence[int], x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The hints of these frames, normalised, at the latent's size ×8, on the compute device.

        Fetched onto the compute device first (pose frames as uint8) and normalised there, so on a GPU the CPU
        only draws and cuts; the numbers are those of normalising on the CPU (elementwise IEEE arithmetic).
        """
        clip = self.hint_frames
        index = [0] * len(frames) if clip.num_frames == 1 else list(frames)
        height, width = x.shape[-2] * self.compression_ratio, x.shape[-1] * self.compression_ratio
        if (clip.height, clip.width) == (height, width):  # as the nodes make them: normalised and cast at once
            # (core's preprocess of the ControlNets the pack runs is the identity, so it may follow the cast)
            return self.preprocess_image(clip.prepared(index, x.device, dtype, self.hint_ranges))
        hint = clip.planar(index, x.device)
        if self.hint_ranges is not None:
            hint = normalise(hint, *self.hint_ranges)
        hint = comfy.utils.common_upscale(hint, width, height, self.upscale_algorithm, "center")
        hint = self.preprocess_image(hint)
        return hint.to(device=x.device, dtype=dtype)


class ImageLayoutHints(HintFrames):
    """The `[N, C, H, W]` hint tensor of a core ControlNet seen as HintFrames (no copy)."""

    def __init__(self, hint: torch.Tensor) -> None:
        self.inner = TensorHintFrames(hint.movedim(1, -1))

    num_frames = property(lambda self: self.inner.num_frames)
    height = property(lambda self: self.inner.height)
    width = property(lambda self: self.inner.width)
    channels = property(lambda self: self.inner.channels)

    def _frames(self, index: list[int]) -> torch.Tensor:
        return self.inner.frames(index)

    def _planar(self, index: list[int], device: torch.device) -> torch.Tensor:
        return self.inner.planar(index, device)


def residual_elements(control_model, latent_size: tuple[int, int]) -> int:
    """Elements of one frame's residuals from an SD ControlNet network at a latent size: each input block's zero
    convolution at that block's resolution (a downsampling block halves it, rounding up, as its stride-2
    convolution does) and the middle block's at the last."""
    height, width = latent_size
    total = 0
    for block, zero_conv in zip(control_model.input_blocks, control_model.zero_convs):
        if any(isinstance(m, openaimodel.Downsample) for m in block.modules()):
            height, width = -(-height // 2), -(-width // 2)
        total += _out_channels(zero_conv) * height * width
    return total + _out_channels(control_model.middle_block_out) * height * width


def _out_channels(zero_conv) -> int:
    return next(m for m in zero_conv.modules() if isinstance(m, torch.nn.Conv2d)).out_channels


def plan_residual_cache(conds: Mapping[str, list], latent_size: tuple[int, int], frames_kept: int) -> int:
    """Tell each ControlNet of a run what its residual cache may hold on the compute device between windows, so
    ComfyUI's memory manager plans for it (`inference_memory_requirements`); the total in bytes.

    `frames_kept` frames (`windows.frames_kept_between_windows`) for every sharing group: the distinct text
    contexts among the condition entries that run the chain (one for the released empty prompt, two when the
    branches differ). A fused chain keeps one merged set per frame at its head; an unfused one a set per X-Dyna
    link, down to one that fuses the links below it. Each cache stays within `CACHE_BUDGET_BYTES` (past it, the
    rest moves to the offload device or is recomputed).
    """
    contexts: dict[int, list] = {}
    caching: dict[int, XDynaControlNet] = {}
    for cond_list in conds.values():
        for cond in cond_list or []:
            if not isinstance(cond, dict):
                continue
            for link in _caching_links(chain_of(cond.get("control"))):
                caching[id(link)] = link
                contexts.setdefault(id(link), []).append(cond.get("crossattn_controlnet", cond.get("cross_attn")))
    for control in controls_in(conds.values()):
        if isinstance(control, XDynaControlNet):
            control.planned_cache_bytes = 0
    total = 0
    for key, link in caching.items():
        planned = _distinct(contexts[key]) * frames_kept * link.residual_bytes(latent_size)
        link.planned_cache_bytes = min(planned, CACHE_BUDGET_BYTES)
        total += link.planned_cache_bytes
    return total


def _caching_links(chain: list):
    """The X-Dyna links of a chain (head first) that keep residuals: each unfused one, and the first that fuses
    (it computes the rest of the chain itself, so the links below it keep nothing)."""
    for link in chain:
        if isinstance(link, XDynaControlNet):
            yield link
            if link._fuses_chain():
                return


def _distinct(contexts: list) -> int:
    """How many different text contexts (an entry without a tensor counts as its own)."""
    kept: list[torch.Tensor] = []
    others = 0
    for context in contexts:
        if not isinstance(context, torch.Tensor):
            others += 1
        elif not any(_same_tensor(k, context) for k in kept):
            kept.append(context)
    return len(kept) + others


def _same_tensor(known: torch.Tensor, other: torch.Tensor) -> bool:
    """Equal shapes and values, wherever `other` lives."""
    return known.shape == other.shape and torch.equal(known, other.to(known.device))


def adopt_controls(conds: Mapping[str, list]) -> None:
    """Run the core ControlNets of a sampling run's conditioning as XDynaControlNets (same numbers, less work).

    `conds` are the run's own copies of the condition dicts, so the user's conditioning is unchanged: a chain
    that holds core ControlNets is rebuilt from new links (X-Dyna ones above them copied), and the user's
    ControlNet objects keep their own chains. A chain is adopted only whole; one that holds another kind of
    control (T2I adapter, ControlLoRA) stays as it is, and so does one of X-Dyna ControlNets only.
    """
    adopted: dict[int, object] = {}

    def adopt(control):
        if control is None:
            return None
        if id(control) in adopted:
            return adopted[id(control)]
        chain = chain_of(control)
        if all(isinstance(c, XDynaControlNet) for c in chain) or not all(map(_adoptable, chain)):
            adopted[id(control)] = control
            return control
        if isinstance(control, XDynaControlNet):  # a copy, so that the user's keeps its own chain
            new = control.copy()
        else:
            new = XDynaControlNet.adopt(control, ImageLayoutHints(control.cond_hint_original))
        adopted[id(control)] = new  # before the walk down, so a chain that loops back ends at its own head
        new.previous_controlnet = adopt(control.previous_controlnet)
        return new

    for cond_list in conds.values():
        for cond in cond_list or []:
            if isinstance(cond, dict) and cond.get("control") is not None:
                cond["control"] = adopt(cond["control"])


def _adoptable(control) -> bool:
    """An X-Dyna ControlNet, or a core one that can run as one (an image-hint SD1.5-style ControlNet)."""
    if isinstance(control, XDynaControlNet):
        return True
    if not can_adopt(control):  # first: other packs' controls need not have core's attributes
        return False
    hint = control.cond_hint_original
    return isinstance(hint, torch.Tensor) and hint.ndim == 4


# --- checks, once per node call or run --------------------------------------------------------------------


class FrameCountError(ValueError):
    """A per-frame input whose frame count disagrees with the video's."""


class HintSizeError(ValueError):
    """A ControlNet hint whose image size is not the video's."""


class ControlNetMismatchError(ValueError):
    """A ControlNet built for another UNet than the one it steers."""


def chain_of(control) -> list:
    """A control and the ones chained before it (`previous_controlnet`), head first; each once, also when a
    chain loops back on itself."""
    chain: list = []
    while control is not None and all(control is not c for c in chain):
        chain.append(control)
        control = getattr(control, "previous_controlnet", None)
    return chain


def _chains(conds):
    """Per condition entry, the distinct ControlNets of its chain (head first)."""
    for cond_list in conds:
        for cond in cond_list or []:
            yield chain_of(cond.get("control") if isinstance(cond, dict) else None)


def controls_in(conds) -> list:
    """Every distinct ControlNet object reachable from the conditioning (chains included)."""
    found: dict[int, object] = {}
    for chain in _chains(conds):
        for control in chain:
            found.setdefault(id(control), control)
    return list(found.values())


def _hint_of(control) -> torch.Tensor | None:
    """A core ControlNet's whole-clip hint tensor `[N, C, H, W]` (None for hints held as HintFrames)."""
    hint = getattr(control, "cond_hint_original", None)
    return hint if isinstance(hint, torch.Tensor) and hint.ndim >= 1 else None


def _hint_shape(control) -> tuple[int, ...] | None:
    shape = getattr(control, "hint_shape", None)
    if shape is not None:
        return tuple(shape)
    hint = _hint_of(control)
    return None if hint is None else tuple(hint.shape)


def check_controls(conds, frames: int, latent_size: tuple[int, int], unet) -> None:
    """Every ControlNet in the conditioning fits the video and the UNet; checked once, before a run starts.

    A hint is one image for all frames or one per frame (core would silently cycle other counts), at the
    video's size (core would silently resize it), and the ControlNet has the UNet's widths (core would drop its
    residuals with a log line and sample without guidance).
    """
    height, width = latent_size[0] * 8, latent_size[1] * 8
    for control in controls_in(conds):
        name = getattr(control, "xdyna_name", None) or type(control).__name__
        check_control_width(control, unet, name)
        shape = _hint_shape(control)
        if shape is None:
            continue
        if shape[0] not in (1, frames):
            raise FrameCountError(
                f"the {name} hint has {shape[0]} frames but the video has {frames}; give one hint frame per "
                f"video frame (or a single image for all frames), or set the frame count to {shape[0]}"
            )
        if len(shape) >= 3 and tuple(shape[-2:]) != (height, width):
            raise HintSizeError(
                f"the {name} hint is {shape[-1]}x{shape[-2]} pixels but the video is {width}x{height} "
                f"(the size of its latent, which X-Dyna Temporal Sampler takes from the reference); prepare the "
                f"reference and render the pose/face hints at one generation size"
            )


def _widths(module) -> tuple[int, ...] | None:
    channels, mult = getattr(module, "model_channels", None), getattr(module, "channel_mult", None)
    if not isinstance(channels, int) or mult is None:
        return None
    return tuple(channels * m for m in mult)


def check_control_width(control, unet, name: str) -> None:
    """A ControlNet's block widths must be the UNet's (an SD1.5 ControlNet for the SD1.5-sized X-Dyna UNet)."""
    theirs, ours = _widths(getattr(control, "control_model", None)), _widths(unet)
    if theirs is not None and ours is not None and theirs != ours:
        raise ControlNetMismatchError(
            f"the {name} has block widths {'/'.join(map(str, theirs))} but the X-Dyna UNet has "
            f"{'/'.join(map(str, ours))}: it was made for another model; load X-Dyna's own ControlNet "
            f"(controlnet-checkpoint-epoch-5.ckpt for pose, controlnet-face-checkpoint-epoch-2.ckpt for S-Face)"
        )


def check_controlnet(control_net, name: str, hint_channels: int) -> None:
    """Pose ControlNets take a 3-channel hint and S-Face ControlNets a 6-channel one; say so when they do not."""
    model = getattr(control_net, "control_model", None)
    hint_block = getattr(model, "input_hint_block", None)
    if hint_block is None:
        raise ValueError(
            f"the {name} is a {type(control_net).__name__}, not an SD1.5 ControlNet; load X-Dyna's "
            f"{'controlnet-checkpoint-epoch-5.ckpt' if hint_channels == 3 else 'controlnet-face-checkpoint-epoch-2.ckpt'}"
            f" with Load ControlNet Model"
        )
    found = hint_block[0].weight.shape[1]
    if found != hint_channels:
        other = "S-Face (6-channel)" if found == 6 else f"{found}-channel"
        raise ValueError(
            f"the {name} takes {found}-channel hints but needs {hint_channels}: it looks like a {other} "
            f"ControlNet; connect the pose ControlNet to pose_controlnet and the S-Face one to face_controlnet"
        )
