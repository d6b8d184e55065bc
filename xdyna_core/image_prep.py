"""Fitting images to the generation size W×H: crop to the target aspect, then resize.

The official pipeline prepares the reference with a centred crop (`imread_resize_crop`) and the driving
frames with a top-biased crop (`crop2ratio`: vertical offset a quarter of the surplus, keeping heads in
frame), both followed by cv2's bilinear resize without antialiasing. Crop sizes here use exact integer
arithmetic; the official float expressions (e.g. `int(w / (W / H))`) can land one pixel short on
same-aspect inputs, which we do not reproduce.

Images are ComfyUI-style tensors `[B, H, W, C]` with values in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import torch
import torch.nn.functional as F

CropAnchor = Literal["center", "top_biased"]
ResizeMethod = Literal["bilinear", "area", "bicubic", "nearest"]

CROP_ANCHORS: tuple[str, ...] = ("center", "top_biased")
RESIZE_METHODS: tuple[str, ...] = ("bilinear", "area", "bicubic", "nearest")


@dataclass(frozen=True)
class CropBox:
    """A crop window in source pixels: columns `[left, left + width)`, rows `[top, top + height)`."""

    left: int
    top: int
    width: int
    height: int


def aspect_crop_box(src_width: int, src_height: int, width: int, height: int, anchor: CropAnchor = "center") -> CropBox:
    """The largest window of aspect `width:height` inside a `src_width×src_height` image.

    Args:
        src_width, src_height: size of the source image.
        width, height: target size; only their ratio matters here.
        anchor: `center` splits the surplus evenly (reference image, as released); `top_biased` keeps a
            quarter of the vertical surplus above the window (driving frames, as released).
    """
    if min(src_width, src_height, width, height) < 1:
        raise ValueError(f"sizes must be positive, got source {src_width}x{src_height} and target {width}x{height}")
    if anchor not in CROP_ANCHORS:
        raise ValueError(f"crop anchor must be one of {CROP_ANCHORS}, got {anchor!r}")
    if src_width * height > width * src_height:  # wider than the target: trim columns
        crop_w, crop_h = max(1, src_height * width // height), src_height
    else:  # taller (or equal): trim rows
        crop_w, crop_h = src_width, max(1, src_width * height // width)
    left = (src_width - crop_w) // 2
    top = (src_height - crop_h) // (4 if anchor == "top_biased" else 2)
    return CropBox(left, top, crop_w, crop_h)


def resize_images(images: torch.Tensor, width: int, height: int, method: ResizeMethod = "bilinear") -> torch.Tensor:
    """Resize `[B, H, W, C]` images to `width×height`.

    `bilinear` samples at pixel centres without antialiasing, like cv2.INTER_LINEAR used by the official
    code; `area` averages source pixels (better when shrinking a lot); `bicubic` is clamped to [0, 1].
    """
    if method not in RESIZE_METHODS:
        raise ValueError(f"resize method must be one of {RESIZE_METHODS}, got {method!r}")
    if images.shape[1] == height and images.shape[2] == width:
        return images
    x = _interpolate(images.movedim(-1, 1), height, width, method)
    if method == "bicubic":
        x = x.clamp(0.0, 1.0)
    return x.movedim(1, -1)


def _interpolate(x: torch.Tensor, height: int, width: int, method: ResizeMethod) -> torch.Tensor:
    """The linear part of `resize_images` on `[B, C, H, W]` (bicubic unclamped)."""
    if method in ("bilinear", "bicubic"):
        return F.interpolate(x, size=(height, width), mode=method, align_corners=False, antialias=False)
    return F.interpolate(x, size=(height, width), mode=method)


def fit_to_size(
    images: torch.Tensor,
    width: int,
    height: int,
    anchor: CropAnchor = "center",
    method: ResizeMethod = "bilinear",
) -> tuple[torch.Tensor, CropBox]:
    """Crop `[B, H, W, C]` images to the aspect of `width×height` and resize them to exactly that size.

    Returns the fitted images and the crop window, so that keypoints measured on the source frames can
    follow the same transform (see `map_points_through_fit`).
    """
    if images.ndim != 4:
        raise ValueError(f"images must be [batch, height, width, channels], got shape {tuple(images.shape)}")
    box = aspect_crop_box(images.shape[2], images.shape[1], width, height, anchor)
    cropped = images[:, box.top : box.top + box.height, box.left : box.left + box.width, :]
    return resize_images(cropped, width, height, method), box


@lru_cache(maxsize=16)
def resize_taps(size_in: int, size_out: int, method: ResizeMethod = "bilinear") -> tuple[torch.Tensor, torch.Tensor]:
    """What `resize_images` computes along one axis, as taps: output pixel j is
    `sum_k weight[j, k] * source[index[j, k]]` (`[size_out, K]` int64 and float32 on the CPU; cached, not to be
    written to).

    Every method is separable (a product of one weight per axis, before bicubic's clamp), so the weights are
    read off the resize itself, applied to unit impulses; a row with fewer than K taps repeats its largest
    with weight 0.
    """
    if method not in RESIZE_METHODS:
        raise ValueError(f"resize method must be one of {RESIZE_METHODS}, got {method!r}")
    impulses = torch.eye(size_in).view(size_in, 1, 1, size_in)  # impulse i along the width, a 1-row image
    weights = _interpolate(impulses, 1, size_out, method)[:, 0, 0, :].T  # [out, in]: source i's share in pixel j
    count = max(int((weights != 0).sum(1).max()), 1)
    index = weights.abs().topk(count, dim=1).indices  # the largest first: a source pixel the row reads
    weight = weights.gather(1, index)
    unused = weight == 0
    index = torch.where(unused, index[:, :1], index)  # read no pixel outside what the row depends on
    return index, torch.where(unused, 0.0, weight)


def fit_region(
    image: torch.Tensor,
    width: int,
    height: int,
    rows: tuple[int, int],
    cols: tuple[int, int],
    anchor: CropAnchor = "center",
    method: ResizeMethod = "bilinear",
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Rows `[r0, r1)` and columns `[c0, c1)` of the `[H, W, C]` image fitted to `width×height` (`fit_to_size`),
    as `[r1 - r0, c1 - c0, C]` float32 on `device`: only the source pixels those output pixels read travel
    there, and the resize runs there (the same values to float32 rounding; exactly the same when no resize is
    needed)."""
    (r0, r1), (c0, c1) = rows, cols
    if not (0 <= r0 < r1 <= height and 0 <= c0 < c1 <= width):
        raise ValueError(f"rows {rows} and columns {cols} must be a non-empty part of a {width}x{height} frame")
    box = aspect_crop_box(image.shape[1], image.shape[0], width, height, anchor)
    source = image[box.top : box.top + box.height, box.left : box.left + box.width]
    if (box.width, box.height) == (width, height):
        return source[r0:r1, c0:c1].to(device=device, dtype=torch.float32)
    y_index, y_weight = (t[r0:r1] for t in resize_taps(box.height, height, method))
    x_index, x_weight = (t[c0:c1] for t in resize_taps(box.width, width, method))
    y0, y1, x0, x1 = int(y_index.min()), int(y_index.max()) + 1, int(x_index.min()), int(x_index.max()) + 1
    source = source[y0:y1, x0:x1].to(device=device, dtype=torch.float32)
    y_index, y_weight = (y_index - y0).to(device), y_weight.to(device)
    x_index, x_weight = (x_index - x0).to(device), x_weight.to(device)
    mixed = sum(y_weight[:, k, None, None] * source[y_index[:, k]] for k in range(y_index.shape[1]))
    out = sum(x_weight[None, :, k, None] * mixed[:, x_index[:, k]] for k in range(x_index.shape[1]))
    return out.clamp(0.0, 1.0) if method == "bicubic" else out


def map_points_through_fit(points: torch.Tensor, box: CropBox, width: int, height: int) -> torch.Tensor:
    """Map pixel coordinates `[..., 2]` (x, y) of a source frame into the fitted `width×height` frame.

    Uses the pixel-centre convention of the resize: a source point at the centre of crop pixel i lands at
    the centre of output pixel `(i + 0.5) * scale - 0.5`.
    """
    scale = torch.tensor([width / box.width, height / box.height], dtype=points.dtype, device=points.device)
    origin = torch.tensor([box.left, box.top], dtype=points.dtype, device=points.device)
    return (points - origin + 0.5) * scale - 0.5
