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
    if is_identity(placement):
        return canvas
    out = torch.zeros_like(canvas)
    lit = lit_box(canvas)
    if lit is not None:
        top, bottom, left, right = lit
        region = place_face(canvas[top:bottom, left:right], (top, left), canvas.shape[:2], placement)
        if region is not None:
            rows, cols, values = region
            out[rows, cols] = values
    return out


def lit_box(canvas: torch.Tensor) -> tuple[int, int, int, int] | None:
    """`(top, bottom, left, right)` of the `[H, W, C]` canvas's non-black pixels (any layout or device), or None
    when it is all black."""
    rows = ((canvas.amax((1, 2)) != 0) | (canvas.amin((1, 2)) != 0)).nonzero().flatten().tolist()
    if not rows:
        return None
    band = canvas[rows[0] : rows[-1] + 1]
    cols = ((band.amax((0, 2)) != 0) | (band.amin((0, 2)) != 0)).nonzero().flatten().tolist()
    return rows[0], rows[-1] + 1, cols[0], cols[-1] + 1


def _span(values: np.ndarray, size: int) -> tuple[int, int]:
    """The pixels `[first, last)` (clamped to `[0, size)`) whose centres `i + 0.5` lie within `values`' range,
    one more either side against rounding."""
    first = int(np.floor(values.min() - 0.5)) - 1
    last = int(np.ceil(values.max() - 0.5)) + 2
    return max(first, 0), min(last, size)


def place_face(
    face: torch.Tensor,
    origin: tuple[int, int],
    size: tuple[int, int],
    placement: np.ndarray | torch.Tensor,
    dtype: torch.dtype | None = None,
) -> tuple[slice, slice, torch.Tensor] | None:
    """Where the placed canvas can be non-black and its values there, `(rows, cols, values)`, from the box of a
    black `size = (H, W)` canvas that holds every non-black pixel: `face`, `[h, w, C]` at `origin = (top, left)`.
    None when nothing of it lands on the canvas.

    A translation moves the box by whole pixels. Otherwise each output pixel is a bilinear sample, which reads
    the four pixels around its source point: it is non-black only where that point lies within half a pixel of
    the box, and exactly 0 elsewhere, so only the placed image of the box is resampled, from the box alone,
    on the face's device, in `dtype` (by default `resample_dtype` of that device).
    """
    height, width = size
    top, left = origin
    bottom, right = top + face.shape[0], left + face.shape[1]
    shift = whole_pixel_shift(placement)
    if shift is not None:
        dx, dy = shift
        r0, r1, c0, c1 = max(top + dy, 0), min(bottom + dy, height), max(left + dx, 0), min(right + dx, width)
        if r0 >= r1 or c0 >= c1:
            return None
        return slice(r0, r1), slice(c0, c1), face[r0 - top - dy : r1 - top - dy, c0 - left - dx : c1 - left - dx]
    row = np.asarray(placement, dtype=np.float64)
    matrix, offset = row[:4].reshape(2, 2), row[4:]
    reach = np.array([[x, y] for x in (left - 0.5, right + 0.5) for y in (top - 0.5, bottom + 0.5)])
    corners = reach @ matrix.T + offset  # where the readable box lands on the output canvas
    (c0, c1), (r0, r1) = _span(corners[:, 0], width), _span(corners[:, 1], height)
    if c0 >= c1 or r0 >= r1:
        return None
    # each output pixel centre c is read from the source point A^-1 (c - t), in the box's own pixels
    dtype = resample_dtype(face.device) if dtype is None else dtype
    inverse = np.linalg.inv(matrix)
    ys, xs = torch.meshgrid(
        torch.arange(r0, r1, dtype=dtype, device=face.device) + 0.5,
        torch.arange(c0, c1, dtype=dtype, device=face.device) + 0.5,
        indexing="ij",
    )
    dx, dy = xs - offset[0], ys - offset[1]
    source_x = dx * inverse[0, 0] + dy * inverse[0, 1] - left
    source_y = dx * inverse[1, 0] + dy * inverse[1, 1] - top
    # align_corners=False: pixel i's centre is (2i + 1) / w - 1; beyond the box the padding is black, as the canvas is
    grid = torch.stack([2.0 * source_x / face.shape[1] - 1.0, 2.0 * source_y / face.shape[0] - 1.0], dim=-1)
    image = face.permute(2, 0, 1).unsqueeze(0).to(dtype)
    placed = torch.nn.functional.grid_sample(
        image, grid.unsqueeze(0), mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return slice(r0, r1), slice(c0, c1), placed[0].permute(1, 2, 0).to(face.dtype)


def resample_dtype(device: torch.device) -> torch.dtype:
    """What `place_face` resamples in on `device`: float64 on the CPU, float32 on accelerators (some have no
    float64, and the rest run it slowly; a float32 sample is off by under 1e-4 at real sizes, a fifth of
    what a half-precision hint can hold)."""
    return torch.float64 if device.type == "cpu" else torch.float32
