"""Crop and resize to the generation size, against the official preprocessing re-run with OpenCV."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from tests.oracles.official_preprocess import official_driving_crop, official_reference_crop
from xdyna_core.image_prep import CropBox, aspect_crop_box, fit_to_size, map_points_through_fit, resize_images


def random_uint8(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Smooth content: bilinear rounding differences stay at one grey level instead of amplifying noise.
    small = rng.integers(0, 256, size=(max(2, h // 7), max(2, w // 7), 3)).astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def to_image(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(arr).float().div(255.0)[None]


# Source sizes chosen so the official float arithmetic equals exact integer arithmetic.
CASES = [((1080, 1920), (512, 896)), ((900, 600), (512, 896)), ((640, 480), (64, 64)), ((300, 500), (120, 80))]


@pytest.mark.parametrize(("src", "dst"), CASES)
@pytest.mark.parametrize("anchor", ["center", "top_biased"])
def test_fit_matches_official_opencv_preprocessing(src, dst, anchor):
    (h, w), (width, height) = src, dst
    arr = random_uint8(h, w, seed=h + w)
    expected = (official_reference_crop if anchor == "center" else official_driving_crop)(arr, height, width)
    ours, box = fit_to_size(to_image(arr), width, height, anchor=anchor)
    assert ours.shape == (1, height, width, 3)
    diff = (ours[0] * 255.0 - torch.from_numpy(expected).float()).abs()
    # cv2 works in 11-bit fixed point on uint8: allow one grey level plus rounding.
    assert diff.max().item() <= 1.5, (box, diff.max().item())
    assert diff.mean().item() < 0.6


def test_crop_box_arithmetic_is_exact():
    assert aspect_crop_box(1000, 1000, 512, 896, "center") == CropBox(left=214, top=0, width=571, height=1000)
    # taller than target: rows trimmed; centre splits evenly, top-biased keeps a quarter above
    assert aspect_crop_box(512, 1200, 512, 896, "center") == CropBox(0, 152, 512, 896)
    assert aspect_crop_box(512, 1200, 512, 896, "top_biased") == CropBox(0, 76, 512, 896)
    # same aspect: nothing trimmed (the official float expression can drop a row here; we do not)
    assert aspect_crop_box(512, 896, 512, 896, "center") == CropBox(0, 0, 512, 896)
    assert aspect_crop_box(1024, 1792, 512, 896, "top_biased") == CropBox(0, 0, 1024, 1792)


def test_same_size_is_identity_and_batches_are_independent():
    frames = torch.rand(3, 40, 24, 3, generator=torch.Generator().manual_seed(0))
    same, box = fit_to_size(frames, 24, 40)
    assert box == CropBox(0, 0, 24, 40)
    assert torch.equal(same, frames)
    fitted, _ = fit_to_size(frames, 16, 16)
    for i in range(3):
        alone, _ = fit_to_size(frames[i : i + 1], 16, 16)
        assert torch.equal(fitted[i : i + 1], alone)


@pytest.mark.parametrize("method", ["bilinear", "area", "bicubic", "nearest"])
def test_resize_methods_keep_range_and_shape(method):
    images = torch.rand(2, 50, 70, 3, generator=torch.Generator().manual_seed(1))
    out = resize_images(images, 33, 21, method)
    assert out.shape == (2, 21, 33, 3)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_points_follow_the_fit():
    """A one-pixel dot moved through the fit lands where the mapped coordinate says."""
    image = torch.zeros(1, 300, 200, 3)
    y, x = 180, 70
    image[0, y - 2 : y + 3, x - 2 : x + 3] = 1.0
    fitted, box = fit_to_size(image, 100, 100, anchor="top_biased")
    mapped = map_points_through_fit(torch.tensor([[float(x), float(y)]]), box, 100, 100)[0]
    weights = fitted[0, :, :, 0]
    ys, xs = torch.meshgrid(torch.arange(100.0), torch.arange(100.0), indexing="ij")
    centroid = torch.stack([(xs * weights).sum() / weights.sum(), (ys * weights).sum() / weights.sum()])
    assert torch.allclose(centroid, mapped, atol=0.05)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"anchor": "bottom"}, "crop anchor"),
        ({"method": "lanczos"}, "resize method"),
    ],
)
def test_bad_options_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fit_to_size(torch.rand(1, 8, 8, 3), 8, 8, **kwargs)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="batch, height, width, channels"):
        fit_to_size(torch.rand(8, 8, 3), 8, 8)
    with pytest.raises(ValueError, match="positive"):
        aspect_crop_box(0, 8, 8, 8)
