"""YOLOX person detection as DWPose runs it: letterbox input, grid decoding, NMS, boxes back in frame pixels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from tests.fixtures.tiny_onnx import yolox_raw_output
from xdyna_core.pose.dwpose_detector import (
    Letterbox,
    decode_yolox,
    letterbox,
    nms,
    people_from_yolox,
    to_pixels,
    yolox_grid,
)


def random_frames(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, height, width, 3), generator=g).float() / 255.0


def test_letterbox_geometry_as_released():
    box = Letterbox.fit(512, 896)
    assert box.ratio == pytest.approx(640 / 896)
    assert box.resized_size == (int(512 * 640 / 896), 640) == (365, 640)
    canvases, same = letterbox(to_pixels(random_frames(2, 896, 512)))
    assert same == box and canvases.shape == (2, 3, 640, 640) and canvases.dtype == np.float32
    assert (canvases[:, :, :, 365:] == 114.0).all()  # padding right of the resized frame only
    assert (canvases == np.round(canvases)).all() and canvases.max() <= 255.0


def test_letterbox_feeds_bgr_and_keeps_unit_ratio_frames_exact():
    frames = random_frames(1, 480, 640, seed=1)
    canvases, box = letterbox(to_pixels(frames))
    assert box.ratio == 1.0
    rgb = (frames[0] * 255.0).round().numpy()
    np.testing.assert_array_equal(canvases[0, :, :480].transpose(1, 2, 0), rgb[..., ::-1])  # BGR
    assert (canvases[0, :, 480:] == 114.0).all()  # padding below


@pytest.mark.parametrize(("height", "width"), [(896, 512), (240, 320), (1080, 1920)])
def test_letterbox_resize_matches_opencv(height, width):
    frames = random_frames(1, height, width, seed=2)
    canvases, box = letterbox(to_pixels(frames))
    rgb = (frames[0] * 255.0).round().numpy().astype(np.uint8)
    expected = cv2.resize(rgb, box.resized_size, interpolation=cv2.INTER_LINEAR)
    new_w, new_h = box.resized_size
    ours = canvases[0, ::-1, :new_h, :new_w].transpose(1, 2, 0)
    diff = np.abs(ours - expected.astype(np.float32))
    assert diff.max() <= 1.0  # OpenCV interpolates in fixed point; we round once


def test_letterbox_round_trip_of_points():
    box = Letterbox.fit(1920, 1080)
    points = np.array([[0.0, 0.0], [1919.0, 1079.0], [123.25, 456.5]])
    np.testing.assert_allclose(box.to_source(box.to_input(points)), points, rtol=0, atol=1e-9)
    np.testing.assert_allclose(box.to_input(points)[1], [1919.0 / 3.0, 1079.0 / 3.0])


def test_a_spot_lands_where_the_letterbox_says():
    frames = torch.zeros(1, 120, 160, 3)
    frames[0, 30:34, 100:104] = 1.0  # a 4×4 white square; the frame is scaled 4×
    canvases, box = letterbox(to_pixels(frames))
    ys, xs = np.nonzero(canvases[0, 0] > 128)
    centre = box.to_source(np.array([xs.mean(), ys.mean()]))
    np.testing.assert_allclose(centre, [101.5 + 0.375, 31.5 + 0.375], atol=0.01)  # half-pixel shift of 4× upscaling


def test_grid_order_matches_yolox_output_rows():
    cells, strides = yolox_grid()
    assert cells.shape == (8400, 2) and strides.shape == (8400, 1)
    np.testing.assert_array_equal(cells[[0, 1, 79, 80]], [[0, 0], [1, 0], [79, 0], [0, 1]])
    np.testing.assert_array_equal(cells[[6400, 6441, 8000, 8399]], [[0, 0], [1, 1], [0, 0], [19, 19]])
    assert strides[6399, 0] == 8 and strides[6400, 0] == 16 and strides[8000, 0] == 32


def test_decoding_known_cells_gives_known_boxes():
    raw = np.zeros((8400, 85), np.float32)
    # stride 8, column 3, row 5: centre (3.5 * 8, 5.25 * 8), size 4 × 8 by 2 × 8
    raw[5 * 80 + 3, :6] = [0.5, 0.25, np.log(4.0), np.log(2.0), 0.8, 0.5]
    # stride 16, column 10, row 2; stride 32, column 19, row 0
    raw[6400 + 2 * 40 + 10, :6] = [0.0, 1.0, 0.0, np.log(3.0), 1.0, 0.9]
    raw[8000 + 19, :6] = [0.25, 0.75, np.log(0.5), 0.0, 0.6, 1.0]
    boxes, scores = decode_yolox(raw)
    np.testing.assert_allclose(boxes[403], [28 - 16, 42 - 8, 28 + 16, 42 + 8], atol=1e-4)
    np.testing.assert_allclose(boxes[6490], [160 - 8, 48 - 24, 160 + 8, 48 + 24], atol=1e-4)
    np.testing.assert_allclose(boxes[8019], [616 - 8, 24 - 16, 616 + 8, 24 + 16], atol=1e-4)
    np.testing.assert_allclose(scores[[403, 6490, 8019]], [0.4, 0.9, 0.6], atol=1e-6)
    assert np.count_nonzero(scores) == 3


def test_decoding_rejects_other_layouts():
    with pytest.raises(ValueError, match=r"yolox_l\.onnx of yzd-v/DWPose"):
        decode_yolox(np.zeros((6300, 85), np.float32))


def test_nms_counts_pixels_inclusively():
    boxes = np.array([[0, 0, 9, 9], [0, 5, 9, 14], [0, 1, 9, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95], np.float32)
    # box 1 overlaps box 0 by 5 of 10 rows: IoU 50 / 150 = 0.33 (kept); box 2 by 9: 90 / 110 = 0.82 (dropped)
    np.testing.assert_array_equal(nms(boxes, scores, 0.45), [3, 0, 1])
    np.testing.assert_array_equal(nms(boxes, scores, 0.3), [3, 0])


def test_people_are_thresholded_best_first_and_mapped_to_the_frame():
    input_boxes = np.array([[80, 60, 120, 140], [280, 150, 320, 250], [480, 250, 520, 350]], np.float32)
    raw = yolox_raw_output(input_boxes, [0.5, 0.95, 0.25])
    box = Letterbox.fit(1280, 960)  # ratio 0.5
    boxes, scores = people_from_yolox(raw, box)
    np.testing.assert_allclose(scores, [0.95, 0.5], atol=1e-6)
    np.testing.assert_allclose(boxes, input_boxes[[1, 0]] * 2.0, atol=1e-3)
    assert people_from_yolox(raw, box, score_threshold=0.99)[0].shape == (0, 4)
