"""Retargeting: the driving motion on the reference body (synthetic poses and real footage)."""

from __future__ import annotations

import math

import av
import numpy as np
import pytest
from PIL import Image

from xdyna_core.pose.draw import draw_xdyna_pose
from xdyna_core.pose.keypoints import L_WRIST, NECK, NOSE, PersonPose, PoseFrame, missing_points, present
from xdyna_core.pose.retarget import BODY_PARENT, RetargetError, bone_lengths, plan_retarget, retarget_frames

W, H = 512, 896
# joints and bones X-Dyna draws (no eyes/ears)
DRAWN = tuple(range(14))
BONES = tuple(j for j in DRAWN if BODY_PARENT[j] is not None)


def base_body() -> np.ndarray:
    xy = {
        0: (256, 150), 1: (256, 210), 2: (216, 212), 3: (196, 300), 4: (186, 380), 5: (296, 212), 6: (316, 300),
        7: (326, 380), 8: (230, 420), 9: (228, 560), 10: (226, 700), 11: (282, 420), 12: (284, 560),
        13: (286, 700), 14: (248, 140), 15: (264, 140), 16: (238, 146), 17: (274, 146),
    }  # fmt: skip
    body = missing_points(18)
    for j, (x, y) in xy.items():
        body[j] = (x, y, 1.0)
    return body


def rebuilt(body: np.ndarray, lengths: dict[int, float], angles: dict[int, float]) -> np.ndarray:
    """A body with the same root, given bone lengths and directions (radians), built from the root out."""
    out = body.copy()
    for joint in (0, 2, 5, 8, 11, 3, 6, 9, 12, 14, 15, 4, 7, 10, 13, 16, 17):
        parent = BODY_PARENT[joint]
        out[joint, :2] = out[parent, :2] + lengths[joint] * np.array([math.cos(angles[joint]), math.sin(angles[joint])])
    return out


def bone_angles(body: np.ndarray) -> dict[int, float]:
    return {
        j: math.atan2(*(body[j, :2] - body[BODY_PARENT[j], :2])[::-1])
        for j in range(18)
        if BODY_PARENT[j] is not None and present(body)[[j, BODY_PARENT[j]]].all()
    }


def driving_clip(frames: int = 6) -> list[PersonPose]:
    base = base_body()
    lengths = {j: float(v) for j, v in enumerate(bone_lengths(base)) if math.isfinite(v)}
    angles = bone_angles(base)
    clip = []
    for t in range(frames):
        moved = dict(angles)
        moved[3] += 0.3 * t  # the right arm swings
        moved[4] += 0.5 * t
        body = rebuilt(base, lengths, moved)
        body[:, :2] += (7.0 * t, -3.0 * t)  # and the whole body travels
        hand = np.column_stack(
            [body[L_WRIST, 0] + np.arange(21.0), body[L_WRIST, 1] + np.arange(21.0) * 0.5, np.ones(21)]
        )
        face = np.column_stack(
            [body[NOSE, 0] + np.linspace(-20, 20, 70), body[NOSE, 1] + np.linspace(-5, 25, 70), np.ones(70)]
        )
        face[68:] = body[[14, 15]]
        clip.append(PersonPose(body, face, hand, None))
    return clip


def reference_person() -> PersonPose:
    """A different body: longer legs, shorter arms, smaller, elsewhere on the canvas, standing differently."""
    base = base_body()
    factors = {3: 0.8, 4: 0.7, 6: 0.8, 7: 0.7, 9: 1.3, 10: 1.25, 12: 1.3, 13: 1.25}
    lengths = {j: 0.6 * v * factors.get(j, 1.0) for j, v in enumerate(bone_lengths(base)) if math.isfinite(v)}
    angles = bone_angles(base)
    angles[6] += 0.4
    body = rebuilt(base, lengths, angles)
    body[:, :2] += (-60.0, 80.0)
    hand = np.column_stack(
        [body[L_WRIST, 0] + np.arange(21.0) * 0.5, body[L_WRIST, 1] + np.arange(21.0) * 0.25, np.ones(21)]
    )
    return PersonPose(body, None, hand, None)


