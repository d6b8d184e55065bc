"""S-Face conditions (docs/xdyna_model.md §5): a face box and three feature patches per frame → two registered canvases.

Per frame, from the 68 iBUG landmarks `p` in pixels of the W×H frame, as the official
`extract_local_feature_from_single_img` + `nms_precessor.compute_increased_bbox` compute them:

- landmark bounds `l, t, r, b` = min/max of the points; `L = max(r - l, b - t)`; `cx, cy` = their midpoints;
- box = `int(cx - 1.35 L), int(cy - 1.25 L), int(cx + 1.35 L), int(cy + 1.45 L)` (`int` truncates toward
  zero), then clamped: `left = max(0, left)`, `top = max(0, top)`, `right = min(W, right)`,
  `bottom = min(H, bottom)`;
- patch centres: left eye `round(mean(p[43:48]))`, right eye `round(mean(p[37:42]))`, mouth
  `round(mean(p[49:68]))` (numpy's round: halves to even);
- patch half sizes from the *clamped* box: `hw = int((right - left) / 512 * 64)` (columns),
  `hh = int((bottom - top) / 512 * 64)` (rows), which is exactly `int(width / 8)`;
- global canvas: zeros, with `frame[top:bottom, left:right]` copied in place;
- local canvas: zeros, with `frame[cy - hh : cy + hh, cx - hw : cx + hw]` copied in place for each centre;
- hint = `cat([local, global], channels)`: 6 channels at the frame's size, registered to it.

Patches that cross the frame border: the release slices numpy arrays with the raw bounds, so a patch past
the right or bottom edge is cut at the edge, but one whose start is negative (past the left or top edge)
wraps to a start counted from the far edge and the whole patch normally comes out empty. We cut every
patch at the frame edges instead (`border="clip"`); `border="release"` reproduces the release's slicing.

Differences from the release, all outside ordinary footage: the landmark arithmetic runs in float64 (the
release runs in face_alignment's float32, which can move `int(...)` by one where a value lies within float32
rounding of an integer), and the box is clamped on both sides of each axis, so a face wholly outside the
frame gives an empty box rather than a slice that wraps.

Canvases are ComfyUI-style `[F, H, W, 3]` float tensors in [0, 1]. The official pipeline min–max normalises
each canvas stream over the whole clip before the ControlNet; that belongs to the ControlNet application.
A clip's condition is never held as canvases: `condition.SFaceCondition` renders the frames asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch

from .landmarks import FEATURE_SLICES

Box = tuple[int, int, int, int]  # left, top, right, bottom: columns [left, right), rows [top, bottom)
Border = Literal["clip", "release"]

# compute_increased_bbox(bbox, left_f=1.35, top_f=1.25, right_f=1.35, bot_f=1.45) in the release.
BOX_FACTORS = (1.35, 1.25, 1.35, 1.45)


def landmark_bounds(points: np.ndarray) -> tuple[float, float, float, float]:
    """Min/max `(left, top, right, bottom)` of `[68, 2]` points, ignoring missing (NaN) ones."""
    xs, ys = points[:, 0], points[:, 1]
    return float(np.nanmin(xs)), float(np.nanmin(ys)), float(np.nanmax(xs)), float(np.nanmax(ys))


def expand_bounds(bounds: Sequence[float], factors: Sequence[float] = BOX_FACTORS) -> Box:
    """The release's enlarged face box around landmark bounds, before clamping (Python `int` truncation)."""
    left, top, right, bottom = bounds
    length = max(right - left, bottom - top)
    cx, cy = (left + right) * 0.5, (top + bottom) * 0.5
    fl, ft, fr, fb = factors
    return int(cx - fl * length), int(cy - ft * length), int(cx + fr * length), int(cy + fb * length)


def clamp_box(box: Sequence[int], width: int, height: int) -> Box:
    """Clamp a box to a `width × height` frame (each coordinate into [0, size])."""
    left, top, right, bottom = (int(v) for v in box)
    return (min(max(0, left), width), min(max(0, top), height), min(max(0, right), width), min(max(0, bottom), height))


def face_box(points: np.ndarray, width: int, height: int) -> Box:
    """The S-Face box of one frame's landmarks, clamped to the frame, exactly as the release computes it."""
    return clamp_box(expand_bounds(landmark_bounds(points)), width, height)


def bounds_inside(bounds: Sequence[float], box: Sequence[int]) -> bool:
    """The release's stabilisation test: landmark bounds lie within a (previous) box, edges included."""
    return bounds[0] >= box[0] and bounds[1] >= box[1] and bounds[2] <= box[2] and bounds[3] <= box[3]


def feature_centres(points: np.ndarray) -> np.ndarray:
    """`[3, 2]` int64 pixel centres (x, y) of the left eye, right eye and mouth patches (halves round to even)."""
    return np.stack([np.round(np.nanmean(points[s], axis=0)) for s in FEATURE_SLICES]).astype(np.int64)


def patch_half_size(box: Sequence[int]) -> tuple[int, int]:
    """`(half width, half height)` of the feature patches: an eighth of the box, truncated toward zero.

    The release writes `int(((right - left) / 512) * 64)`; scaling by powers of two is exact in floating
    point, so this is `int((right - left) / 8)`.
    """
    return int((box[2] - box[0]) / 8), int((box[3] - box[1]) / 8)


