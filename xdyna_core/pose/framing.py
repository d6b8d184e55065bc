"""Keeping a retargeted clip inside the canvas: one shift (and, only if that cannot do it, one shrink).

A retargeted body is placed by the reference (its neck on the reference's neck) and moves as the driver
moves; a driver who walks across the frame, or a reference body larger than the driver's, can carry joints
past the canvas edge, where they would be cut off. The whole clip is moved by one translation, chosen so the
box around every frame's drawn joints and hands lies inside the canvas (less a margin for the joint discs);
when the box is larger than the canvas the clip is also scaled down about the reference's neck first. One
transform for the whole clip keeps the motion as it was: nothing jumps between frames.

Only joints the reference itself shows count: a reference photographed from the waist up has no feet, and
its generated video should not shrink to bring the driver's feet into view.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .keypoints import HEAD_POINTS, NUM_BODY, PersonPose, PoseFrame, present

MARGIN = 4  # pixels: the radius of a joint disc
DRAWN_JOINTS = tuple(j for j in range(NUM_BODY) if j not in HEAD_POINTS)


def _extent(frames: Sequence[PoseFrame], joints: Sequence[int], hands: Sequence[str]) -> np.ndarray | None:
    """`(xmin, ymin, xmax, ymax)` of the given joints and hands over every frame, or None when there are none."""
    chunks = []
    for frame in frames:
        for person in frame.people:
            body = person.body[list(joints)]
            chunks.append(body[present(body), :2])
            for name in hands:
                part = getattr(person, name)
                if part is not None:
                    chunks.append(part[present(part), :2])
    points = np.concatenate(chunks) if chunks else np.zeros((0, 2))
    if not len(points):
        return None
    return np.concatenate([points.min(axis=0), points.max(axis=0)])


def fit_transform(
    extent: Sequence[float], width: int, height: int, centre: Sequence[float], margin: float = MARGIN
) -> tuple[float, np.ndarray]:
    """`(scale, shift)` such that `centre + scale·(p − centre) + shift` puts the box `extent` inside the canvas
    less `margin` (scale 1 whenever the box fits; the smallest shift that does it)."""
    lo, hi = np.asarray(extent[:2], dtype=np.float64), np.asarray(extent[2:], dtype=np.float64)
    room = np.array([width - 1 - 2 * margin, height - 1 - 2 * margin], dtype=np.float64)
    span = hi - lo
    scale = float(min(1.0, *(room[k] / span[k] for k in range(2) if span[k] > 0)))
    centre = np.asarray(centre, dtype=np.float64)
    lo, hi = centre + scale * (lo - centre), centre + scale * (hi - centre)
    shift = np.zeros(2)
    for k, limit in enumerate((width - 1 - margin, height - 1 - margin)):
        if lo[k] < margin:
            shift[k] = margin - lo[k]
        elif hi[k] > limit:
            shift[k] = limit - hi[k]
    return scale, shift


def keep_in_frame(
    frames: Sequence[PoseFrame], reference: PersonPose, centre: Sequence[float], margin: float = MARGIN
) -> tuple[list[PoseFrame], float, np.ndarray]:
    """The frames moved (and if need be shrunk about `centre`) so that what the reference shows stays inside.

    Returns the frames, the scale and the shift applied (1 and 0 when the clip already fits).
    """
    shown = present(reference.body)
    joints = [j for j in DRAWN_JOINTS if shown[j]]
    hands = [name for name, wrist in (("left_hand", 7), ("right_hand", 4)) if shown[wrist]]
    if not frames:
        return [], 1.0, np.zeros(2)
    width, height = frames[0].width, frames[0].height
    extent = _extent(frames, joints, hands)
    if extent is None:
        return list(frames), 1.0, np.zeros(2)
    scale, shift = fit_transform(extent, width, height, centre, margin)
    if scale == 1.0 and not shift.any():
        return list(frames), 1.0, shift
    centre = np.asarray(centre, dtype=np.float64)

    def move(xy: np.ndarray) -> np.ndarray:
        return centre + scale * (xy - centre) + shift

    moved = [PoseFrame(f.width, f.height, [p.map_points(move) for p in f.people]) for f in frames]
    return moved, scale, shift
