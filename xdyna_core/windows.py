"""Context windows: how a video longer than the motion modules' reach is sampled (docs/xdyna_model.md §4).

Each denoising step evaluates the UNet on windows of `length` frames (16 as released) that overlap by `overlap`
frames (4), and every frame's prediction is the plain average over the windows that covered it. Two schedules:

- `uniform_closed_loop`, as released: window starts 0, stride, 2·stride, … while the start is below N, each
  window `[(e + offset) mod N for e in start … start + length − 1]`, so the last windows wrap round to the first
  frames and the clip is treated as a loop. The whole tiling is shifted by an offset drawn anew every step from
  [0, length − 1]. N ≤ length gives one window of all frames in order and the offset is unused.
- `static`: the same stride, no offset and no wrap: starts 0, stride, … below N − length, then one last window
  aligned to the end (`[N − length, N)`), which may overlap its neighbour by more than `overlap`.

The released code is AnimateDiff's `uniform` context schedule called with step 0 every step, so its
ordered-halving shift is always 0 and its `context_stride` 1 leaves one dilation level; the per-step variety
comes only from the offset. It draws that offset from Python's unseeded global `random`, so runs cannot be
repeated: ours come from the seed through a generator of their own (`window_offsets`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from .seeds import torch_seed

MAX_WINDOW_LENGTH = 24  # the motion modules' sinusoidal position encoding covers 24 frames (pos_encoder.pe)
DEFAULT_WINDOW_LENGTH = 16
DEFAULT_OVERLAP = 4

ContextSchedule = Literal["uniform_closed_loop", "static"]
CONTEXT_SCHEDULES: tuple[str, ...] = ("uniform_closed_loop", "static")

# XORed into the user's seed so the offsets are a stream of their own, apart from the initial noise that
# ComfyUI draws from `manual_seed(seed)` and from the blur mask (`latents.mask_generator`).
_OFFSET_STREAM = 0x6F66_6673_6574_7321


@dataclass(frozen=True)
class ContextWindow:
    """The frames (indices into the video, in the order the UNet sees them) that one UNet call denoises."""

    frames: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self) -> Iterator[int]:
        return iter(self.frames)

    def index(self, device: torch.device | str | None = None) -> torch.Tensor:
        """The frame indices as a long tensor, for `index_select` / `index_add_`."""
        return torch.tensor(self.frames, dtype=torch.long, device=device)


def validate_window_options(num_frames: int, length: int, overlap: int) -> None:
    """Raise a ValueError naming the bad value, the limit and the fix; return None when the options are usable."""
    if num_frames < 1:
        raise ValueError(f"the video must have at least 1 frame, got {num_frames}; give a frame count of 1 or more")
    if length < 1:
        raise ValueError(f"the window length must be at least 1 frame, got {length}")
    if length > MAX_WINDOW_LENGTH:
        raise ValueError(
            f"a window of {length} frames is longer than the {MAX_WINDOW_LENGTH} frames the motion modules' "
            f"position encoding covers; use a window length of {MAX_WINDOW_LENGTH} or less (16 as released)"
        )
    if overlap < 0:
        raise ValueError(f"the window overlap cannot be negative, got {overlap}; use 0 or more (4 as released)")
    if overlap >= length:
        raise ValueError(
            f"an overlap of {overlap} frames leaves no stride in windows of {length} frames; "
            f"use an overlap below the window length (4 with 16 as released)"
        )


def uniform_closed_loop(
    num_frames: int,
    length: int = DEFAULT_WINDOW_LENGTH,
    overlap: int = DEFAULT_OVERLAP,
    offset: int = 0,
) -> list[ContextWindow]:
    """The released schedule for one step: a closed-loop tiling with stride `length − overlap`, shifted by `offset`.

    Every window holds exactly `min(length, N)` distinct frames: for N > length the mod-N indices of one window
    cannot repeat, so nothing needs de-duplicating, and the windows that run past the end wrap to the start.
    """
    validate_window_options(num_frames, length, overlap)
    if offset < 0:
        raise ValueError(f"the window offset cannot be negative, got {offset}")
    if num_frames <= length:
        return [ContextWindow(tuple(range(num_frames)))]
    stride = length - overlap
    return [
        ContextWindow(tuple((e + offset) % num_frames for e in range(start, start + length)))
        for start in range(0, num_frames, stride)
    ]


def static_windows(
    num_frames: int,
    length: int = DEFAULT_WINDOW_LENGTH,
    overlap: int = DEFAULT_OVERLAP,
) -> list[ContextWindow]:
    """Fixed windows with stride `length − overlap`, no offset, no wrap; the last window ends on the last frame."""
    validate_window_options(num_frames, length, overlap)
    if num_frames <= length:
        return [ContextWindow(tuple(range(num_frames)))]
    starts = [*range(0, num_frames - length, length - overlap), num_frames - length]
    return [ContextWindow(tuple(range(start, start + length))) for start in starts]


def context_windows(
    num_frames: int,
    schedule: ContextSchedule = "uniform_closed_loop",
    length: int = DEFAULT_WINDOW_LENGTH,
    overlap: int = DEFAULT_OVERLAP,
    offset: int = 0,
) -> list[ContextWindow]:
    """The windows of one step for the named schedule (`static` ignores `offset`)."""
    if schedule == "uniform_closed_loop":
        return uniform_closed_loop(num_frames, length, overlap, offset)
    if schedule == "static":
        return static_windows(num_frames, length, overlap)
    raise ValueError(f"unknown context schedule {schedule!r}; choose one of {CONTEXT_SCHEDULES}")


def frames_kept_between_windows(
    num_frames: int,
    schedule: ContextSchedule = "uniform_closed_loop",
    length: int = DEFAULT_WINDOW_LENGTH,
    overlap: int = DEFAULT_OVERLAP,
) -> int:
    """The most frames whose per-frame results one step must keep while a window is evaluated: those an earlier
    (or this) window has seen and a later window needs again, at the worst offset the schedule can draw.

    A frame's ControlNet residuals are computed by the first window that covers it and reused by the later ones;
    while window i runs, the frames with first window ≤ i < last window are kept for later. 0 for one window.
    """
    most = 0
    for offset in range(length) if schedule == "uniform_closed_loop" else (0,):
        windows = context_windows(num_frames, schedule, length, overlap, offset)
        first: dict[int, int] = {}
        last: dict[int, int] = {}
        for i, window in enumerate(windows):
            for frame in window.frames:
                first.setdefault(frame, i)
                last[frame] = i
        change = [0] * (len(windows) + 1)  # kept from window first[f] up to (not including) window last[f]
        for frame, start in first.items():
            change[start] += 1
            change[last[frame]] -= 1
        kept = 0
        for delta in change:
            kept += delta
            most = max(most, kept)
    return most


def window_offsets(seed: int, steps: int, length: int = DEFAULT_WINDOW_LENGTH) -> list[int]:
    """One tiling offset per step, uniform in [0, length − 1] as released, drawn from a generator seeded by `seed`
    (0 to 2**64 - 1, read as `seeds.torch_seed`).

    The released code draws `randint(0, length − 1)` every step (even when N ≤ length and the offset goes
    unused); so do we, so that the offsets of a run do not depend on the video's length.
    """
    if steps < 0:
        raise ValueError(f"the number of steps cannot be negative, got {steps}")
    if length < 1:
        raise ValueError(f"the window length must be at least 1 frame, got {length}")
    generator = torch.Generator(device="cpu").manual_seed(torch_seed(seed) ^ _OFFSET_STREAM)
    # One draw per step, so a run's first k offsets do not depend on how many steps follow.
    return [int(torch.randint(0, length, (1,), generator=generator)) for _ in range(steps)]


def window_coverage(windows: Sequence[ContextWindow], num_frames: int) -> torch.Tensor:
    """How many windows cover each frame: a long tensor of `num_frames` counts."""
    counts = torch.zeros(num_frames, dtype=torch.long)
    for window in windows:
        if window.frames and not 0 <= min(window.frames) <= max(window.frames) < num_frames:
            raise ValueError(f"window {window.frames} reaches outside a video of {num_frames} frames")
        counts.index_add_(0, window.index(), torch.ones(len(window), dtype=torch.long))
    return counts


class WindowAverage:
    """Each frame's prediction averaged over the windows that covered it, accumulated one window at a time.

    Predictions are added in window order and divided by each frame's count at the end: a plain count-weighted
    average, as released (the same for the eps or x0 of each CFG branch). Only the running sums are held, never
    every window's output.

    Args:
        num_frames: frames of the whole video.
        outputs: how many predictions each window gives (one per conditioning of the batch).
    """

    def __init__(self, num_frames: int, outputs: int) -> None:
        self.num_frames = num_frames
        self.sums: list[torch.Tensor | None] = [None] * outputs
        self.counts = torch.zeros(num_frames, dtype=torch.long)

    def add(self, window: ContextWindow, predictions: Sequence[torch.Tensor]) -> None:
        """Add one window's predictions (`[len(window), ...]` each, in the window's frame order)."""
        if len(predictions) != len(self.sums):
            raise ValueError(f"a window gave {len(predictions)} predictions, expected {len(self.sums)}")
        if window.frames and not 0 <= min(window.frames) <= max(window.frames) < self.num_frames:
            raise ValueError(f"window {window.frames} reaches outside a video of {self.num_frames} frames")
        for i, prediction in enumerate(predictions):
            if prediction.shape[0] != len(window):
                raise ValueError(f"a prediction of {prediction.shape[0]} frames does not fit a window of {len(window)}")
            if self.sums[i] is None:
                self.sums[i] = prediction.new_zeros((self.num_frames, *prediction.shape[1:]))
            self.sums[i].index_add_(0, window.index(prediction.device), prediction.to(self.sums[i].dtype))
        self.counts.index_add_(0, window.index(), torch.ones(len(window), dtype=torch.long))

    def average(self) -> list[torch.Tensor]:
        missing = (self.counts == 0).nonzero().flatten().tolist()
        if missing:
            raise ValueError(f"frames {missing} are covered by no window; every frame needs at least one")
        averaged = []
        for total in self.sums:
            view = (self.num_frames,) + (1,) * (total.ndim - 1)
            averaged.append(total.div_(self.counts.to(device=total.device, dtype=total.dtype).reshape(view)))
        self.sums = [None] * len(self.sums)  # divided in place (no second clip-sized copy): the sums are spent
        return averaged
