"""Context windows on a ComfyUI ModelPatcher: videos of any length in the memory of one window (docs/xdyna_model.md §4).

A keyed CALC_COND_BATCH wrapper evaluates each step's windows one after another (slicing the latents, the
per-frame timesteps and every ControlNet's hint to the window's frames), and averages each frame's
predictions over the windows that covered it; CFG and the sampler step then run on the averaged result, as
released. A keyed SAMPLER_SAMPLE wrapper reads the run's seed and sigmas, so the per-step window offsets come
from the seed (the release draws them from an unseeded global RNG).

Core ComfyUI's ControlNet gives every window the hints of the video's first frames and silently cycles hint
batches of another length; here each window gets its own frames' hints, for our ControlNets and for any core
ControlNet found in the conditioning, and a hint whose frame count differs from the video is an error.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass

import comfy.patcher_extension
import torch
from comfy import model_management

from ..xdyna_core.windows import (
    DEFAULT_OVERLAP,
    DEFAULT_WINDOW_LENGTH,
    ContextWindow,
    WindowAverage,
    context_windows,
    frames_kept_between_windows,
    validate_window_options,
    window_offsets,
)
from .controlnets import (
    WINDOW_CALL,
    WindowCall,
    _hint_of,
    control_uses,
    controls_in,
    last_uses,
    new_evaluation_id,
    plan_residual_cache,
)
from .runtime import release_freed_host_memory

KEY = "xdyna"
logger = logging.getLogger("xdyna")


RUN_STATE = "xdyna_run"  # transformer_options key of the run in progress (its sigmas and window offsets)


@dataclass(frozen=True)
class RunState:
    """What one sampling run's windows need: its sigmas (to know the step) and the per-step tiling offsets."""

    sigmas: torch.Tensor
    offsets: list[int]

    def offset_for(self, timestep: torch.Tensor) -> int:
        step = int((self.sigmas.to(timestep.device, torch.float32) - timestep.flatten()[0].float()).abs().argmin())
        return self.offsets[min(step, len(self.offsets) - 1)]


