"""Where keypoints may lie: inside the picture, and inside the part of it that shows the video.

Detectors place joints they cannot see: MediaPipe extrapolates feet cut off by the frame edge to below the
image (y 908 on an 896-pixel frame), and a video that was scaled and letterboxed to the generation size has
black bars in which nothing real can be. A pose drawn there tells the ControlNet there is a limb where the
picture has none, so such points are marked missing, and the renderer never draws a point off its canvas.

The content area is found from the frames themselves: the leading and trailing rows and columns that are
near-black in every sampled frame are letterbox (or pillarbox) bars, when the line just past them is mostly
bright (where a picture starts; a dark picture with a few bright spots has no bars). A box is `(left, top, right, bottom)` in
pixels, right and bottom exclusive; a point `(x, y)` lies inside when `left <= x < right` and
`top <= y < bottom`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .keypoints import PersonPose, PoseFrame, present

Box = tuple[int, int, int, int]

# A bar pixel is at most this bright in every sampled frame (H.264 leaves a few levels of noise in black bars).
BAR_LEVEL = 0.1
# Frames sampled over the clip to find the bars: enough that a dark scene somewhere does not pass for a bar.
BAR_SAMPLES = 32
# Bars are never taken to cover more than this share of a side: a mostly dark video keeps its picture.
MAX_BAR_SHARE = 0.45
# Thinner dark edges are encoder padding or a dark border in the picture, not bars (driving_1.mp4 has a dark
# last row below its picture).
MIN_BAR = 4
# A bar ends where the picture starts: at least this share of the first line past it is bright (driving_1.mp4:
# 100 %). A dark picture with a few bright spots has no bars.
EDGE_BRIGHT = 0.5


def _leading_dark(levels: np.ndarray, limit: int) -> int:
    """How many entries from the start are at most `BAR_LEVEL` (capped at `limit`; 0 when under `MIN_BAR`)."""
    bright = np.nonzero(levels > BAR_LEVEL)[0]
    run = min(int(bright[0]) if bright.size else len(levels), limit)
    return run if run >= MIN_BAR else 0


def content_box(frames: torch.Tensor) -> Box:
    """The part of `[F, H, W, C]` frames (values in [0, 1]) that is not letterbox or pillarbox bars.

    A clip without bars, or one dark everywhere, gives the whole frame.
    """
    if frames.ndim != 4 or frames.shape[0] == 0:
        raise ValueError(f"frames must be [F, H, W, C] with at least one frame, got shape {tuple(frames.shape)}")
    count, height, width = frames.shape[:3]
    picks = torch.linspace(0, count - 1, min(count, BAR_SAMPLES)).round().long().unique()
    brightest = torch.zeros(height, width)
    for i in picks.tolist():  # frame by frame: never a float copy of the sample
        brightest = torch.maximum(brightest, frames[i, :, :, :3].float().amax(-1).cpu())
    bright = (brightest > BAR_LEVEL).numpy()
    rows, cols = brightest.amax(1).numpy(), brightest.amax(0).numpy()
    if not bright.any():
        return (0, 0, width, height)
    top = _leading_dark(rows, int(MAX_BAR_SHARE * height))
    bottom = height - _leading_dark(rows[::-1], int(MAX_BAR_SHARE * height))
    left = _leading_dark(cols, int(MAX_BAR_SHARE * width))
    right = width - _leading_dark(cols[::-1], int(MAX_BAR_SHARE * width))
    # keep a bar only where a picture begins past it (judged within the other axis' picture span)
    if top and bright[top, left:right].mean() < EDGE_BRIGHT:
        top = 0
    if bottom < height and bright[bottom - 1, left:right].mean() < EDGE_BRIGHT:
        bottom = height
    if left and bright[top:bottom, left].mean() < EDGE_BRIGHT:
        left = 0
    if right < width and bright[top:bottom, right - 1].mean() < EDGE_BRIGHT:
        right = width
    return (left, top, right, bottom)


def inside(points: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """Boolean mask of the points `[N, ≥2]` that exist and lie inside `box`."""
    left, top, right, bottom = box
    xy = np.nan_to_num(points[:, :2], nan=-np.inf)
    within = (xy[:, 0] >= left) & (xy[:, 0] < right) & (xy[:, 1] >= top) & (xy[:, 1] < bottom)
    return present(points) & within


def _keep_inside(points: np.ndarray | None, box: Sequence[float]) -> np.ndarray | None:
    if points is None:
        return None
    out = points.copy()
    outside = ~inside(points, box)
    out[outside, :2] = np.nan
    out[outside, 2] = 0.0
    return out


def person_inside(person: PersonPose, box: Sequence[float]) -> PersonPose:
    """A copy of the person with every point outside `box` marked missing (a part left with none is dropped).

    The face's points 68/69 (the body's eyes, as controlnet_aux appends them) follow the same rule.
    """

    def part(points: np.ndarray | None) -> np.ndarray | None:
        kept = _keep_inside(points, box)
        return kept if kept is not None and present(kept).any() else None

    body = _keep_inside(person.body, box)
    extra = {key: _keep_inside(value, box) for key, value in person.extra.items()}
    return PersonPose(body, part(person.face), part(person.left_hand), part(person.right_hand), extra)


def frame_inside(frame: PoseFrame, box: Sequence[float] | None = None) -> PoseFrame:
    """The frame with every point outside `box` (default: the canvas) marked missing; people left without
    any point are dropped."""
    box = (0, 0, frame.width, frame.height) if box is None else box
    people = [person_inside(p, box) for p in frame.people]
    return PoseFrame(frame.width, frame.height, [p for p in people if not p.is_empty()])


def canvas_box(width: int, height: int) -> Box:
    return (0, 0, int(width), int(height))


def intersect(a: Sequence[int], b: Sequence[int]) -> Box:
    """The overlap of two boxes (empty boxes have right ≤ left or bottom ≤ top)."""
    return (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
