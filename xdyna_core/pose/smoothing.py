"""Temporal smoothing of keypoint tracks with the One Euro filter (Casiez, Roussel & Vogel, CHI 2012).

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

import numpy as np

from .keypoints import PersonPose, PoseFrame


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
    tracks: np.ndarray, frequency: float, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0
) -> np.ndarray:
    """Filter `[T, ...]` samples along the first axis; NaN entries stay NaN and restart their element."""
    tracks = np.asarray(tracks, dtype=np.float64)
    filt = OneEuroFilter(frequency, min_cutoff, beta, d_cutoff)
    return np.stack([filt(sample) for sample in tracks]) if len(tracks) else tracks.copy()


_PARTS = ("body", "face", "left_hand", "right_hand")


def smooth_people(
    people: Sequence[PersonPose | None],
    frequency: float,
    min_cutoff: float = 1.0,
    beta: float = 0.0,
    d_cutoff: float = 1.0,
    unit: float = 1.0,
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
        smoothed = smooth_tracks(track, frequency, min_cutoff, beta, d_cutoff) * unit
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
) -> list[PoseFrame]:
    """Smooth the `person_index`-th person of every frame (other people pass unchanged), in canvas heights."""
    people = [f.people[person_index] if person_index < len(f.people) else None for f in frames]
    unit = float(frames[0].height) if frames else 1.0
    smoothed = smooth_people(people, frequency, min_cutoff, beta, d_cutoff, unit)
    result = []
    for frame, person in zip(frames, smoothed):
        new_people = list(frame.people)
        if person is not None:
            new_people[person_index] = person
        result.append(PoseFrame(frame.width, frame.height, new_people))
    return result
