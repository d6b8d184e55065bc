"""DWPose end to end on tiny ONNX stand-ins: detection → crops → keypoints in frame pixels, over a video."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from tests.fixtures.tiny_onnx import dwpose_folder, wholebody_onnx, yolox_onnx
from xdyna_core.pose.dwpose import DWPose
from xdyna_core.pose.onnx_runtime import CPU_PROVIDER, OnnxModel, choose_providers

RED, BLUE = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)


def frames_with(spots: list[list[tuple[int, int, tuple[float, float, float]]]], height=480, width=640, radius=0):
    """Black frames with coloured spots `(x, y, rgb)`, single pixels or squares of side 2 radius + 1."""
    frames = torch.zeros(len(spots), height, width, 3)
    for i, frame_spots in enumerate(spots):
        for x, y, colour in frame_spots:
            frames[i, y - radius : y + radius + 1, x - radius : x + radius + 1] = torch.tensor(colour)
    return frames


@pytest.fixture(scope="module", params=[True, False], ids=["dynamic-batch", "fixed-batch-1"])
def dwpose(request, tmp_path_factory):
    folder = dwpose_folder(tmp_path_factory.mktemp("dwpose"), dynamic_batch=request.param)
    return DWPose.load(folder / "yolox_l.onnx", folder / "dw-ll_ucoco_384.onnx", provider="cpu")


def test_keypoints_land_on_the_spot_in_frame_pixels(dwpose):
    # The tiny detector reports its person when the frame has a blue pixel (it reads BGR channel 0); the tiny
    # estimator puts every keypoint on the reddest pixel of its crop (RGB channel 0). The crop of the
    # detector's box is 288×384 at unit scale, so the spot comes back exactly.
    frames = frames_with([[(250, 200, RED), (600, 470, BLUE)], [(300, 350, RED), (5, 5, BLUE)]])
    found = dwpose.detect(frames, batch_size=2)
    assert [len(p) for p in found] == [1, 1]
    np.testing.assert_allclose(found[0].keypoints[0], np.tile([250.0, 200.0], (133, 1)), atol=1e-3)
    np.testing.assert_allclose(found[1].keypoints[0], np.tile([300.0, 350.0], (133, 1)), atol=1e-3)
    normalised_red = (255.0 - 123.675) / 58.395
    np.testing.assert_allclose(found[0].scores, normalised_red, rtol=1e-5)
    np.testing.assert_allclose(found[0].boxes, [[160.8, 80.4, 391.2, 387.6]], atol=1e-3)


def test_channel_orders_as_the_models_were_trained(dwpose):
    # A detector fed RGB would find a person in the red-only frame; an estimator fed BGR would put keypoints
    # on the blue spot of the second frame (it has no red, so every keypoint score must stay ≤ 0).
    frames = frames_with([[(250, 200, RED)], [(250, 200, BLUE)]])
    red_only, blue_only = dwpose.detect(frames)
    assert len(red_only) == 0 and len(blue_only) == 1
    assert (blue_only.scores <= 0.0).all()


def test_a_video_with_gaps_never_crashes_and_fills_them(dwpose):
    present = [(250, 200, RED), (600, 470, BLUE)]
    frames = frames_with([[], present, [], [(330, 260, RED), (0, 0, BLUE)], []])
    progress = []
    filled = dwpose(
        frames, missing="interpolate", batch_size=2, on_progress=lambda done, total: progress.append((done, total))
    )
    assert [len(p) for p in filled] == [1] * 5
    np.testing.assert_allclose(filled[2].keypoints[0, 0], [290.0, 230.0], atol=1e-3)
    np.testing.assert_allclose(filled[0].keypoints, filled[1].keypoints)
    assert progress[-1] == (5, 5) and all(b[0] > a[0] for a, b in zip(progress, progress[1:]))
    empty = dwpose(frames, missing="empty")
    assert [len(p) for p in empty] == [0, 1, 0, 1, 0]


def test_letterboxed_frames_of_another_size(tmp_path):
    # 512×896 frames are scaled by 640/896 into the detector; the box comes back scaled by 896/640.
    folder = dwpose_folder(tmp_path, boxes=[(100.0, 200.0, 250.0, 500.0)], scores=[0.8])
    dwpose = DWPose.load(folder / "yolox_l.onnx", folder / "dw-ll_ucoco_384.onnx", provider="cpu")
    frames = frames_with([[(240, 480, RED), (10, 10, BLUE)]], height=896, width=512, radius=2)
    (found,) = dwpose.detect(frames)
    np.testing.assert_allclose(found.boxes[0], np.array([100.0, 200.0, 250.0, 500.0]) * 896 / 640, atol=1e-3)
    # crop scale ≠ 1 and the spot is 5 px wide: argmax takes its first (top-left) input pixel
    np.testing.assert_allclose(found.keypoints[0, 0], [240.0, 480.0], atol=2.5)


def test_several_people_and_person_choice(tmp_path):
    boxes = [(20.0, 40.0, 180.0, 360.0), (400.0, 100.0, 600.0, 460.0)]  # the right one is larger
    folder = dwpose_folder(tmp_path, boxes=boxes, scores=[0.9, 0.6])
    dwpose = DWPose.load(folder / "yolox_l.onnx", folder / "dw-ll_ucoco_384.onnx", provider="cpu")
    frames = frames_with([[(100, 200, RED), (500, 300, RED), (2, 2, BLUE)]], radius=2)
    assert len(dwpose.detect(frames)[0]) == 2
    (largest,) = dwpose(frames, person="largest")
    (left,) = dwpose(frames, person="index", person_index=0)
    (both,) = dwpose(frames, person="all")
    np.testing.assert_allclose(largest.keypoints[0, 0], [500.0, 300.0], atol=2.5)  # first pixel of a 5-px spot
    np.testing.assert_allclose(left.keypoints[0, 0], [100.0, 200.0], atol=2.5)
    np.testing.assert_allclose(both.keypoints[:, 0], [[100.0, 200.0], [500.0, 300.0]], atol=2.5)


def test_fixed_batch_files_run_in_their_batch_size(tmp_path):
    model = OnnxModel.load(wholebody_onnx(tmp_path / "b2.onnx", dynamic_batch=False, fixed_batch=2), [CPU_PROVIDER])
    assert model.fixed_batch == 2
    x = np.random.default_rng(0).normal(size=(5, 3, 384, 288)).astype(np.float32)
    simcc_x, simcc_y = model.run(x, max_batch=8)  # 2 + 2 + 1 padded to 2
    assert simcc_x.shape == (5, 133, 576) and simcc_y.shape == (5, 133, 768)
    (single,) = model.run(x[4:], max_batch=1)[:1]
    np.testing.assert_array_equal(simcc_x[4:], single)
    dynamic = OnnxModel.load(yolox_onnx(tmp_path / "d.onnx"), [CPU_PROVIDER])
    assert dynamic.fixed_batch is None and dynamic.input_name == "images" and dynamic.output_names == ("output",)


def test_provider_choice_and_the_log_of_what_ran(tmp_path, caplog):
    available = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers("auto", available) == ["CUDAExecutionProvider", CPU_PROVIDER]
    assert choose_providers("auto", [CPU_PROVIDER]) == [CPU_PROVIDER]
    assert choose_providers("cpu", available) == [CPU_PROVIDER]
    assert choose_providers("CUDAExecutionProvider", available) == ["CUDAExecutionProvider", CPU_PROVIDER]
    with pytest.raises(ValueError, match="not available"):
        choose_providers("ROCMExecutionProvider", available)
    folder = dwpose_folder(tmp_path)
    with caplog.at_level(logging.INFO, logger="xdyna"):
        dwpose = DWPose.load(folder / "yolox_l.onnx", folder / "dw-ll_ucoco_384.onnx", provider="auto")
    assert "yolox_l.onnx runs on CPUExecutionProvider (dynamic batch)" in caplog.text
    assert dwpose.providers == {"yolox_l.onnx": [CPU_PROVIDER], "dw-ll_ucoco_384.onnx": [CPU_PROVIDER]}


def test_nan_frames_and_rgba_frames_are_read_safely(dwpose):
    frames = frames_with([[(250, 200, RED), (600, 470, BLUE)]])
    rgba = torch.cat([frames, torch.ones_like(frames[..., :1])], dim=-1)
    rgba[0, 0, 0, 0] = float("nan")
    (found,) = dwpose.detect(rgba)
    np.testing.assert_allclose(found.keypoints[0, 0], [250.0, 200.0], atol=1e-3)
    with pytest.raises(ValueError, match="RGB images"):
        dwpose.detect(frames[..., :2])
