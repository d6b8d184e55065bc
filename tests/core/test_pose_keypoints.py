"""POSE_KEYPOINT in controlnet_aux's format: reading, writing, DWPose's COCO-WholeBody conversion."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from xdyna_core.pose.keypoints import (
    BODY_LIMBS,
    HAND_EDGES,
    NECK,
    PersonPose,
    PoseFormatError,
    PoseFrame,
    frame_from_dict,
    frame_from_wholebody,
    frame_to_dict,
    frames_from_pose_keypoint,
    frames_to_pose_keypoint,
    missing_points,
    present,
)

W, H = 512, 896


def random_person(rng: np.random.Generator, face: bool = True, hands: bool = True) -> PersonPose:
    def points(n: int) -> np.ndarray:
        return np.concatenate([rng.uniform(5, 500, (n, 1)), rng.uniform(5, 880, (n, 1)), np.ones((n, 1))], axis=1)

    body = points(18)
    body[[3, 16]] = (np.nan, np.nan, 0.0)  # a missing elbow and ear
    return PersonPose(body, points(70) if face else None, points(21) if hands else None, points(21) if hands else None)


def assert_same_person(a: PersonPose, b: PersonPose, atol: float = 1e-9) -> None:
    for name, part in a.parts().items():
        other = getattr(b, name)
        if part is None:
            assert other is None, name
            continue
        np.testing.assert_array_equal(present(part), present(other), err_msg=name)
        np.testing.assert_allclose(part[present(part)], other[present(other)], atol=atol, err_msg=name)


def test_layout_constants():
    assert len(BODY_LIMBS) == 17 and len(HAND_EDGES) == 20
    assert HAND_EDGES[:5] == ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5))
    assert HAND_EDGES[-4:] == ((0, 17), (17, 18), (18, 19), (19, 20))


@pytest.mark.parametrize("normalized", [False, True])
def test_round_trip_pixel_and_normalized(normalized):
    rng = np.random.default_rng(0)
    frame = PoseFrame(W, H, [random_person(rng), random_person(rng, face=False)])
    written = frame_to_dict(frame, normalized=normalized)
    assert set(written) == {"people", "canvas_width", "canvas_height"}
    person = written["people"][0]
    assert len(person["pose_keypoints_2d"]) == 54 and len(person["face_keypoints_2d"]) == 210
    assert len(person["hand_left_keypoints_2d"]) == 63 and written["people"][1]["face_keypoints_2d"] is None
    assert person["pose_keypoints_2d"][9:12] == [0.0, 0.0, 0.0]  # the missing elbow, as controlnet_aux writes it
    if normalized:
        values = np.array(person["pose_keypoints_2d"]).reshape(-1, 3)
        assert values[:, :2].max() <= 1.0
    text = json.dumps([written])  # plain JSON types only
    back = frames_from_pose_keypoint(text)[0]
    assert (back.width, back.height) == (W, H)
    for a, b in zip(frame.people, back.people):
        assert_same_person(a, b, atol=1e-9)


def test_declared_coordinate_style_overrides_detection():
    body = missing_points(18)
    body[0] = (0.5, 0.25, 1.0)  # in [0, 1]: auto reads it as normalised
    raw = frame_to_dict(PoseFrame(W, H, [PersonPose(body)]))
    assert frame_from_dict(raw).people[0].body[0, :2].tolist() == [256.0, 224.0]
    assert frame_from_dict(raw, coords="pixel").people[0].body[0, :2].tolist() == [0.5, 0.25]
    assert frame_from_dict(raw, coords="normalized").people[0].body[0, :2].tolist() == [256.0, 224.0]


def test_controlnet_aux_style_dict_with_nulls_and_binary_confidence():
    raw = {
        "people": [
            {
                "pose_keypoints_2d": [100.0, 200.0, 1.0] + [0.0, 0.0, 0.0] * 17,
                "face_keypoints_2d": None,
                "hand_left_keypoints_2d": None,
                "hand_right_keypoints_2d": [10.0, 20.0, 1.0] * 21,
            }
        ],
        "canvas_height": H,
        "canvas_width": W,
    }
    frame = frame_from_dict(raw)
    person = frame.people[0]
    assert person.face is None and person.left_hand is None and person.right_hand is not None
    assert present(person.body).tolist() == [True] + [False] * 17
    assert frame_to_dict(frame) == raw


def test_empty_frames_and_missing_parts():
    assert frames_from_pose_keypoint(None) == [] and frames_from_pose_keypoint([]) == []
    frames = frames_from_pose_keypoint(
        [{"people": [], "canvas_width": W, "canvas_height": H}, {"people": [{}]}, {}], default_size=(W, H)
    )
    assert [len(f.people) for f in frames] == [0, 1, 0]
    assert all((f.width, f.height) == (W, H) for f in frames)
    assert frames[1].people[0].is_empty()
    assert frame_to_dict(frames[0]) == {"people": [], "canvas_width": W, "canvas_height": H}


def test_frames_read_already_are_taken_as_they_are():
    """A list holding PoseFrames (what a node read once and hands on) reads as those frames; a frame dict after one
    without a canvas size takes that frame's size."""
    read = frames_from_pose_keypoint([{"people": [], "canvas_width": W, "canvas_height": H}])
    again = frames_from_pose_keypoint([read[0], {"people": [{}]}])
    assert again[0] is read[0] and (again[1].width, again[1].height) == (W, H) and len(again[1].people) == 1
    with pytest.raises(PoseFormatError, match="frame 1"):
        frames_from_pose_keypoint([read[0], 7])


