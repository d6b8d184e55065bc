"""Context windows on a ComfyUI ModelPatcher: videos of any length in the memory of one window (spec §4).

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

from contextlib import contextmanager
from dataclasses import dataclass, field

import comfy.patcher_extension
import torch
from comfy import model_management

from ..xdyna_core.windows import (
    DEFAULT_OVERLAP,
    DEFAULT_WINDOW_LENGTH,
    ContextWindow,
    context_windows,
    validate_window_options,
    window_offsets,
)

KEY = "xdyna"


class FrameCountError(ValueError):
    """A per-frame input whose frame count disagrees with the video's."""


@dataclass
class ContextOptions:
    """How a patched MODEL tiles videos into windows; its bound methods are the registered wrappers.

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
    _run: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        validate_window_options(max(self.length, 1), self.length, self.overlap)

    def __deepcopy__(self, memo):  # older ComfyUI deep-copies model_options on clone()
        return self

    # SAMPLER_SAMPLE: one sampling run --------------------------------------------------------------------

    def sampler_sample_wrapper(self, executor, guider, sigmas, extra_args, callback, noise, *args, **kwargs):
        seed = self.seed if self.seed is not None else extra_args.get("seed") or 0
        previous = dict(self._run)
        self._run.update(
            sigmas=sigmas.detach().cpu(), offsets=window_offsets(int(seed), max(len(sigmas) - 1, 1), self.length)
        )
        try:
            return executor(guider, sigmas, extra_args, callback, noise, *args, **kwargs)
        finally:
            self._run.clear()
            self._run.update(previous)

    def offset_for(self, timestep: torch.Tensor, model_options: dict) -> int:
        sigmas = self._run.get("sigmas")
        if sigmas is None:
            sigmas = model_options.get("transformer_options", {}).get("sample_sigmas")
        offsets = self._run.get("offsets")
        if sigmas is None or offsets is None:
            return 0
        step = int((sigmas.to(timestep.device, torch.float32) - timestep.flatten()[0].float()).abs().argmin())
        return offsets[min(step, len(offsets) - 1)]

    # CALC_COND_BATCH: one model evaluation of the whole video ----------------------------------------------

    def calc_cond_batch_wrapper(self, executor, model, conds, x_in, timestep, model_options):
        frames = x_in.shape[0]
        check_hint_frames(conds, frames)
        windows = context_windows(
            frames, self.schedule, self.length, self.overlap, self.offset_for(timestep, model_options)
        )
        if len(windows) == 1 and windows[0].frames == tuple(range(frames)):
            return executor(model, conds, x_in, timestep, model_options)
        sums: list[torch.Tensor | None] = [None] * len(conds)
        counts = torch.zeros(frames, device=x_in.device, dtype=x_in.dtype)
        for window in windows:
            model_management.throw_exception_if_processing_interrupted()
            index = window.index(x_in.device)
            with hints_for_window(conds, window, frames):
                outputs = executor(model, conds, x_in[index], _frames_of(timestep, index, frames), model_options)
            for i, out in enumerate(outputs):
                if sums[i] is None:
                    sums[i] = torch.zeros((frames, *out.shape[1:]), device=out.device, dtype=out.dtype)
                sums[i].index_add_(0, index.to(out.device), out)
            counts.index_add_(0, index, torch.ones(len(window), device=x_in.device, dtype=x_in.dtype))
        shape = (frames,) + (1,) * (x_in.ndim - 1)
        return [s / counts.to(s.device, s.dtype).reshape(shape) for s in sums]

    def apply_to(self, model) -> None:
        """Register the wrappers on `model` (a clone) under the key "xdyna", replacing earlier ones."""
        wrappers = comfy.patcher_extension.WrappersMP
        model.remove_wrappers_with_key(wrappers.CALC_COND_BATCH, KEY)
        model.remove_wrappers_with_key(wrappers.SAMPLER_SAMPLE, KEY)
        model.add_wrapper_with_key(wrappers.CALC_COND_BATCH, KEY, self.calc_cond_batch_wrapper)
        model.add_wrapper_with_key(wrappers.SAMPLER_SAMPLE, KEY, self.sampler_sample_wrapper)


def _frames_of(timestep: torch.Tensor, index: torch.Tensor, frames: int) -> torch.Tensor:
    if timestep.ndim > 0 and timestep.shape[0] == frames:
        return timestep[index.to(timestep.device)]
    return timestep


# --- ControlNet hints per window --------------------------------------------------------------------------------


def controls_in(conds) -> list:
    """Every distinct ControlNet object reachable from the conditioning (chains included)."""
    found, seen = [], set()
    for cond_list in conds:
        for cond in cond_list or []:
            control = cond.get("control") if isinstance(cond, dict) else None
            while control is not None and id(control) not in seen:
                seen.add(id(control))
                found.append(control)
                control = getattr(control, "previous_controlnet", None)
    return found


def _hint_of(control) -> torch.Tensor | None:
    hint = getattr(control, "cond_hint_original", None)
    return hint if isinstance(hint, torch.Tensor) and hint.ndim >= 1 else None


def check_hint_frames(conds, frames: int) -> None:
    """A ControlNet hint is one image for all frames, or one per frame: anything else is an error, not a cycle."""
    for control in controls_in(conds):
        hint = _hint_of(control)
        if hint is not None and hint.shape[0] not in (1, frames):
            name = getattr(control, "xdyna_name", None) or type(control).__name__
            raise FrameCountError(
                f"the {name} hint has {hint.shape[0]} frames but the video has {frames}; give one hint frame per "
                f"video frame (or a single image for all frames), or set the frame count to {hint.shape[0]}"
            )


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
