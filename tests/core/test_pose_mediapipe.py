"""The offline MediaPipe backend: layout tables against MediaPipe's own definitions, and real footage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from xdyna_core.face.landmarks import MEDIAPIPE_TO_IBUG68
from xdyna_core.pose import mediapipe_backend, mediapipe_runtime
from xdyna_core.pose.draw import draw_xdyna_pose
from xdyna_core.pose.keypoints import (
    BODY_NAMES,
    L_WRIST,
    NOSE,
    R_WRIST,
    PoseFrame,
    frame_to_dict,
    frames_from_pose_keypoint,
    present,
)
from xdyna_core.pose.mediapipe_backend import (
    BLAZEPOSE_TO_BODY,
    MediaPipeHolistic,
    MediaPipeUnavailableError,
    detect_people,
    holistic_graph_config,
    load_holistic_module,
    person_from_landmarks,
)

REPO = Path(__file__).resolve().parents[2]
FRAME_STEP = 40  # every 40th frame of driving_1.mp4: 15 frames across the whole dance


def test_missing_mediapipe_is_a_clear_error(monkeypatch):
    def no_module(name, *args, **kwargs):
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(mediapipe_runtime.importlib, "import_module", no_module)
    with pytest.raises(MediaPipeUnavailableError, match="--no-deps mediapipe==0.10.21"):
        load_holistic_module()
    assert mediapipe_backend.mediapipe_status()[0] is False


def test_jaw_table_is_mirror_symmetric():
    # iBUG mirror pairs map to mesh mirror pairs (face oval read symmetrically from the chin, 152)
    oval_right = (152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127)
    oval_left = (152, 377, 400, 378, 379, 365, 397, 288, 361, 323, 454, 356)
    mirror = dict(zip(oval_right, oval_left)) | dict(zip(oval_left, oval_right))
    for a, b in zip(range(8), range(16, 8, -1)):
        assert mirror[MEDIAPIPE_TO_IBUG68[a]] == MEDIAPIPE_TO_IBUG68[b], (a, b)


def test_the_backend_maps_the_mesh_with_the_face_stage_table():
    # one 468 → 68 table for the whole pack: what the backend writes is what S-Face would map itself
    mesh = np.random.default_rng(1).random((468, 3))
    pose = np.column_stack([np.full((33, 2), 0.5), np.ones(33)])
    person = person_from_landmarks(pose, None, None, mesh, 200, 100)
    np.testing.assert_allclose(person.face[:68, :2], mesh[list(MEDIAPIPE_TO_IBUG68), :2] * [200, 100])
    np.testing.assert_array_equal(person.face[68:], person.body[[14, 15]])


def test_points_outside_the_picture_or_its_content_area_are_missing():
    pose = np.column_stack([np.full((33, 2), 0.5), np.ones(33)])
    pose[27] = (0.4, 1.014, 1.0)  # left ankle extrapolated below the frame (y 908 of 896)
    pose[28] = (0.6, 0.9, 1.0)  # right ankle inside the picture but inside a bottom letterbox bar
    pose[15] = (-0.02, 0.5, 1.0)  # left wrist left of the frame
    hand = np.column_stack([np.linspace(0.3, 0.7, 21), np.full(21, 0.5)])
    hand[:5, 0] = 1.01  # five hand points past the right edge
    person = person_from_landmarks(pose, hand, None, None, 512, 896)
    seen = present(person.body)
    assert not seen[13] and not seen[7] and seen[10] and seen[[0, 1, 2, 5, 8, 11]].all()
    assert not present(person.left_hand)[:5].any() and present(person.left_hand)[5:].all()
    boxed = person_from_landmarks(pose, hand, None, None, 512, 896, content=(0, 0, 512, 780))
    assert not present(boxed.body)[10] and present(boxed.body)[0]
    assert person_from_landmarks(pose, None, None, None, 512, 896, content=(0, 0, 10, 10)) is None


# --- against the installed MediaPipe ---------------------------------------------------------------------

mp_solutions = pytest.importorskip("mediapipe.python.solutions", reason="mediapipe 0.10.x (≤ 0.10.21) not installed")


def test_body_table_matches_mediapipe_landmark_names():
    from mediapipe.python.solutions.pose import PoseLandmark

    for op_index, bp_index in enumerate(BLAZEPOSE_TO_BODY):
        if bp_index is None:
            assert BODY_NAMES[op_index] == "neck"
        else:
            assert PoseLandmark(bp_index).name.lower() == BODY_NAMES[op_index], op_index


def test_importing_mediapipe_prints_nothing():
    code = "from xdyna_core.pose.mediapipe_backend import load_holistic_module; load_holistic_module()"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_hand_presence_threshold_is_written_into_both_hands_of_the_graph():
    solution_base, holistic = load_holistic_module()
    config = holistic_graph_config(solution_base, holistic, 0.125)
    from mediapipe.calculators.util import thresholding_calculator_pb2 as pb

    found = [n for n in config.node if n.name.endswith("handlandmarkcpu__ThresholdingCalculator")]
    assert len(found) == 2
    assert all(n.options.Extensions[pb.ThresholdingCalculatorOptions.ext].threshold == 0.125 for n in found)
    with pytest.raises(ValueError, match="hand_presence"):
        MediaPipeHolistic(hand_presence=1.5)


@pytest.fixture(scope="module")
def driving_frames(shared_data) -> list[np.ndarray]:
    with av.open(str(shared_data / "driving_1.mp4")) as video:
        return [f.to_ndarray(format="rgb24") for i, f in enumerate(video.decode(video=0)) if i % FRAME_STEP == 0]


@pytest.fixture(scope="module")
def driving_people(driving_frames):
    return detect_people(driving_frames, video=False)


def test_every_driving_frame_has_a_full_body(driving_frames, driving_people):
    assert len(driving_people) == len(driving_frames) == 15
    for t, person in enumerate(driving_people):
        assert person is not None, t
        seen = present(person.body)
        assert seen[[0, 1, 2, 5, 8, 11]].all() and seen[:14].sum() >= 13, (t, seen)  # the joints X-Dyna draws
        assert person.face is not None and person.face.shape == (70, 3)
        np.testing.assert_array_equal(person.face[68:], person.body[[14, 15]])  # controlnet_aux's eye points
        image = draw_xdyna_pose(PoseFrame(512, 896, [person]), 512, 896)
        assert image.any(axis=-1).sum() > 3000, t


def test_hands_and_face_sit_where_the_body_says(driving_people):
    hands_seen = 0
    for person in driving_people:
        for hand, wrist in ((person.left_hand, L_WRIST), (person.right_hand, R_WRIST)):
            if hand is not None:
                hands_seen += 1
                assert np.hypot(*(hand[0, :2] - person.body[wrist, :2])) < 25  # the person's own side
        face = person.face[:68, :2]
        nose = person.body[NOSE, :2]
        assert np.hypot(*(face[30] - nose)) < 15  # iBUG 30 is the nose tip
        assert face[36:42, 0].mean() < face[42:48, 0].mean()  # her right eye is on the image's left
        assert face[17:27, 1].mean() < face[36:48, 1].mean() < face[48:68, 1].mean()  # brows, eyes, mouth
        assert face[8, 1] > face[:17, 1].max() - 3  # the chin is (about) the lowest jaw point
    assert hands_seen >= 8


def test_pose_keypoint_round_trip_of_detections(driving_people):
    frames = [PoseFrame(512, 896, [p]) for p in driving_people]
    back = frames_from_pose_keypoint([frame_to_dict(f) for f in frames])
    for a, b in zip(frames, back):
        np.testing.assert_allclose(a.people[0].body, b.people[0].body, equal_nan=True)


def test_reference_image(shared_data):
    image = np.array(Image.open(shared_data / "reference_1.png").convert("RGB"))
    (person,) = detect_people([image], video=False)
    assert person is not None and present(person.body)[:14].all()


def test_no_person_is_none():
    assert detect_people([np.zeros((256, 256, 3), np.uint8)], video=False) == [None]
    assert person_from_landmarks(None, None, None, None, 64, 64) is None