@dataclass(frozen=True)
class ContextOptions:
    """How a patched MODEL tiles videos into windows; its bound methods are the registered wrappers.

    It holds settings only: what one run needs is kept in that run's own `model_options`, so copies of a
    model sampled at once (one per device, or one per thread) never share it.

    Args:
        length: frames per window (16 as released, at most 24).
        overlap: frames shared by neighbouring windows (4).
        schedule: `uniform_closed_loop` (as released: the tiling wraps round and shifts by a per-step offset
            drawn from the seed) or `static`.
        seed: the seed of the offsets; None takes the sampler's seed.
    """

    length: int = DEFAULT_WINDOW_LENGTH
    overlap: int = DEFAULT_OVERLAP
    schedule: str = "uniform_closed_loop"
    seed: int | None = None

    def __post_init__(self) -> None:
        validate_window_options(max(self.length, 1), self.length, self.overlap)

    def __deepcopy__(self, memo):  # older ComfyUI deep-copies model_options on clone()
        return self

    # PREPARE_SAMPLING: what ComfyUI's memory manager plans for ------------------------------------------

    def prepare_sampling_wrapper(self, executor, model, noise_shape, conds, *args, **kwargs):
        """Tell the memory manager the size of one UNet call (a window plus the reference frame, not the clip)
        and what the ControlNets keep between windows (their residual caches, sized from the window plan)."""
        model_options = kwargs.get("model_options", args[0] if args else None) or {}
        kept = 0
        if len(noise_shape) == 4 and model_options.get("context_handler") is None:  # core's windows share nothing
            kept = frames_kept_between_windows(noise_shape[0], self.schedule, self.length, self.overlap)
        planned = plan_residual_cache(conds, tuple(noise_shape[-2:]), kept)
        if planned:
            logger.debug("X-Dyna: planning %.0f MB for ControlNet residuals kept between windows", planned / 2**20)
        return executor(model, window_noise_shape(noise_shape, self.length), conds, *args, **kwargs)

    # SAMPLER_SAMPLE: one sampling run --------------------------------------------------------------------

    def sampler_sample_wrapper(self, executor, guider, sigmas, extra_args, callback, noise, *args, **kwargs):
        seed = self.seed if self.seed is not None else extra_args.get("seed") or 0
        state = RunState(sigmas.detach().cpu(), window_offsets(int(seed), max(len(sigmas) - 1, 1), self.length))
        # this run's own copy of the model options (ComfyUI clones them per run); the model's stay untouched
        extra_args["model_options"].setdefault("transformer_options", {})[RUN_STATE] = state
        return executor(guider, sigmas, extra_args, callback, noise, *args, **kwargs)

    # CALC_COND_BATCH: one model evaluation of the whole video ----------------------------------------------

    def calc_cond_batch_wrapper(self, executor, model, conds, x_in, timestep, model_options):
        frames = x_in.shape[0]
        transformer_options = model_options.setdefault("transformer_options", {})
        evaluation, uses = new_evaluation_id(), control_uses(conds)
        core_frames = core_window_frames(transformer_options.get("context_window"))
        try:
            if core_frames is not None and len(core_frames) == frames:
                # core's Context Windows node tiles this model already: x_in is one of its windows
                total = transformer_options["context_window"].total_frames
                _start_window(x_in)
                transformer_options[WINDOW_CALL] = WindowCall(evaluation, core_frames, uses=uses)
                with hints_for_window(conds, ContextWindow(core_frames), total):
                    return executor(model, conds, x_in, timestep, model_options)
            run = transformer_options.get(RUN_STATE)
            offset = run.offset_for(timestep) if run is not None else 0
            windows = context_windows(frames, self.schedule, self.length, self.overlap, offset)
            if len(windows) == 1 and windows[0].frames == tuple(range(frames)):
                transformer_options[WINDOW_CALL] = WindowCall(evaluation, windows[0].frames, uses=uses)
                return executor(model, conds, x_in, timestep, model_options)
            plan = last_uses([w.frames for w in windows])
            fused = WindowAverage(frames, len(conds))
            for i, window in enumerate(windows):
                model_management.throw_exception_if_processing_interrupted()
                _start_window(x_in)
                index = window.index(x_in.device)
                transformer_options[WINDOW_CALL] = WindowCall(evaluation, window.frames, i, plan, uses)
                with hints_for_window(conds, window, frames):
                    outputs = executor(model, conds, x_in[index], _frames_of(timestep, index, frames), model_options)
                fused.add(window, outputs)
            return fused.average()
        finally:
            transformer_options.pop(WINDOW_CALL, None)

    def apply_to(self, model) -> None:
        """Register the wrappers on `model` (a clone) under the key "xdyna", replacing earlier ones."""
        wrappers = comfy.patcher_extension.WrappersMP
        for kind, wrapper in (
            (wrappers.PREPARE_SAMPLING, self.prepare_sampling_wrapper),
            (wrappers.SAMPLER_SAMPLE, self.sampler_sample_wrapper),
            (wrappers.CALC_COND_BATCH, self.calc_cond_batch_wrapper),
        ):
            model.remove_wrappers_with_key(kind, KEY)
            model.add_wrapper_with_key(kind, KEY, wrapper)


def _start_window(x_in: torch.Tensor) -> None:
    """Before a window of a CPU run: return the heap pages the last window freed (the clip's latents, held
    throughout, share the C heap with the windows' temporaries and keep freed ones resident otherwise)."""
    if x_in.device.type == "cpu":
        release_freed_host_memory()


def core_window_frames(window) -> tuple[int, ...] | None:
    """The video frames in one window of core's Context Windows handler, in the order it slices them."""
    frames = getattr(window, "index_list", None)
    if frames is None:
        return None
    anchor = getattr(window, "causal_anchor_index", None)  # core's causal fix prepends the frame before the window
    return (anchor, *frames) if anchor is not None and anchor >= 0 else tuple(frames)


def window_noise_shape(noise_shape, length: int) -> list[int]:
    """The latent shape of one X-Dyna UNet call per CFG branch: at most `length` frames, plus the reference."""
    shape = list(noise_shape)
    if len(shape) == 4:
        shape[0] = min(shape[0], length) + 1
    return shape


def _frames_of(timestep: torch.Tensor, index: torch.Tensor, frames: int) -> torch.Tensor:
    if timestep.ndim > 0 and timestep.shape[0] == frames:
        return timestep[index.to(timestep.device)]
    return timestep


# --- ControlNet hints per window --------------------------------------------------------------------------------


@contextmanager
def hints_for_window(conds, window: ContextWindow, frames: int):
    """Give every per-frame ControlNet hint only this window's frames while the window is evaluated."""
    swapped = []
    for control in controls_in(conds):
        hint = _hint_of(control)
        if hint is not None and hint.shape[0] == frames and frames > 1:
            swapped.append((control, hint))
            control.cond_hint_original = hint[window.index(hint.device)]
            control.cond_hint = None  # core caches the resized hint; make it redo it for these frames
    try:
        yield
    finally:
        for control, hint in swapped:
            control.cond_hint_original = hint
            control.cond_hint = None