def patch_window(centre: Sequence[int], half: Sequence[int], width: int, height: int, border: Border = "clip"):
    """`(rows, cols)` slices of the patch around `centre` (x, y) with `half` = (half width, half height)."""
    x, y = int(centre[0]), int(centre[1])
    hw, hh = half
    rows, cols = (y - hh, y + hh), (x - hw, x + hw)
    if border == "clip":
        rows = (min(max(rows[0], 0), height), min(max(rows[1], 0), height))
        cols = (min(max(cols[0], 0), width), min(max(cols[1], 0), width))
    elif border != "release":
        raise ValueError(f"border must be 'clip' or 'release', got {border!r}")
    return slice(*rows), slice(*cols)


def render_canvases(
    frames: torch.Tensor,
    boxes: Sequence[Sequence[int]],
    centres: Sequence[np.ndarray],
    border: Border = "clip",
    progress: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The local and global S-Face canvases `[F, H, W, 3]` of `[F, H, W, C]` frames.

    Args:
        frames: the driving frames at the generation size, values in [0, 1] (only the first 3 channels are used).
        boxes: per frame, the clamped face box `(left, top, right, bottom)`; an empty box gives black canvases.
        centres: per frame, the `[3, 2]` patch centres (left eye, right eye, mouth).
        border: how patches crossing the frame edge are cut (see the module notes).
        progress: called with `(done, total)` after each frame.
    """
    if frames.ndim != 4 or frames.shape[-1] < 3:
        raise ValueError(f"frames must be [F, H, W, C>=3], got shape {tuple(frames.shape)}")
    count, height, width = frames.shape[:3]
    if len(boxes) != count or len(centres) != count:
        raise ValueError(f"{count} frames but {len(boxes)} boxes and {len(centres)} centre sets")
    rgb = frames[..., :3]
    local = torch.zeros_like(rgb)
    glob = torch.zeros_like(rgb)
    for i in range(count):
        cut_canvases(local[i], glob[i], rgb[i], boxes[i], centres[i], border)
        if progress is not None:
            progress(i + 1, count)
    return local, glob


def canvas_windows(
    box: Sequence[int], centres: np.ndarray, width: int, height: int, border: Border = "clip"
) -> list[tuple[bool, int, int, int, int]]:
    """The pixels one frame's canvases copy from a `width × height` frame, as non-empty rectangles
    `(to_global, top, bottom, left, right)`: the face box (global canvas), then each feature patch (local),
    sliced as `patch_window` says (the release's wrapped slices resolve as numpy and torch resolve them)."""
    left, top, right, bottom = box
    half = patch_half_size(box)
    slices = [(True, slice(top, bottom), slice(left, right))]
    slices += [(False, *patch_window(centre, half, width, height, border)) for centre in centres]
    windows = []
    for to_global, rows, cols in slices:
        (r0, r1, _), (c0, c1, _) = rows.indices(height), cols.indices(width)
        if r0 < r1 and c0 < c1:
            windows.append((to_global, r0, r1, c0, c1))
    return windows


def windows_bounds(windows: Sequence[tuple[bool, int, int, int, int]]) -> tuple[int, int, int, int] | None:
    """`(top, bottom, left, right)` bounding the `canvas_windows` (None when there are none)."""
    if not windows:
        return None
    return (
        min(w[1] for w in windows),
        max(w[2] for w in windows),
        min(w[3] for w in windows),
        max(w[4] for w in windows),
    )


def shifted(windows: Sequence[tuple[bool, int, int, int, int]], top: int, left: int) -> list:
    """The `canvas_windows` in the pixels of a part of the canvas that starts at `(top, left)`."""
    return [(g, r0 - top, r1 - top, c0 - left, c1 - left) for g, r0, r1, c0, c1 in windows]


def cut_canvases(
    local: torch.Tensor,
    glob: torch.Tensor,
    frame: torch.Tensor,
    box: Sequence[int],
    centres: np.ndarray,
    border: Border = "clip",
    origin: tuple[int, int] = (0, 0),
) -> tuple[int, int, int, int] | None:
    """Copy one frame's face box into `glob` and its eye and mouth patches into `local` (black `[H, W, 3]`
    canvases, written in place).

    `frame` holds the frame's pixels from `origin = (top, left)` on (`[h, w, ≥3]`; the whole `[H, W, ≥3]`
    frame by default), at least those within the returned box. Returns `(top, bottom, left, right)` bounding
    every pixel written (None when nothing was): outside it the canvases stay black.
    """
    height, width = glob.shape[:2]
    windows = canvas_windows(box, centres, width, height, border)
    copy_windows(local, glob, frame, windows, origin)
    return windows_bounds(windows)


def copy_windows(
    local: torch.Tensor,
    glob: torch.Tensor,
    frame: torch.Tensor,
    windows: Sequence[tuple[bool, int, int, int, int]],
    origin: tuple[int, int] = (0, 0),
) -> None:
    """Copy the `canvas_windows` of a frame whose pixels `frame` holds from `origin = (top, left)` on into the
    canvases (in place)."""
    top, left = origin
    for to_global, r0, r1, c0, c1 in windows:
        (glob if to_global else local)[r0:r1, c0:c1] = frame[r0 - top : r1 - top, c0 - left : c1 - left, :3]