def test_nan_inf_and_nonpositive_confidence_read_as_missing():
    body = [[100.0, 100.0, 1.0]] * 18
    body[2] = [math.nan, 100.0, 1.0]
    body[3] = [math.inf, 100.0, 1.0]
    body[4] = [100.0, -math.inf, 1.0]
    body[5] = [100.0, 100.0, math.nan]
    body[6] = [100.0, 100.0, 0.0]
    body[7] = [100.0, 100.0, -1.0]
    raw = {"people": [{"pose_keypoints_2d": [v for p in body for v in p]}], "canvas_width": W, "canvas_height": H}
    person = frame_from_dict(raw).people[0]
    assert present(person.body).tolist() == [True, True] + [False] * 6 + [True] * 10
    written = frame_to_dict(PoseFrame(W, H, [person]))["people"][0]["pose_keypoints_2d"]
    assert all(math.isfinite(v) for v in written)
    json.dumps(written, allow_nan=False)


def test_several_people_keep_their_order():
    rng = np.random.default_rng(1)
    people = [random_person(rng) for _ in range(3)]
    back = frames_from_pose_keypoint(frames_to_pose_keypoint([PoseFrame(W, H, people)]))[0]
    assert len(back.people) == 3
    for a, b in zip(people, back.people):
        assert_same_person(a, b)


def test_extra_keypoint_lists_survive_a_round_trip():
    raw = {
        "people": [{"pose_keypoints_2d": [50.0, 60.0, 0.9] * 18, "foot_keypoints_2d": [1.0, 2.0, 0.8] * 6}],
        "canvas_width": W,
        "canvas_height": H,
    }
    frame = frame_from_dict(raw)
    assert frame.people[0].extra["foot_keypoints_2d"].shape == (6, 3)
    again = frame_to_dict(frame, binary_confidence=False)
    assert again["people"][0]["foot_keypoints_2d"] == raw["people"][0]["foot_keypoints_2d"]
    assert again["people"][0]["pose_keypoints_2d"] == raw["people"][0]["pose_keypoints_2d"]


def test_malformed_values_raise_clear_errors():
    with pytest.raises(PoseFormatError, match="multiple of 3"):
        frame_from_dict({"people": [{"pose_keypoints_2d": [1.0, 2.0]}], "canvas_width": W, "canvas_height": H})
    with pytest.raises(PoseFormatError, match="BODY_25"):
        frame_from_dict(
            {"people": [{"pose_keypoints_2d": [1.0, 2.0, 1.0] * 25}], "canvas_width": W, "canvas_height": H}
        )
    with pytest.raises(PoseFormatError, match="canvas"):
        frame_from_dict({"people": []})
    with pytest.raises(PoseFormatError, match="frame 1"):
        frames_from_pose_keypoint([{"people": [], "canvas_width": W, "canvas_height": H}, {"people": [3]}])
    with pytest.raises(PoseFormatError, match="JSON"):
        frames_from_pose_keypoint("{not json")