def test_limbs_mode_gives_reference_lengths_and_driver_directions():
    clip, ref = driving_clip(), reference_person()
    frames, plan = retarget_frames(PoseFrame(W, H, [ref]), [PoseFrame(W, H, [p]) for p in clip])
    ref_len = bone_lengths(ref.body)
    for t, (frame, driver) in enumerate(zip(frames, clip)):
        out = frame.people[0].body
        np.testing.assert_array_equal(present(out), present(driver.body))
        got, want = bone_angles(out), bone_angles(driver.body)
        for bone in want:
            assert got[bone] == pytest.approx(want[bone], abs=1e-9), (t, bone)  # the motion is kept
        if t == 0:  # the anchor frame has the reference's proportions
            np.testing.assert_allclose(bone_lengths(out)[list(BONES)], ref_len[list(BONES)], rtol=1e-9)
            np.testing.assert_allclose(out[NECK, :2], ref.body[NECK, :2], atol=1e-9)
        # the root travels like the driver's, scaled by the global fit
        np.testing.assert_allclose(
            out[NECK, :2] - ref.body[NECK, :2], plan.scale * (driver.body[NECK, :2] - clip[0].body[NECK, :2]), atol=1e-9
        )
    assert 0.5 < plan.scale < 0.8


def test_hands_and_face_follow_their_attachment_points():
    clip, ref = driving_clip(), reference_person()
    frames, plan = retarget_frames(PoseFrame(W, H, [ref]), [PoseFrame(W, H, [p]) for p in clip])
    for frame, driver in zip(frames, clip):
        person = frame.people[0]
        offset = person.left_hand[:, :2] - person.body[L_WRIST, :2]
        np.testing.assert_allclose(
            offset, plan.hand_scale["left_hand"] * (driver.left_hand[:, :2] - driver.body[L_WRIST, :2])
        )
        assert person.right_hand is None
        face_offset = person.face[:68, :2] - person.body[NOSE, :2]
        np.testing.assert_allclose(face_offset, plan.face_scale * (driver.face[:68, :2] - driver.body[NOSE, :2]))
        np.testing.assert_array_equal(person.face[68:], person.body[[14, 15]])
    # hand sizes: the reference hand (0.5·0.25 steps) against the driver's (1·0.5 steps) is half as big
    assert plan.hand_scale["left_hand"] == pytest.approx(0.5)


def test_global_mode_is_one_similarity_transform():
    clip, ref = driving_clip(), reference_person()
    frames, plan = retarget_frames(PoseFrame(W, H, [ref]), [PoseFrame(W, H, [p]) for p in clip], mode="global")
    for frame, driver in zip(frames, clip):
        np.testing.assert_allclose(frame.people[0].body[:, :2], plan.global_fit(driver.body[:, :2]), atol=1e-9)
        ratio = bone_lengths(frame.people[0].body)[list(BONES)] / bone_lengths(driver.body)[list(BONES)]
        np.testing.assert_allclose(ratio, plan.scale)


def test_missing_joints_stay_missing_and_orphans_hang_from_an_ancestor():
    clip, ref = driving_clip(), reference_person()
    clip[2].body[3] = (np.nan, np.nan, 0.0)  # right elbow lost: the wrist hangs from the shoulder
    clip[3].body[NECK] = (np.nan, np.nan, 0.0)  # neck lost: everything hangs from the global fit
    frames, plan = retarget_frames(PoseFrame(W, H, [ref]), [PoseFrame(W, H, [p]) for p in clip])
    out = frames[2].people[0].body
    assert not present(out)[3] and present(out)[4]
    k = (plan.bone_scale[3] + plan.bone_scale[4]) / 2
    np.testing.assert_allclose(out[4, :2] - out[2, :2], k * (clip[2].body[4, :2] - clip[2].body[2, :2]))
    out = frames[3].people[0].body
    assert not present(out)[NECK] and present(out)[[0, 2, 5, 8, 11]].all()
    np.testing.assert_allclose(out[8, :2], plan.global_fit(clip[3].body[8, :2]))


