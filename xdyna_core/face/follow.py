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
    row = torch.as_tensor(np.asarray(placement, dtype=np.float64))
    matrix, offset = row[:4].reshape(2, 2), row[4:]
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float64) + 0.5, torch.arange(width, dtype=torch.float64) + 0.5, indexing="ij"
    )
    centres = torch.stack([xs, ys], dim=-1)  # output pixel centres (x, y)
    source = (centres - offset) @ torch.linalg.inv(matrix).T
    size = torch.tensor([width, height], dtype=torch.float64)
    grid = (2.0 * source / size - 1.0).unsqueeze(0)  # align_corners=False: pixel i's centre is (2i + 1) / W - 1
    image = canvas.permute(2, 0, 1).unsqueeze(0).to(torch.float64)
    placed = torch.nn.functional.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return placed[0].permute(1, 2, 0).to(canvas.dtype)