def test_resized_scales_each_axis():
    body = missing_points(18)
    body[0] = (100.0, 200.0, 1.0)
    frame = PoseFrame(W, H, [PersonPose(body)]).resized(256, 224)
    assert frame.people[0].body[0, :2].tolist() == [50.0, 50.0]
    assert not present(frame.people[0].body)[1:].any()


# --- DWPose: COCO-WholeBody 133 → OpenPose-18 -------------------------------------------------------------

# OpenPose-18 index → COCO-WholeBody body index, as DWPose's `mmpose_idx`/`openpose_idx` arrays place them.
EXPECTED_FROM_COCO = {0: 0, 2: 6, 3: 8, 4: 10, 5: 5, 6: 7, 7: 9, 8: 12, 9: 14, 10: 16, 11: 11, 12: 13, 13: 15}
EXPECTED_FROM_COCO |= {14: 2, 15: 1, 16: 4, 17: 3}


def wholebody_person() -> tuple[np.ndarray, np.ndarray]:
    keypoints = np.stack([np.arange(133) * 2.0 + 1.0, np.arange(133) * 3.0 + 2.0], axis=1)
    return keypoints, np.full(133, 0.9)


def test_wholebody_mapping_matches_dwpose():
    keypoints, scores = wholebody_person()
    frame = frame_from_wholebody(keypoints[None], scores[None], W, H)
    assert (frame["canvas_width"], frame["canvas_height"]) == (W, H)
    person = frame["people"][0]
    body = np.array(person["pose_keypoints_2d"]).reshape(18, 3)
    for op, coco in EXPECTED_FROM_COCO.items():
        assert body[op].tolist() == [*keypoints[coco], 1.0], op
    assert body[NECK].tolist() == [*keypoints[[5, 6]].mean(axis=0), 1.0]
    left = np.array(person["hand_left_keypoints_2d"]).reshape(21, 3)
    right = np.array(person["hand_right_keypoints_2d"]).reshape(21, 3)
    np.testing.assert_array_equal(left[:, :2], keypoints[91:112])  # COCO-WholeBody's left hand comes first
    np.testing.assert_array_equal(right[:, :2], keypoints[112:133])
    face = np.array(person["face_keypoints_2d"]).reshape(70, 3)
    np.testing.assert_array_equal(face[:68, :2], keypoints[23:91])
    np.testing.assert_array_equal(face[68:, :2], body[[14, 15], :2])  # controlnet_aux appends the eyes


def test_wholebody_thresholds_follow_dwpose():
    keypoints, scores = wholebody_person()
    scores[0] = 0.3  # kept: DWPose keeps scores >= 0.3
    scores[8] = 0.29  # right elbow dropped
    scores[5] = 0.3  # left shoulder kept, but the neck needs both shoulders > 0.3
    scores[91:112] = 0.1  # whole left hand below threshold → null
    scores[23:91] = 0.0  # no face → null
    frame = frame_from_wholebody(keypoints[None], scores[None], W, H)
    person = frame["people"][0]
    body = np.array(person["pose_keypoints_2d"]).reshape(18, 3)
    assert body[0, 2] == 1.0 and body[5, 2] == 1.0
    assert body[3].tolist() == [0.0, 0.0, 0.0] and body[NECK].tolist() == [0.0, 0.0, 0.0]
    assert person["hand_left_keypoints_2d"] is None and person["face_keypoints_2d"] is None
    assert person["hand_right_keypoints_2d"] is not None


def test_wholebody_no_person_and_several_people():
    empty = frame_from_wholebody(np.zeros((0, 133, 2)), np.zeros((0, 133)), W, H)
    assert empty == {"people": [], "canvas_width": W, "canvas_height": H}
    keypoints, scores = wholebody_person()
    two = frame_from_wholebody(np.stack([keypoints, keypoints + 7.0]), np.stack([scores, scores]), W, H)
    assert len(two["people"]) == 2
    assert two["people"][1]["pose_keypoints_2d"][0] == two["people"][0]["pose_keypoints_2d"][0] + 7.0
    nan_scores = scores.copy()
    nan_scores[0] = np.nan
    frame = frame_from_wholebody(keypoints[None], nan_scores[None], W, H)
    assert frame["people"][0]["pose_keypoints_2d"][:3] == [0.0, 0.0, 0.0]