def test_frames_without_a_person_stay_empty_and_the_anchor_moves_on():
    clip, ref = driving_clip(), reference_person()
    driving = [PoseFrame(W, H, [])] + [PoseFrame(W, H, [p]) for p in clip]
    frames, plan = retarget_frames(PoseFrame(W, H, [ref]), driving, anchor=0)
    assert frames[0].people == [] and len(frames[1].people) == 1
    np.testing.assert_allclose(frames[1].people[0].body[NECK, :2], ref.body[NECK, :2])


def test_driver_lengths_over_the_clip():
    clip, ref = driving_clip(), reference_person()
    clip[0].body[4, :2] = clip[0].body[3, :2] + 0.2 * (clip[0].body[4, :2] - clip[0].body[3, :2])  # foreshortened
    anchored = plan_retarget(ref, clip, driver_lengths="anchor")
    robust = plan_retarget(ref, clip, driver_lengths="clip")
    true_k = bone_lengths(ref.body)[4] / bone_lengths(clip[1].body)[4]
    assert anchored.bone_scale[4] == pytest.approx(5 * true_k)
    assert robust.bone_scale[4] == pytest.approx(true_k)


def test_unusable_inputs_raise_clear_errors():
    clip = [PoseFrame(W, H, [p]) for p in driving_clip()]
    with pytest.raises(RetargetError, match="reference pose has 0 people"):
        retarget_frames(PoseFrame(W, H, []), clip)
    with pytest.raises(RetargetError, match="no neck or shoulders"):
        retarget_frames(PoseFrame(W, H, [PersonPose.empty()]), clip)
    with pytest.raises(RetargetError, match="no driving frame"):
        retarget_frames(PoseFrame(W, H, [reference_person()]), [PoseFrame(W, H, [])])
    with pytest.raises(ValueError, match="outside the driving clip"):
        retarget_frames(PoseFrame(W, H, [reference_person()]), clip, anchor=99)


# --- real footage: driving_1.mp4 onto reference_1.png through the MediaPipe backend ----------------------


@pytest.fixture(scope="module")
def real_poses(shared_data):
    pytest.importorskip("mediapipe.python.solutions", reason="mediapipe 0.10.x (≤ 0.10.21) not installed")
    from xdyna_core.pose.mediapipe_backend import detect_people

    with av.open(str(shared_data / "driving_1.mp4")) as video:
        frames = [f.to_ndarray(format="rgb24") for i, f in enumerate(video.decode(video=0)) if i % 40 == 0]
    reference = np.array(Image.open(shared_data / "reference_1.png").convert("RGB"))
    driving = detect_people(frames, video=False)
    (ref,) = detect_people([reference], video=False)
    return PoseFrame(reference.shape[1], reference.shape[0], [ref]), [PoseFrame(W, H, [p]) for p in driving]


def test_real_footage_retargeted_to_the_reference(real_poses):
    reference, driving = real_poses
    frames, plan = retarget_frames(reference, driving)
    ref = reference.people[0].body
    assert len(frames) == len(driving) == 15
    for t, (frame, source) in enumerate(zip(frames, driving)):
        out, drv = frame.people[0].body, source.people[0].body
        np.testing.assert_array_equal(present(out), present(drv))
        got, want = bone_angles(out), bone_angles(drv)
        assert got.keys() == want.keys()
        for bone in want:
            assert got[bone] == pytest.approx(want[bone], abs=1e-9), (t, bone)
        ratios = bone_lengths(out) / bone_lengths(drv)
        for bone in BONES:
            if math.isfinite(ratios[bone]):
                assert ratios[bone] == pytest.approx(plan.bone_scale[bone]), (t, bone)
        image = draw_xdyna_pose(frame, reference.width, reference.height)
        assert image.any(axis=-1).sum() > 2000
    first = frames[0].people[0].body
    common = [b for b in BONES if present(ref)[[b, BODY_PARENT[b]]].all() and present(first)[[b, BODY_PARENT[b]]].all()]
    assert len(common) >= 12
    np.testing.assert_allclose(bone_lengths(first)[common], bone_lengths(ref)[common], rtol=1e-9)
    np.testing.assert_allclose(first[NECK, :2], ref[NECK, :2], atol=1e-9)
