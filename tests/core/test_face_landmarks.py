"""Face landmarks from POSE_KEYPOINT frames, MediaPipe mesh mapping, and the whole S-Face path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.core.test_face_sface import official_sface
from xdyna_core.face import NoFaceError, sface_condition_from_pose
from xdyna_core.face.landmarks import (
    MEDIAPIPE_TO_IBUG68,
    FaceLandmarkError,
    ibug68_from_face_points,
    landmarks_from_pose_keypoint,
    mediapipe_to_ibug68,
)
from xdyna_core.face.sface import face_box


def face_points(cx: float, cy: float, size: float, seed: int = 0) -> np.ndarray:
    pts = np.random.default_rng(seed).uniform(-0.5, 0.5, size=(68, 2)) * size + [cx, cy]
    return pts


def person(face: np.ndarray | None, conf: float = 1.0, normalize: tuple[int, int] | None = None) -> dict:
    entry = {"pose_keypoints_2d": [0.0] * 54, "hand_left_keypoints_2d": None, "hand_right_keypoints_2d": None}
    if face is None:
        entry["face_keypoints_2d"] = None
        return entry
    xy = face / np.array(normalize) if normalize else face
    entry["face_keypoints_2d"] = np.concatenate([xy, np.full((len(xy), 1), conf)], 1).ravel().tolist()
    return entry


def pose_frame(people: list[dict], width: int, height: int) -> dict:
    return {"people": people, "canvas_width": width, "canvas_height": height}


def test_pixel_and_normalised_coordinates_read_the_same():
    pts = face_points(60, 80, 30)
    pixel = landmarks_from_pose_keypoint([pose_frame([person(pts)], 128, 160)])
    norm = landmarks_from_pose_keypoint([pose_frame([person(pts, normalize=(128, 160))], 128, 160)])
    np.testing.assert_allclose(pixel[0].points, pts)
    np.testing.assert_allclose(norm[0].points, pts, atol=1e-9)
    assert pixel[0].canvas == (128, 160)


def test_seventy_points_drop_the_appended_eyes():
    pts = np.concatenate([face_points(60, 80, 30), [[1000.0, 1000.0], [-1000.0, -1000.0]]])
    faces = landmarks_from_pose_keypoint([pose_frame([person(pts)], 128, 160)])
    assert faces[0].points.shape == (68, 2)
    np.testing.assert_allclose(faces[0].points, pts[:68])


def test_missing_points_are_ignored_and_too_few_miss_the_face():
    pts = face_points(60, 80, 30)
    raw = np.concatenate([pts, np.ones((68, 1))], 1)
    raw[:10] = 0.0  # controlnet_aux writes a dropped point as [0, 0, 0]
    frame = pose_frame([{"face_keypoints_2d": raw.ravel().tolist()}], 128, 160)
    got = landmarks_from_pose_keypoint([frame])[0].points
    assert np.isnan(got[:10]).all() and np.allclose(got[10:], pts[10:])
    raw[:40] = 0.0
    frame = pose_frame([{"face_keypoints_2d": raw.ravel().tolist()}], 128, 160)
    assert landmarks_from_pose_keypoint([frame])[0].points is None


def test_unknown_face_layout_is_a_clear_error():
    with pytest.raises(FaceLandmarkError, match="21 points"):
        ibug68_from_face_points(np.ones((21, 3)))


def test_several_people_and_person_index():
    small, big = face_points(30, 40, 12, seed=1), face_points(90, 100, 40, seed=2)
    frames = [pose_frame([person(small), person(big)], 128, 160), pose_frame([person(big), person(None)], 128, 160)]
    first = landmarks_from_pose_keypoint(frames, person=0)
    second = landmarks_from_pose_keypoint(frames, person=1)
    largest = landmarks_from_pose_keypoint(frames, person=-1)
    np.testing.assert_allclose(first[0].points, small)
    np.testing.assert_allclose(second[0].points, big)
    assert second[1].points is None  # that person has no face in frame 1
    np.testing.assert_allclose(largest[0].points, big)
    np.testing.assert_allclose(largest[1].points, big)
    assert landmarks_from_pose_keypoint(frames, person=5)[0].points is None


def test_mediapipe_table_is_a_68_point_injection_into_the_mesh():
    assert len(MEDIAPIPE_TO_IBUG68) == 68 and len(set(MEDIAPIPE_TO_IBUG68)) == 68
    assert all(0 <= i < 468 for i in MEDIAPIPE_TO_IBUG68)
    mesh = np.random.default_rng(0).random((478, 3))
    mapped = mediapipe_to_ibug68(mesh)
    assert mapped.shape == (68, 3)
    np.testing.assert_array_equal(mapped[36], mesh[33])  # outer corner of the person's right eye
    np.testing.assert_array_equal(mapped[8], mesh[152])  # chin
    frame = pose_frame([person(mesh[:468, :2] * 100)], 128, 160)
    np.testing.assert_allclose(
        landmarks_from_pose_keypoint([frame])[0].points, mesh[list(MEDIAPIPE_TO_IBUG68), :2] * 100
    )
    with pytest.raises(FaceLandmarkError):
        mediapipe_to_ibug68(np.zeros((100, 2)))


def test_mediapipe_table_groups_lie_in_mediapipe_named_regions():
    connections = pytest.importorskip("mediapipe.python.solutions.face_mesh_connections")

    def region(edges) -> set[int]:
        return {i for edge in edges for i in edge}

    table = MEDIAPIPE_TO_IBUG68
    assert set(table[0:17]) <= region(connections.FACEMESH_FACE_OVAL)
    assert set(table[17:22]) <= region(connections.FACEMESH_RIGHT_EYEBROW)
    assert set(table[22:27]) <= region(connections.FACEMESH_LEFT_EYEBROW)
    assert set(table[36:42]) <= region(connections.FACEMESH_RIGHT_EYE)
    assert set(table[42:48]) <= region(connections.FACEMESH_LEFT_EYE)
    assert set(table[48:68]) <= region(connections.FACEMESH_LIPS)


# --- the whole path: frames + POSE_KEYPOINT → condition ------------------------------------------------


def clip(count: int, width: int, height: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, height, width, 3, generator=torch.Generator().manual_seed(seed))


def test_frames_at_the_generation_size_match_the_release_per_frame():
    width, height = 96, 128
    frames = clip(6, width, height)
    faces = [face_points(30 + 9 * i, 40 + 5 * i, 20 + 4 * i, seed=i) for i in range(6)]
    faces[5][:, 0] += 60  # cross the right border
    pose = [pose_frame([person(f)], width, height) for f in faces]
    cond = sface_condition_from_pose(frames, pose, width, height, stabilize=False, smoothing=0)
    assert cond.hint().shape == (6, height, width, 6) and cond.status == ("detected",) * 6
    for i, pts in enumerate(faces):
        local, glob, box, _ = official_sface(frames[i].numpy(), pts)
        assert tuple(cond.boxes[i].tolist()) == box
        np.testing.assert_array_equal(cond.global_canvases([i])[0].numpy(), glob)
        np.testing.assert_array_equal(cond.local_canvases([i])[0].numpy(), local)


def test_landmarks_follow_the_crop_and_resize():
    # A 200×300 source, generation size 64×64, top-biased crop: window 200×200 at top (300 - 200) // 4 = 25.
    src = torch.zeros(1, 300, 200, 3)
    src[0, 110:150, 80:120] = 1.0  # a white "face" at x 80..120, y 110..150
    pts = face_points(100, 130, 40)
    pts[0], pts[1] = [80.0, 110.0], [120.0, 150.0]
    pose = [pose_frame([person(pts)], 200, 300)]
    cond = sface_condition_from_pose(src, pose, 64, 64, crop="top_biased", stabilize=False, smoothing=0)
    # Mapped bounds: x (80 + .5) * .32 - .5 = 25.26 … 37.86, y (85 + .5) * .32 - .5 = 26.86 … 39.66.
    mapped = (np.array([[80.0, 85.0], [120.0, 125.0]]) + 0.5) * 0.32 - 0.5
    expected = face_box(mapped, 64, 64)
    assert tuple(cond.boxes[0].tolist()) == expected
    inside = cond.global_canvases([0])[0, 28:38, 26:37]
    assert inside.min() > 0.99  # the white square landed inside the global canvas, registered
    centre = torch.zeros(1, 300, 200, 3)
    center_cond = sface_condition_from_pose(
        torch.cat([src, centre])[:1], pose, 64, 64, crop="center", stabilize=False, smoothing=0
    )
    assert center_cond.boxes[0, 1] < cond.boxes[0, 1]  # a centred crop (top 50) puts the face higher


def test_keypoints_from_a_resized_copy_of_the_frames():
    # Keypoints measured on a half-size copy (canvas 48×64) of 96×128 frames give the same boxes.
    frames = clip(2, 96, 128)
    full = face_points(48, 60, 30)
    half = (full + 0.5) / 2 - 0.5
    a = sface_condition_from_pose(frames, [pose_frame([person(full)], 96, 128)] * 2, 96, 128, smoothing=0)
    b = sface_condition_from_pose(frames, [pose_frame([person(half)], 48, 64)] * 2, 96, 128, smoothing=0)
    assert (a.boxes - b.boxes).abs().max() <= 1


def test_no_face_is_an_error_unless_black_is_asked_for():
    frames = clip(3, 64, 64)
    pose = [pose_frame([], 64, 64), pose_frame([person(None)], 64, 64), pose_frame([], 64, 64)]
    with pytest.raises(NoFaceError, match="no usable face in any of the 3 frames") as err:
        sface_condition_from_pose(frames, pose, 64, 64)
    assert "on_no_face" in str(err.value)
    cond = sface_condition_from_pose(frames, pose, 64, 64, allow_no_face=True)
    assert cond.hint().shape == (3, 64, 64, 6) and not cond.hint().any()
    assert cond.status == ("none",) * 3


def test_frame_count_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 frames but the driving images have 3"):
        sface_condition_from_pose(clip(3, 64, 64), [pose_frame([], 64, 64)] * 2, 64, 64)


def test_missed_frames_in_the_middle_and_at_the_start():
    frames = clip(8, 96, 128)
    faces = [face_points(40 + 2 * i, 60, 24, seed=i) for i in range(8)]
    people = [[person(f)] for f in faces]
    people[0] = people[1] = []  # missed at the start
    people[4] = [person(None)]  # missed in the middle
    pose = [pose_frame(p, 96, 128) for p in people]
    cond = sface_condition_from_pose(frames, pose, 96, 128, stabilize=False, smoothing=0, max_gap=2)
    assert cond.status[:2] == ("held", "held") and cond.status[4] == "interpolated"
    assert (cond.boxes[0] == cond.boxes[2]).all()
    assert cond.global_canvases([4])[0].any() and cond.local_canvases([4])[0].any()  # never the release's black frame


def test_the_condition_renders_only_the_frames_asked_for_and_holds_no_canvases():
    width, height = 96, 128
    frames = clip(6, width, height)
    pose = [
        pose_frame([person(face_points(30 + 9 * i, 40 + 5 * i, 20 + 4 * i, seed=i))], width, height) for i in range(6)
    ]
    cond = sface_condition_from_pose(frames, pose, width, height, stabilize=False, smoothing=0)
    assert cond.driving is frames  # a reference to the driving frames, not a copy
    assert cond.held_bytes() == 6 * (4 + 6) * 8  # boxes and centres: all it owns per frame
    whole = cond.to_image()
    torch.testing.assert_close(cond.frames([4, 1]), whole[[4, 1]], rtol=0, atol=0)
    torch.testing.assert_close(cond.hint([2]), whole[2:3], rtol=0, atol=0)
