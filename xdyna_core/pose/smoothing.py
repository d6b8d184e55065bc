"""Temporal smoothing of keypoint tracks with the One Euro filter (Casiez, Roussel & Vogel, CHI 2012).

Two ways to run it:

- `one_euro`: causal, sample by sample, as the filter was designed (for live input). It lags: at 8 fps and
  the node's defaults about one frame behind fast motion.
- `zero_lag` (the default for whole clips): forward, then backward over the forward result, like a
  zero-phase `filtfilt`. The backward pass runs the same delay in reverse, so a steady motion comes out
  where it is, not behind it; jitter is filtered twice. Each run of samples without a gap is padded at the
  clip's ends by its point reflection (`2·x[0] − x[k]`), so a motion that starts or ends in mid-stride is
  extended as a straight continuation and the filters' start-up does not bend the first and last frames.

A first-order low-pass filter whose cutoff rises with the signal's speed: slow motion (where jitter shows)
is smoothed strongly, fast motion passes with little lag. Per sample, with sampling rate `f`:

    α(fc)  = r / (r + 1),  r = 2π·fc / f
    ẋ      = (x − x̂_prev) · f,   ẋ̂ = α(d_cutoff)·ẋ + (1 − α(d_cutoff))·ẋ̂_prev
    fc     = min_cutoff + beta·|ẋ̂|
    x̂      = α(fc)·x + (1 − α(fc))·x̂_prev

The first sample passes unchanged (ẋ̂ = 0). Missing samples (NaN) stay missing and restart the filter of
that coordinate, so a joint that reappears is not dragged from where it was lost.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from .keypoints import PersonPose, PoseFrame

SmoothingMethod = Literal["zero_lag", "one_euro"]
SMOOTHING_METHODS: tuple[str, ...] = ("zero_lag", "one_euro")
# Reflected samples put before and after the clip for the zero-lag filter, in time constants of the slowest
# (min_cutoff) filter: the start-up transient decays to e^-6 (0.25 %) of the lag before the clip begins.
PAD_TIME_CONSTANTS = 6.0


def smoothing_factor(cutoff: np.ndarray | float, frequency: float) -> np.ndarray | float:
    """α of an exponential smoother equivalent to a first-order low-pass at `cutoff` Hz."""
    r = 2.0 * math.pi * np.asarray(cutoff, dtype=np.float64) / frequency
    return r / (r + 1.0)


class OneEuroFilter:
    """One Euro filter over arrays of any shape (each element filtered independently).

    Args:
        frequency: samples per second (the video's frame rate).
        min_cutoff: cutoff in Hz at zero speed; lower smooths more.
        beta: how fast the cutoff rises with speed (per unit of the signal per second); higher lags less.
        d_cutoff: cutoff in Hz for the speed estimate.
    """

    def __init__(self, frequency: float, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0):
        if frequency <= 0 or min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError(
                f"One Euro needs frequency, min_cutoff, d_cutoff > 0 and beta ≥ 0, got {frequency}, {min_cutoff}, "
                f"{d_cutoff}, {beta}"
            )
        self.frequency, self.min_cutoff, self.beta, self.d_cutoff = frequency, min_cutoff, beta, d_cutoff
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    def reset(self) -> None:
        self._x = self._dx = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        valid = np.isfinite(x)
        if self._x is None or self._x.shape != x.shape:
            self._x, self._dx = np.full(x.shape, np.nan), np.zeros(x.shape)
        fresh = valid & ~np.isfinite(self._x)  # first sample, or first after a gap: passes unchanged
        dx = np.where(valid & ~fresh, (x - np.nan_to_num(self._x)) * self.frequency, 0.0)
        dx_hat = (
            smoothing_factor(self.d_cutoff, self.frequency) * dx
            + (1.0 - smoothing_factor(self.d_cutoff, self.frequency)) * self._dx
        )
        alpha = smoothing_factor(self.min_cutoff + self.beta * np.abs(dx_hat), self.frequency)
        x_hat = alpha * x + (1.0 - alpha) * np.nan_to_num(self._x)
        out = np.where(fresh, x, x_hat)
        out = np.where(valid, out, np.nan)
        self._x = out
        self._dx = np.where(valid & ~fresh, dx_hat, 0.0)
        return out


def smooth_tracks(
    tracks: np.ndarray,
    frequency: float,
    min_cutoff: float = 1.0,
    beta: float = 0.0,
    d_cutoff: float = 1.0,
    method: SmoothingMethod = "one_euro",
) -> np.ndarray:
    """Filter `[T, ...]` samples along the first axis; NaN entries stay NaN and restart their element.

    `method` is `one_euro` (causal) or `zero_lag` (forward–backward, see the module notes).
    """
    if method not in SMOOTHING_METHODS:
        raise ValueError(f"smoothing method must be one of {SMOOTHING_METHODS}, got {method!r}")
    tracks = np.asarray(tracks, dtype=np.float64)
    if method == "zero_lag":
        return _zero_lag(tracks, frequency, min_cutoff, beta, d_cutoff)
    filt = OneEuroFilter(frequency, min_cutoff, beta, d_cutoff)
    return np.stack([filt(sample) for sample in tracks]) if len(tracks) else tracks.copy()


def _run(tracks: np.ndarray, frequency: float, min_cutoff: float, beta: float, d_cutoff: float) -> np.ndarray:
    filt = OneEuroFilter(frequency, min_cutoff, beta, d_cutoff)
    return np.stack([filt(sample) for sample in tracks])


def _reflect_pad(tracks: np.ndarray, pad: int) -> np.ndarray:
    """Point reflection of the first and last `pad` samples about the end samples (NaN where an end is NaN)."""
    head = 2.0 * tracks[:1] - tracks[pad:0:-1]
    tail = 2.0 * tracks[-1:] - tracks[-2 : -pad - 2 : -1]
    return np.concatenate([head, tracks, tail])


def _zero_lag(tracks: np.ndarray, frequency: float, min_cutoff: float, beta: float, d_cutoff: float) -> np.ndarray:
    if len(tracks) < 2:
        return tracks.copy()
    OneEuroFilter(frequency, min_cutoff, beta, d_cutoff)  # checks the parameters
    time_constant = frequency / (2.0 * math.pi * min_cutoff)  # samples
    pad = min(len(tracks) - 1, math.ceil(PAD_TIME_CONSTANTS * time_constant))
    padded = _reflect_pad(tracks, pad) if pad > 0 else tracks
    forward = _run(padded, frequency, min_cutoff, beta, d_cutoff)
    # a gap restarts the filter, so the backward pass must not carry values across it either
    forward = np.where(np.isfinite(padded), forward, np.nan)
    backward = _run(forward[::-1], frequency, min_cutoff, beta, d_cutoff)[::-1]
    out = backward[pad : pad + len(tracks)] if pad > 0 else backward
    return np.where(np.isfinite(tracks), out, np.nan)


_PARTS = ("body", "face", "left_hand", "right_hand")


def smooth_people(
    people: Sequence[PersonPose | None],
    frequency: float,
    min_cutoff: float = 1.0,
    beta: float = 0.0,
    d_cutoff: float = 1.0,
    unit: float = 1.0,
    method: SmoothingMethod = "zero_lag",
) -> list[PersonPose | None]:
    """Smooth one person's keypoints over frames (None = no person in that frame, kept as None).

    Coordinates are divided by `unit` before filtering (pass the canvas height so that `beta` is in canvas
    heights per second, independent of resolution) and multiplied back after. Missing points stay missing;
    a part absent in a frame (e.g. a hand) is a gap for all its points.
    """
    out = [None if p is None else p.copy() for p in people]
    for name in _PARTS:
        sizes = {getattr(p, name).shape[0] for p in people if p is not None and getattr(p, name) is not None}
        if not sizes:
            continue
        n = max(sizes)
        track = np.full((len(people), n, 2), np.nan)
        for t, person in enumerate(people):
            part = None if person is None else getattr(person, name)
            if part is not None and part.shape[0] == n:
                track[t] = part[:, :2] / unit
        smoothed = smooth_tracks(track, frequency, min_cutoff, beta, d_cutoff, method) * unit
        for t, person in enumerate(out):
            part = None if person is None else getattr(person, name)
            if part is not None and part.shape[0] == n:
                part[:, :2] = smoothed[t]
    return out


def smooth_frames(
    frames: Sequence[PoseFrame],
    frequency: float,
    min_cutoff: float = 1.0,
    beta: float = 0.0,
    d_cutoff: float = 1.0,
    person_index: int = 0,
    method: SmoothingMethod = "zero_lag",
) -> list[PoseFrame]:
    """Smooth the `person_index`-th person of every frame (other people pass unchanged), in canvas heights.

    `method`: `zero_lag` (forward–backward, for whole clips) or `one_euro` (causal)."""
    people = [f.people[person_index] if person_index < len(f.people) else None for f in frames]
    unit = float(frames[0].height) if frames else 1.0
    smoothed = smooth_people(people, frequency, min_cutoff, beta, d_cutoff, unit, method)
    result = []
    for frame, person in zip(frames, smoothed):
        new_people = list(frame.people)
        if person is not None:
            new_people[person_index] = person
        result.append(PoseFrame(frame.width, frame.height, new_people))
    return result
