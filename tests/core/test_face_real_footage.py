"""S-Face on real footage: the example driving video → MediaPipe face mesh → S-Face conditions.

MediaPipe 0.10.x up to 0.10.21 carries its face-mesh models in the wheel. Its Holistic graph finds the face
through the body pose, which suits full-body driving videos whose faces are too small for the face detector.
The graph runs through `SolutionBase` without option overrides (the solution classes edit options with a
protobuf API that protobuf 7 removed). The raw 468-point mesh goes into POSE_KEYPOINT in normalised
coordinates, so the mesh → iBUG-68 mapping and the normalised-coordinate path are exercised too.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xdyna_core.face import sface_condition_from_pose
from xdyna_core.face.landmarks import landmarks_from_pose_keypoint

SPREAD = 12  # frames spread over the clip
RUN = range(200, 232, 2)  # 16 consecutive frames at the official stride 2


def mediapipe_graph(video: bool):
    try:
        from mediapipe.python import solution_base
        from mediapipe.python.solutions import holistic
    except Exception as err:  # any failure to import (missing, or a release without solutions) means unusable
        pytest.skip(f"MediaPipe 0.10.x with its bundled solutions is not usable here: {err}")
    side_inputs = {
        "model_complexity": 1,  # the body model inside the wheel
        "smooth_landmarks": video,
        "enable_segmentation": False,
        "smooth_segmentation": False,
        "refine_face_landmarks": False,
        "use_prev_landmarks": video,
    }
    return solution_base.SolutionBase(
        binary_graph_path=holistic._BINARYPB_FILE_PATH, side_inputs=side_inputs, outputs=["face_landmarks"]
    )


def pose_keypoint_of(frames: list[np.ndarray], video: bool) -> list[dict]:
    """One POSE_KEYPOINT frame per image: the raw face mesh (normalised), or no people where none was found."""
    graph = mediapipe_graph(video)
    out = []
    try:
        for img in frames:
            result = graph.process({"image": np.ascontiguousarray(img)})
            people = []
            if result.face_landmarks is not None:
                mesh = [(lm.x, lm.y, 1.0) for lm in result.face_landmarks.landmark]
                people.append({"pose_keypoints_2d": None, "face_keypoints_2d": np.ravel(mesh).tolist()})
            out.append({"people": people, "canvas_width": img.shape[1], "canvas_height": img.shape[0]})
    finally:
        graph.close()
    return out


@pytest.fixture(scope="module")
def footage(shared_data):
    av = pytest.importorskip("av")
    with av.open(str(shared_data / "driving_1.mp4")) as video:
        total = video.streams.video[0].frames or 571
        spread = set(np.linspace(0, total - 1, SPREAD).round().astype(int).tolist())
        wanted = spread | set(RUN)
        decoded = {}
        for i, frame in enumerate(video.decode(video=0)):
            if i in wanted:
                decoded[i] = frame.to_ndarray(format="rgb24")
            if i >= max(wanted):
                break
    spread_frames = [decoded[i] for i in sorted(spread)]
    run_frames = [decoded[i] for i in RUN]
    return {
        "spread": (spread_frames, pose_keypoint_of(spread_frames, video=False)),
        "run": (run_frames, pose_keypoint_of(run_frames, video=True)),
    }


def as_tensor(frames: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(frames)).float() / 255.0


def test_global_canvas_holds_the_face_on_every_frame(footage):
    frames, pose = footage["spread"]
    images = as_tensor(frames)
    height, width = images.shape[1:3]
    landmarks = landmarks_from_pose_keypoint(pose)
    assert all(face.points is not None for face in landmarks), "MediaPipe missed a face in the example video"
    # Frames far apart in time: each on its own (no box held from, or smoothed with, a distant frame).
    cond = sface_condition_from_pose(images, pose, width, height, stabilize=False, smoothing=0)
    assert cond.hint().shape == (SPREAD, height, width, 6)
    assert cond.status == ("detected",) * SPREAD
    for i, face in enumerate(landmarks):
        pts = face.points
        left, top, right, bottom = cond.boxes[i].tolist()
        x0, y0 = np.floor(pts.min(axis=0)).astype(int)
        x1, y1 = np.ceil(pts.max(axis=0)).astype(int)
        assert left <= x0 and top <= y0 and x1 < right and y1 < bottom, (i, cond.boxes[i], (x0, y0, x1, y1))
        # The face region is copied in place, registered to the frame, and nothing outside the box is.
        torch.testing.assert_close(cond.global_canvases([i])[0, y0:y1, x0:x1], images[i, y0:y1, x0:x1], rtol=0, atol=0)
        outside = cond.global_canvases([i])[0].clone()
        outside[top:bottom, left:right] = 0
        assert not outside.any()
        # Patches: eyes and mouth centres lie on the face, and the patches hold the frame's pixels there.
        for cx, cy in cond.centres[i].tolist():
            assert x0 <= cx <= x1 and y0 <= cy <= y1
            torch.testing.assert_close(cond.local_canvases([i])[0, cy, cx], images[i, cy, cx], rtol=0, atol=0)
        # A plausible face: box about 2.7 landmark spans wide, patches an eighth of it.
        assert 20 <= right - left <= 400


def test_smaller_generation_size_scales_the_boxes(footage):
    frames, pose = footage["spread"]
    images = as_tensor(frames[:4])
    full = sface_condition_from_pose(images, pose[:4], 512, 896, stabilize=False, smoothing=0)
    half = sface_condition_from_pose(images, pose[:4], 256, 448, stabilize=False, smoothing=0)
    assert half.hint().shape == (4, 448, 256, 6)
    assert (half.boxes.float() * 2 - full.boxes.float()).abs().max() <= 3


def test_boxes_move_smoothly_over_consecutive_frames(footage):
    frames, pose = footage["run"]
    images = as_tensor(frames)
    height, width = images.shape[1:3]
    raw = sface_condition_from_pose(images, pose, width, height, stabilize=False, smoothing=0)
    ours = sface_condition_from_pose(images, pose, width, height)  # defaults: stabilised, light smoothing
    smoothed = sface_condition_from_pose(images, pose, width, height, stabilize=False, smoothing=1.0)

    def jitter(boxes: torch.Tensor) -> float:
        return (boxes[2:] - 2 * boxes[1:-1] + boxes[:-2]).abs().float().mean().item()

    assert jitter(smoothed.boxes) < 0.6 * jitter(raw.boxes)
    assert jitter(ours.boxes) <= jitter(smoothed.boxes)
    faces = landmarks_from_pose_keypoint(pose)
    for cond in (ours, smoothed):
        assert cond.status == ("detected",) * len(RUN)
        sizes = (cond.boxes[:, 2:] - cond.boxes[:, :2]).float()
        steps = (cond.boxes[1:] - cond.boxes[:-1]).abs().float()
        # Bounded frame-to-frame change: no edge moves by more than a tenth of the box size between frames.
        assert (steps[:, [0, 2]] <= 0.1 * sizes[1:, :1]).all() and (steps[:, [1, 3]] <= 0.1 * sizes[1:, 1:]).all()
        for i, face in enumerate(faces):
            left, top, right, bottom = cond.boxes[i].tolist()
            (x0, y0), (x1, y1) = face.points.min(axis=0), face.points.max(axis=0)
            assert left <= x0 and top <= y0 and x1 < right and y1 < bottom
