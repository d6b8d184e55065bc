"""People over a video: which person to keep when several are found, and what frames without one become.

X-Dyna animates one person, and a driving video regularly has frames where the detector misses them
(motion blur, occlusion, the first frames of a fade-in). A frame without a pose renders as a black hint, which
the model reads as "no body here" and the result flickers, so missing frames are filled by default.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger("xdyna")

PERSON_CHOICES = ("largest", "index", "all")
MISSING_MODES = ("repeat_previous", "interpolate", "empty")


@dataclass(frozen=True)
class FramePeople:
    """The people of one frame, in the estimator's keypoint layout (COCO-WholeBody: 133 points).

    Attributes:
        keypoints: `[P, K, 2]` x, y in frame pixels.
        scores: `[P, K]` keypoint confidences (SimCC maxima; ≤ 0 where nothing was found).
        boxes: `[P, 4]` person boxes (x1, y1, x2, y2) in frame pixels.
        box_scores: `[P]` detector scores.
    """

    keypoints: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    box_scores: np.ndarray

    @classmethod
    def empty(cls, num_keypoints: int = 133) -> FramePeople:
        return cls(
            np.zeros((0, num_keypoints, 2), np.float32),
            np.zeros((0, num_keypoints), np.float32),
            np.zeros((0, 4), np.float32),
            np.zeros((0,), np.float32),
        )

    def __len__(self) -> int:
        return self.keypoints.shape[0]

    @property
    def num_keypoints(self) -> int:
        return self.keypoints.shape[1]

    def take(self, indices) -> FramePeople:
        idx = np.asarray(indices, dtype=np.int64)
        return FramePeople(self.keypoints[idx], self.scores[idx], self.boxes[idx], self.box_scores[idx])

    def lerp(self, other: FramePeople, t: float) -> FramePeople:
        """Positions blended linearly towards `other`; a keypoint keeps the lower of its two scores, so a point
        missing at either end stays missing rather than sliding in from a meaningless location."""
        return FramePeople(
            ((1.0 - t) * self.keypoints + t * other.keypoints).astype(np.float32),
            np.minimum(self.scores, other.scores),
            ((1.0 - t) * self.boxes + t * other.boxes).astype(np.float32),
            np.minimum(self.box_scores, other.box_scores),
        )


def box_areas(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def left_to_right(people: FramePeople) -> FramePeople:
    """People ordered by the centre of their box, leftmost first (stable across frames, unlike detector scores)."""
    return people.take(np.argsort((people.boxes[:, 0] + people.boxes[:, 2]) / 2.0, kind="stable"))


def choose_people(people: FramePeople, choice: str = "largest", index: int = 0) -> FramePeople:
    """Keep the person X-Dyna should follow.

    Args:
        choice: `largest` (largest detection box), `index` (the `index`-th person from the left, 0 = leftmost;
            a frame with fewer people counts as a frame without a person), or `all` (everyone, left to right).
    """
    if choice not in PERSON_CHOICES:
        raise ValueError(f"person choice must be one of {PERSON_CHOICES}, got {choice!r}")
    if len(people) == 0:
        return people
    if choice == "largest":
        return people.take([int(np.argmax(box_areas(people.boxes)))])
    ordered = left_to_right(people)
    if choice == "all":
        return ordered
    if index < 0:
        raise ValueError(f"person index must be 0 or more, got {index}")
    return ordered.take([index]) if index < len(ordered) else FramePeople.empty(people.num_keypoints)


def fill_missing(frames: list[FramePeople], mode: str = "repeat_previous") -> list[FramePeople]:
    """Give frames without a person a pose from their neighbours.

    Args:
        mode: `repeat_previous` (the last frame with a person; frames before the first detection take that
            first detection), `interpolate` (linear between the nearest frames with a person on each side,
            person by person when both have the same number of people, else the nearer one; ends are held),
            or `empty` (left without people).
    """
    if mode not in MISSING_MODES:
        raise ValueError(f"missing-person mode must be one of {MISSING_MODES}, got {mode!r}")
    found = [i for i, people in enumerate(frames) if len(people)]
    if mode == "empty" or len(found) == len(frames):
        return list(frames)
    if not found:
        logger.warning("X-Dyna DWPose: no person found in any of the %d frames", len(frames))
        return list(frames)
    filled = list(frames)
    for i in range(len(frames)):
        if len(frames[i]):
            continue
        k = bisect.bisect_left(found, i)
        before = found[k - 1] if k > 0 else None
        after = found[k] if k < len(found) else None
        if mode == "repeat_previous" or before is None or after is None:
            filled[i] = frames[before if before is not None else after]
        elif len(frames[before]) == len(frames[after]):
            filled[i] = frames[before].lerp(frames[after], (i - before) / (after - before))
        else:
            filled[i] = frames[before if i - before <= after - i else after]
    logger.info(
        "X-Dyna DWPose: %d of %d frames had no person; filled (%s)", len(frames) - len(found), len(frames), mode
    )
    return filled
