"""The whole-body estimator's geometry and decoding: affine crops, SimCC vectors → keypoints, back to the frame."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from tests.fixtures.tiny_onnx import wholebody_onnx
from xdyna_core.pose.dwpose_estimator import (
    PIXEL_MEAN,
    PIXEL_STD,
    CropTransform,
    WholebodyEstimator,
    crop_people,
    decode_simcc,
    normalise,
)
from xdyna_core.pose.onnx_runtime import OnnxModel


def pixels(height: int, width: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, height, width), generator=g).float()


def test_crop_is_the_padded_box_at_the_input_aspect():
    wide = CropTransform.from_box([100, 200, 300, 300])  # 200×100 → 250×125 → wider than 3:4, so taller
    assert wide.centre == (200.0, 250.0)
    np.testing.assert_allclose(wide.size, [250.0, 250.0 / 0.75])
    tall = CropTransform.from_box([0, 0, 60, 400])  # 75×500 → narrower than 3:4, so wider
    np.testing.assert_allclose(tall.size, [500.0 * 0.75, 500.0])
    assert wide.scale == pytest.approx(288 / 250.0)


def test_crop_transform_round_trips_and_maps_the_region_onto_the_input():
    crop = CropTransform.from_box([37.5, 12.25, 181.0, 390.5])
    points = np.array([[37.5, 12.25], [181.0, 390.5], [99.9, 250.1]])
    np.testing.assert_allclose(crop.to_source(crop.to_input(points)), points, atol=1e-9)
    centre, half = np.array(crop.centre), np.array(crop.size) / 2.0
    np.testing.assert_allclose(crop.to_input(np.stack([centre - half, centre + half])), [[0, 0], [288, 384]], atol=1e-9)


def test_crop_matches_opencv_warp_affine():
    frame = pixels(300, 400, seed=3)
    crop = CropTransform.from_box([50.3, 20.7, 170.9, 260.2])
    ours = crop_people(frame, [crop])[0].numpy().transpose(1, 2, 0)
    s = crop.scale
    matrix = np.array([[s, 0, 144 - s * crop.centre[0]], [0, s, 192 - s * crop.centre[1]]])
    image = frame.numpy().transpose(1, 2, 0).astype(np.uint8)
    expected = cv2.warpAffine(image, matrix, (288, 384), flags=cv2.INTER_LINEAR).astype(np.float32)
    diff = np.abs(ours - expected)
    assert diff.max() <= 2.0 and diff.mean() < 0.3  # OpenCV samples at 1/32 pixel in fixed point


def test_crop_at_unit_scale_is_an_exact_shift_with_black_outside():
    frame = pixels(500, 400, seed=4)
    crop = CropTransform((200.0, 150.0), (288.0, 384.0))  # frame rows -42…341, columns 56…343
    out = crop_people(frame, [crop, CropTransform((144.0, 192.0), (288.0, 384.0))])
    assert out.shape == (2, 3, 384, 288)
    np.testing.assert_array_equal(out[0, :, 42:, :].numpy(), frame[:, :342, 56:344].numpy())
    assert (out[0, :, :42] == 0).all()
    np.testing.assert_array_equal(out[1].numpy(), frame[:, :384, :288].numpy())


def test_normalisation_is_rgb_mean_std():
    inputs = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1).expand(1, 3, 2, 2) + torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
    np.testing.assert_allclose(normalise(inputs), np.ones((1, 3, 2, 2)), atol=1e-6)


def test_known_simcc_vectors_give_known_keypoints_exactly():
    simcc_x = np.full((2, 3, 576), -1.0, np.float32)
    simcc_y = np.full((2, 3, 768), -1.0, np.float32)
    simcc_x[0, 0, 101], simcc_y[0, 0, 333] = 0.9, 0.7  # → (50.5, 166.5), score min(0.9, 0.7)
    simcc_x[0, 1, 0], simcc_y[0, 1, 767] = 0.4, 0.8  # → (0, 383.5), score 0.4
    simcc_x[1, 0, [10, 20]], simcc_y[1, 0, 5] = 0.5, 0.5  # ties: the first maximum
    # keypoint (0, 2) and (1, 1..2): nothing above 0 → location -1 before the division, as released
    locs, scores = decode_simcc(simcc_x, simcc_y, 2.0)
    np.testing.assert_array_equal(locs[0, 0], [50.5, 166.5])
    np.testing.assert_array_equal(locs[0, 1], [0.0, 383.5])
    np.testing.assert_array_equal(locs[1, 0], [5.0, 2.5])
    np.testing.assert_array_equal(locs[0, 2], [-0.5, -0.5])
    np.testing.assert_array_equal(scores[0], np.array([0.7, 0.4, -1.0], np.float32))
    assert scores.dtype == np.float32 and locs.shape == (2, 3, 2)


def simcc_peaks(points: np.ndarray, width: int = 288, height: int = 384):
    x = np.zeros((len(points), 2 * width), np.float32)
    y = np.zeros((len(points), 2 * height), np.float32)
    for k, (px, py) in enumerate(points):
        x[k, int(round(2 * px))] = y[k, int(round(2 * py))] = 1.0 + k
    return x, y


@pytest.mark.parametrize("dynamic_batch", [True, False])
def test_constant_simcc_model_maps_through_the_inverse_crop(tmp_path, dynamic_batch):
    points = np.array([[0.0, 0.0], [143.5, 191.0], [287.5, 383.5]] + [[10.0, 20.0]] * 130)
    path = wholebody_onnx(tmp_path / "pose.onnx", dynamic_batch, *simcc_peaks(points))
    estimator = WholebodyEstimator(OnnxModel.load(path, ["CPUExecutionProvider"]))
    boxes = [
        np.array([[10, 20, 110, 220], [300, 40, 340, 100]], np.float32),
        np.zeros((0, 4)),
        np.array([[0, 0, 5, 5]]),
    ]
    results = estimator(torch.zeros(3, 3, 256, 512), boxes, max_batch=2)
    assert [r[0].shape for r in results] == [(2, 133, 2), (0, 133, 2), (1, 133, 2)]
    for (keypoints, scores), frame_boxes in zip(results, boxes):
        for person, box in enumerate(frame_boxes):
            expected = CropTransform.from_box(box).to_source(points)
            np.testing.assert_allclose(keypoints[person], expected, atol=1e-4)
            np.testing.assert_array_equal(scores[person, :3], [1.0, 2.0, 3.0])


def test_estimator_reads_its_input_size_and_split_ratio_from_the_file(tmp_path):
    path = wholebody_onnx(tmp_path / "small.onnx", input_size=(192, 256), keypoints=17)
    estimator = WholebodyEstimator(OnnxModel.load(path, ["CPUExecutionProvider"]))
    assert estimator.input_size == (192, 256)
    frame = torch.zeros(1, 3, 400, 400)
    frame[0, 0, 150, 220] = 255.0  # a red spot inside the crop
    ((keypoints, scores),) = estimator(frame, [np.array([[170.0, 50.0, 270.0, 250.0]])])
    assert keypoints.shape == (1, 17, 2) and (scores > 2.0).all()
    crop = CropTransform.from_box([170.0, 50.0, 270.0, 250.0], (192, 256))
    spot = np.round(crop.to_input(np.array([220.0, 150.0])))  # the nearest input pixel the spot reaches
    np.testing.assert_allclose(keypoints[0, 0], crop.to_source(spot), atol=1e-4)
