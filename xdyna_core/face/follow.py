"""S-Face canvases that follow a retargeted head.

The S-Face condition copies the driving frame's face onto black canvases at the place the face has in the
driving frame. When the pose is retargeted so that the head moves (retarget modes `limbs` and `global`, or a
clip shifted to stay in frame), the pose ControlNet draws the head elsewhere and the two conditions disagree
about where the face is. A head placement per frame, the similarity that takes the driving face onto the
retargeted one, moves and scales the canvases onto the retargeted head:

- it is fitted to the face landmarks both poses carry (retargeting moves the face rigidly with the nose, so
  the fit is exact), and to the body's nose, eyes and ears where either lacks landmarks;
- frames where neither fits take the placement interpolated between the frames around them (held at the ends
  of the clip; the identity when no frame fits);
- a placement that only translates moves the canvases by whole pixels, the precision of the face boxes and
  patch centres themselves (no resampling, so no blur; under half a pixel, nothing moves); one that scales
  or turns resamples them bilinearly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .body_face import fit_similarity

# A placement row: the matrix `A` (row-major, 4 values) and the offset `t` of `p ↦ A p + t`, in pixels.
IDENTITY = np.array([1.0, 0.0, 0.0, 1.0, 0.0, 0.0])

Points = np.ndarray | None


def head_placement(source: tuple[Points, Points], target: tuple[Points, Points]) -> np.ndarray | None:
    """The placement row taking the source face (landmarks `[68, 2]`, head keypoints `[5, 2]`) onto the target's,
    or None when neither pair has two points in common."""
    for a, b in zip(source, target):
        if a is not None and b is not None:
            fit = fit_similarity(a, b)
            if fit is not None:
                return np.concatenate([fit.matrix.reshape(-1), fit.offset])
    return None


def head_placements(sources: Sequence[tuple[Points, Points]], targets: Sequence[tuple[Points, Points]]) -> np.ndarray:
    """`[F, 6]` placement rows per frame: fitted where possible, interpolated across gaps, held at the ends."""
    if len(sources) != len(targets):
        raise ValueError(f"{len(sources)} source frames but {len(targets)} target frames")
    rows = [head_placement(s, t) for s, t in zip(sources, targets)]
    known = [i for i, row in enumerate(rows) if row is not None]
    if not known:
        return np.tile(IDENTITY, (len(rows), 1))
    values = np.stack([rows[i] for i in known])
    frames = np.arange(len(rows))
    # np.interp holds the first and last values beyond the known frames
    return np.stack([np.interp(frames, known, values[:, j]) for j in range(values.shape[1])], axis=1)


MATRIX_TOLERANCE = 1e-3  # |A - I| below this is no scaling (under a pixel's change across a 1000-pixel face)


def whole_pixel_shift(placement: np.ndarray | torch.Tensor) -> tuple[int, int] | None:
    """`(dx, dy)` in whole pixels when the placement only translates; None when it scales or turns."""
    row = np.asarray(placement, dtype=np.float64)
    if not np.allclose(row[:4], IDENTITY[:4], rtol=0, atol=MATRIX_TOLERANCE):
        return None
    return int(np.round(row[4])), int(np.round(row[5]))


def is_identity(placement: np.ndarray | torch.Tensor) -> bool:
    """Whether the placement leaves a canvas as it is."""
    return whole_pixel_shift(placement) == (0, 0)


def place_canvas(canvas: torch.Tensor, placement: np.ndarray | torch.Tensor) -> torch.Tensor:
    """`[H, W, C]` canvas moved by the placement `p ↦ A p + t` (pixel coordinates, pixel i spans [i, i+1)), black
    where the moved canvas does not reach: by whole pixels for a translation (the canvas itself when that is
    zero), bilinear otherwise."""
    height, width = canvas.shape[:2]
    shift = whole_pixel_shift(placement)
    if shift is not None:
        if shift == (0, 0):
            return canvas
        dx, dy = shift
        out = torch.zeros_like(canvas)
        if abs(dx) < width and abs(dy) < height:
            out[max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = canvas[
                max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)
            ]
        return out
    out = torch.zeros_like(canvas)
    region = resampled_region(canvas, placement)
    if region is not None:
        rows, cols, values = region
        out[rows, cols] = values
    return out


def _span(values: np.ndarray, size: int) -> tuple[int, int]:
    """The pixels `[first, last)` (clamped to `[0, size)`) whose centres `i + 0.5` lie within `values`' range,
    one more either side against rounding."""
    first = int(np.floor(values.min() - 0.5)) - 1
    last = int(np.ceil(values.max() - 0.5)) + 2
    return max(first, 0), min(last, size)


def lit_box(canvas: torch.Tensor) -> tuple[int, int, int, int] | None:
    """`(top, bottom, left, right)` of the `[H, W, C]` canvas's non-black pixels, or None when it is all black."""
    flat = canvas.reshape(canvas.shape[0], -1)
    rows = ((flat.amax(1) != 0) | (flat.amin(1) != 0)).nonzero().flatten()
    if rows.numel() == 0:
        return None
    band = canvas[int(rows[0]) : int(rows[-1]) + 1]
    cols = ((band.amax(0).amax(-1) != 0) | (band.amin(0).amin(-1) != 0)).nonzero().flatten()
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def resampled_region(
    canvas: torch.Tensor,
    placement: np.ndarray | torch.Tensor,
    lit: tuple[int, int, int, int] | None = None,
) -> tuple[slice, slice, torch.Tensor] | None:
    """The bilinearly placed `[H, W, C]` canvas where it can be non-black: `(rows, cols, values)`, or None when
    it is black everywhere.

    S-Face canvases are black but for the face: a bilinear sample reads the four pixels around its source point,
    so it is non-black only where that point lies within half a pixel of the non-black pixels' box, and exactly
    0 elsewhere. Only the placed image of that box is resampled, from that box of the canvas.

    Args:
        lit: `(top, bottom, left, right)` holding every non-black pixel, when the caller knows it (the face box
            and patches it cut); found by scanning the canvas otherwise.
    """
    height, width = canvas.shape[:2]
    lit = lit_box(canvas) if lit is None else lit
    if lit is None or lit[0] >= lit[1] or lit[2] >= lit[3]:
        return None
    top, bottom, left, right = lit
    row = np.asarray(placement, dtype=np.float64)
    matrix, offset = row[:4].reshape(2, 2), row[4:]
    reach = np.array([[x, y] for x in (left - 0.5, right + 0.5) for y in (top - 0.5, bottom + 0.5)])
    corners = reach @ matrix.T + offset  # where the readable box lands on the output canvas
    (c0, c1), (r0, r1) = _span(corners[:, 0], width), _span(corners[:, 1], height)
    if c0 >= c1 or r0 >= r1:
        return None
    # each output pixel centre c is read from the source point A^-1 (c - t), in the cropped box's pixels
    inverse = np.linalg.inv(matrix)
    ys, xs = torch.meshgrid(
        torch.arange(r0, r1, dtype=torch.float64) + 0.5, torch.arange(c0, c1, dtype=torch.float64) + 0.5, indexing="ij"
    )
    dx, dy = xs - offset[0], ys - offset[1]
    source_x = dx * inverse[0, 0] + dy * inverse[0, 1] - left
    source_y = dx * inverse[1, 0] + dy * inverse[1, 1] - top
    box_width, box_height = right - left, bottom - top
    # align_corners=False: pixel i's centre is (2i + 1) / W - 1; beyond the box the padding is black, as the canvas is
    grid = torch.stack([2.0 * source_x / box_width - 1.0, 2.0 * source_y / box_height - 1.0], dim=-1).unsqueeze(0)
    image = canvas[top:bottom, left:right].permute(2, 0, 1).unsqueeze(0).to(torch.float64)
    placed = torch.nn.functional.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return slice(r0, r1), slice(c0, c1), placed[0].permute(1, 2, 0).to(canvas.dtype)
