"""Hands over a clip: where to look for a hand the body pose says is there, and bridging short misses.

X-Dyna was trained on DWPose renderings, which show both hands in nearly every frame; a hand that blinks in
and out of the pose hint makes the generated hand flicker. Two helpers, independent of the detector:

- `hand_search_box`: a square around the hand, placed from the forearm the body pose gives (the hand
  continues the forearm beyond the wrist), for a hand detector to run on a crop where the hand fills a good
  part of the input instead of a few pixels of a downscaled frame.
- `fill_hand_gaps`: a hand missing for at most `max_gap` frames between two frames that have it is
  interpolated *relative to the wrist* (the offsets of its 21 points from the wrist are blended, then put on
  the frame's own wrist), so the hand moves with the arm instead of sliding in a straight line across it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .keypoints import L_ELBOW, L_WRIST, NUM_HAND, R_ELBOW, R_WRIST, PersonPose, present

HANDS: dict[str, tuple[int, int]] = {"left_hand": (L_WRIST, L_ELBOW), "right_hand": (R_WRIST, R_ELBOW)}

# The search square: centred this far past the wrist (in forearm lengths), with sides this many forearm
# lengths (an open hand is about 0.8 forearms long; the margin covers a hand bent back at the wrist).
# Measured on driving_1.mp4: sides of 1.6, 2.0, 2.5 and 3.0 forearms found 47, 49, 49 and 51 % of the right
# hands the palm detector could see, at 192–384 px crops.
SEARCH_OFFSET = 0.3
SEARCH_SIDE = 3.0
# A forearm shorter than this (pixels) is foreshortened or misdetected: the square is sized from this instead.
MIN_FOREARM = 20.0


def hand_search_box(wrist: np.ndarray, elbow: np.ndarray) -> tuple[float, float, float]:
    """`(left, top, side)` of the square to search for the hand at the end of the forearm elbow → wrist."""
    forearm = np.asarray(wrist, dtype=np.float64) - np.asarray(elbow, dtype=np.float64)
    length = max(float(np.hypot(*forearm)), MIN_FOREARM)
    centre = np.asarray(wrist, dtype=np.float64) + SEARCH_OFFSET * forearm
    side = SEARCH_SIDE * length
    return float(centre[0] - side / 2), float(centre[1] - side / 2), side


def forearm_length(body: np.ndarray, hand: str) -> float:
    wrist, elbow = HANDS[hand]
    if not present(body[[wrist, elbow]]).all():
        return math.nan
    return float(np.hypot(*(body[wrist, :2] - body[elbow, :2])))


def fill_hand_gaps(people: Sequence[PersonPose | None], max_gap: int) -> tuple[list[PersonPose | None], dict[str, int]]:
    """Interpolate each hand across runs of at most `max_gap` frames without it (relative to the wrist).

    A frame is filled only when it has the person and that hand's wrist; points missing at either end of the
    gap stay missing. Returns copies of the people and, per hand, how many frames were filled.
    """
    if max_gap < 0:
        raise ValueError(f"max_gap must be ≥ 0, got {max_gap}")
    out = [None if p is None else p.copy() for p in people]
    filled = {name: 0 for name in HANDS}
    for name, (wrist, _) in HANDS.items():
        has_wrist = [p is not None and bool(present(p.body)[wrist]) for p in out]
        seen = [i for i, p in enumerate(out) if has_wrist[i] and getattr(p, name) is not None]
        for a, b in zip(seen, seen[1:]):
            if not 1 <= b - a - 1 <= max_gap or not all(has_wrist[a + 1 : b]):
                continue
            start, end = getattr(out[a], name), getattr(out[b], name)
            both = present(start) & present(end)
            offset_a = start[:, :2] - out[a].body[wrist, :2]
            offset_b = end[:, :2] - out[b].body[wrist, :2]
            for t in range(a + 1, b):
                u = (t - a) / (b - a)
                hand = np.zeros((NUM_HAND, 3))
                hand[:, :2] = out[t].body[wrist, :2] + (1 - u) * offset_a + u * offset_b
                hand[:, 2] = np.minimum(start[:, 2], end[:, 2])
                hand[~both] = (np.nan, np.nan, 0.0)
                setattr(out[t], name, hand)
                filled[name] += 1
    return out, filled


def hand_rates(people: Sequence[PersonPose | None]) -> dict[str, float]:
    """Share of the frames in which each hand has at least one point."""
    count = max(1, len(people))
    return {
        name: float(
            sum(p is not None and getattr(p, name) is not None and present(getattr(p, name)).any() for p in people)
        )
        / count
        for name in HANDS
    }
