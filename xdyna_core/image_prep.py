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
    x = images.movedim(-1, 1)
    if method in ("bilinear", "bicubic"):
        x = F.interpolate(x, size=(height, width), mode=method, align_corners=False, antialias=False)
    else:
        x = F.interpolate(x, size=(height, width), mode=method)
    if method == "bicubic":
        x = x.clamp(0.0, 1.0)
    return x.movedim(1, -1)


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


def map_points_through_fit(points: torch.Tensor, box: CropBox, width: int, height: int) -> torch.Tensor:
    """Map pixel coordinates `[..., 2]` (x, y) of a source frame into the fitted `width×height` frame.

    Uses the pixel-centre convention of the resize: a source point at the centre of crop pixel i lands at
    the centre of output pixel `(i + 0.5) * scale - 0.5`.
    """
    scale = torch.tensor([width / box.width, height / box.height], dtype=points.dtype, device=points.device)
    origin = torch.tensor([box.left, box.top], dtype=points.dtype, device=points.device)
    return (points - origin + 0.5) * scale - 0.5
