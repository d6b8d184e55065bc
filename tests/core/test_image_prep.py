"""Crop and resize to the generation size, against the official preprocessing re-run with OpenCV."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from tests.oracles.official_preprocess import official_driving_crop, official_reference_crop
from xdyna_core.image_prep import (
    RESIZE_METHODS,
    CropBox,
    aspect_crop_box,
    fit_region,
    fit_to_size,
    map_points_through_fit,
    resize_images,
    resize_taps,
)


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


def influence(image: torch.Tensor, width: int, height: int, rows, cols, anchor: str, method: str) -> torch.Tensor:
    """`[H, W]` mask of the source pixels that the fitted frame's rows x cols depend on (autograd through the
    whole-frame fit)."""
    source = image.clone().requires_grad_(True)
    fitted, _ = fit_to_size(source[None], width, height, anchor=anchor, method=method)
    region = fitted[0, rows[0] : rows[1], cols[0] : cols[1]]
    (region * torch.rand(region.shape, generator=torch.Generator().manual_seed(0))).sum().backward()
    return source.grad.abs().sum(-1) > 0


@pytest.mark.parametrize("method", RESIZE_METHODS)
@pytest.mark.parametrize(
    ("src", "anchor"), [((1920, 1080), "top_biased"), ((720, 1280), "center"), ((60, 40), "center")]
)
def test_a_fitted_region_is_that_part_of_the_fitted_frame_read_from_the_pixels_it_needs(method, src, anchor):
    """`fit_region` gives rows x cols of `fit_to_size`'s frame (to float32 rounding) for every method, down- and
    upscaled, at the edges too; a source pixel the region does not depend on is never read (NaN there stays
    out)."""
    (h, w), (width, height) = src, (48, 84)
    gen = torch.Generator().manual_seed(h)
    image = torch.rand(h, w, 3, generator=gen)
    fitted, _ = fit_to_size(image[None], width, height, anchor=anchor, method=method)
    for rows, cols in [((0, height), (0, width)), ((10, 37), (5, 19)), ((height - 1, height), (width - 3, width))]:
        region = fit_region(image, width, height, rows, cols, anchor, method)
        assert region.shape == (rows[1] - rows[0], cols[1] - cols[0], 3) and region.dtype == torch.float32
        expected = fitted[0, rows[0] : rows[1], cols[0] : cols[1]]
        torch.testing.assert_close(region, expected, rtol=0, atol=2e-6)
        poisoned = image.masked_fill(~influence(image, width, height, rows, cols, anchor, method)[..., None], torch.nan)
        torch.testing.assert_close(fit_region(poisoned, width, height, rows, cols, anchor, method), region)


def test_a_region_needing_no_resize_is_the_frame_s_own_pixels():
    image = torch.rand(90, 48, 3, generator=torch.Generator().manual_seed(3))
    box = aspect_crop_box(48, 90, 48, 84, "top_biased")  # a crop of exactly 48 x 84 pixels: no resize
    assert (box.width, box.height) == (48, 84)
    region = fit_region(image, 48, 84, (3, 50), (7, 40), "top_biased")
    assert torch.equal(region, image[box.top + 3 : box.top + 50, box.left + 7 : box.left + 40])
    with pytest.raises(ValueError, match=r"non-empty part of a 48x84 frame"):
        fit_region(image, 48, 84, (80, 90), (0, 4))


@pytest.mark.parametrize("method", RESIZE_METHODS)
def test_resize_taps_restate_the_resize_along_one_axis(method):
    """Output pixel j is sum_k weight[j, k] * source[index[j, k]]: applied to a random row that is the resize."""
    for size_in, size_out in [(1920, 512), (405, 512), (7, 7), (3, 10)]:
        index, weight = resize_taps(size_in, size_out, method)
        row = torch.rand(size_in, generator=torch.Generator().manual_seed(size_in))
        expected = resize_images(row.view(1, 1, size_in, 1), size_out, 1, method).flatten()
        restated = (weight * row[index]).sum(1)
        torch.testing.assert_close(
            restated.clamp(0, 1) if method == "bicubic" else restated, expected, rtol=0, atol=1e-6
        )
        assert index.shape == weight.shape and index.shape[0] == size_out
        assert ((index >= 0) & (index < size_in)).all()
    with pytest.raises(ValueError, match="resize method"):
        resize_taps(4, 2, "lanczos")
