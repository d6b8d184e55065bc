"""Retargeting: the driving motion on the reference body (synthetic poses and real footage)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.fixtures.example_footage import example_footage
from xdyna_core.pose.draw import draw_xdyna_pose
from xdyna_core.pose.framing import MARGIN, fit_transform
from xdyna_core.pose.keypoints import L_WRIST, NECK, NOSE, PersonPose, PoseFrame, missing_points, present
from xdyna_core.pose.retarget import (
    BODY_PARENT,
    SIZE_BONES,
    RetargetError,
    bone_lengths,
    plan_retarget,
    reference_lengths,
    retarget_frames,
)

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


def foreshortened_clip(frames: int = 8) -> list[PersonPose]:
    """The driving clip whose first frame has the right forearm pointing at the camera (a fifth of its length)
    and whose right upper arm is foreshortened to 60 % in frames 3–4."""
    clip = driving_clip(frames)
    first = clip[0].body
    first[4, :2] = first[3, :2] + 0.2 * (first[4, :2] - first[3, :2])
    for t in (3, 4):
        body = clip[t].body
        elbow = body[2, :2] + 0.6 * (body[3, :2] - body[2, :2])
        body[4, :2] += elbow - body[3, :2]
        body[3, :2] = elbow
    return clip


def test_no_bone_is_stretched_when_the_first_frame_is_foreshortened():
    clip, ref = foreshortened_clip(), reference_person()
    frames, plan = retarget_frames(PoseFrame(W, H, [ref]), [PoseFrame(W, H, [p]) for p in clip], keep_inside=False)
    target = bone_lengths(ref.body)
    full = bone_lengths(clip[1].body)  # frame 1 has every bone at its full length
    for t, (frame, driver) in enumerate(zip(frames, clip)):
        out, drv = bone_lengths(frame.people[0].body), bone_lengths(driver.body)
        for bone in BONES:
            # the driver's foreshortening as a ratio of its full length, on the reference's length
            expected = target[bone] * min(1.0, drv[bone] / full[bone])
            assert out[bone] == pytest.approx(expected, rel=1e-9), (t, bone)
            assert out[bone] <= target[bone] * (1 + 1e-9), (t, bone)
        for bone, angle in bone_angles(driver.body).items():  # the motion: every bone keeps its direction
            assert bone_angles(frame.people[0].body)[bone] == pytest.approx(angle, abs=1e-9), (t, bone)
    assert bone_lengths(frames[0].people[0].body)[4] == pytest.approx(0.2 * target[4])
    assert bone_lengths(frames[3].people[0].body)[3] == pytest.approx(0.6 * target[3])
    # the first release measured the anchor frame: every later frame got a forearm 5× the reference's
    anchored, _ = retarget_frames(
        PoseFrame(W, H, [ref]), [PoseFrame(W, H, [p]) for p in clip], driver_lengths="anchor", keep_inside=False
    )
    assert bone_lengths(anchored[1].people[0].body)[4] == pytest.approx(5 * target[4])


def test_a_foreshortened_reference_limb_takes_its_mirror_length():
    clip, ref = driving_clip(), reference_person()
    ref.body[7, :2] = ref.body[6, :2] + 0.5 * (ref.body[7, :2] - ref.body[6, :2])  # left forearm at the camera
    lengths = reference_lengths(ref.body)
    assert lengths[7] == pytest.approx(bone_lengths(ref.body)[4])  # the right forearm's length
    frames, _ = retarget_frames(PoseFrame(W, H, [ref]), [PoseFrame(W, H, [p]) for p in clip], keep_inside=False)
    assert bone_lengths(frames[1].people[0].body)[7] == pytest.approx(lengths[7])


def test_proportions_mode_keeps_the_driver_in_place_at_its_size():
    clip, ref = driving_clip(), reference_person()
    frames, plan = retarget_frames(
        PoseFrame(W, H, [ref]), [PoseFrame(W, H, [p]) for p in clip], mode="proportions", keep_inside=False
    )
    ref_len = bone_lengths(ref.body)
    for frame, driver in zip(frames, clip):
        out = frame.people[0].body
        np.testing.assert_allclose(out[NECK, :2], driver.body[NECK, :2], atol=1e-9)  # the driver's place
        got = bone_lengths(out)
        # the reference's proportions, scaled to the driver's size
        np.testing.assert_allclose(got[list(BONES)], ref_len[list(BONES)] / plan.scale, rtol=1e-9)
    total = lambda body: np.nansum(bone_lengths(body)[list(SIZE_BONES)])  # noqa: E731
    assert total(frames[0].people[0].body) == pytest.approx(total(clip[0].body), rel=1e-9)


def test_none_mode_is_the_driving_pose_as_is():
    clip = [PoseFrame(W, H, [p]).resized(W // 2, H // 2) for p in driving_clip()]  # found on a half-size copy
    frames, _ = retarget_frames(PoseFrame(W, H, [reference_person()]), clip, mode="none")
    for frame, driver in zip(frames, clip):
        np.testing.assert_allclose(frame.people[0].body[:, :2], 2 * driver.people[0].body[:, :2], equal_nan=True)


def test_the_clip_is_shifted_into_the_frame_and_shrunk_only_when_it_must_be():
    clip, ref = driving_clip(), reference_person()
    for p in clip[3:]:
        p.body[:, 1] += 450.0  # the driver jumps down: the reference-sized feet would leave the canvas
        p.left_hand[:, 1] += 450.0
        p.face[:, 1] += 450.0
    driving = [PoseFrame(W, H, [p]) for p in clip]
    loose, _ = retarget_frames(PoseFrame(W, H, [ref]), driving, keep_inside=False)
    assert any(not present(f.people[0].body)[[10, 13]].all() for f in loose)  # feet lost below the edge
    frames, plan = retarget_frames(PoseFrame(W, H, [ref]), driving)
    assert plan.fit_scale == 1.0 and plan.fit_shift[0] == 0.0 and plan.fit_shift[1] < 0
    lowest = max(f.people[0].body[:14, 1].max() for f in frames)
    assert lowest == pytest.approx(H - 1 - MARGIN)  # the smallest shift that keeps every joint in
    for a, b in zip(frames, loose):  # one translation for the whole clip: the motion is unchanged
        both = present(a.people[0].body) & present(b.people[0].body)
        moved = a.people[0].body[both, :2] - b.people[0].body[both, :2]
        np.testing.assert_allclose(moved, np.tile(plan.fit_shift, (both.sum(), 1)))
    for p in clip[3:]:
        p.body[:, 1] += 700.0  # now the clip spans more than the canvas: it is scaled down as well
    frames, plan = retarget_frames(PoseFrame(W, H, [ref]), driving)
    assert plan.fit_scale < 1.0
    assert all(present(f.people[0].body)[:14].all() for f in frames)


def test_joints_the_reference_does_not_show_do_not_move_the_clip():
    clip, ref = driving_clip(), reference_person()
    ref.body[[9, 10, 12, 13]] = (np.nan, np.nan, 0.0)  # a reference cut at the thighs
    for p in clip:
        p.body[[10, 13], 1] = H + 600.0  # the driver's ankles far below the canvas
    frames, plan = retarget_frames(PoseFrame(W, H, [ref]), [PoseFrame(W, H, [p]) for p in clip])
    assert plan.fit_scale == 1.0 and not plan.fit_shift.any()
    assert not any(present(f.people[0].body)[[10, 13]].any() for f in frames)  # dropped, never drawn off-canvas


def test_fit_transform_by_hand():
    scale, shift = fit_transform((10.0, -20.0, 100.0, 50.0), 200, 100, centre=(50.0, 50.0), margin=4)
    assert scale == 1.0 and tuple(shift) == (0.0, 24.0)
    scale, shift = fit_transform((-100.0, 0.0, 300.0, 50.0), 200, 100, centre=(100.0, 50.0), margin=4)
    assert scale == pytest.approx(191 / 400) and shift[0] == pytest.approx(4 - (100 - 200 * 191 / 400))


# --- real footage: driving_1.mp4 onto reference_1.png through the MediaPipe backend ----------------------


@pytest.fixture(scope="module")
def real_poses(shared_data):
    footage = example_footage(shared_data)
    assert all(f.people for f in footage.driving) and (footage.driving[0].width, footage.driving[0].height) == (W, H)
    return footage.reference, footage.driving


def test_real_footage_keeps_the_references_proportions_on_every_frame(real_poses):
    reference, driving = real_poses
    ref_len = reference_lengths(reference.people[0].body)
    for mode in ("limbs", "proportions"):
        frames, plan = retarget_frames(reference, driving, mode=mode)
        size = plan.fit_scale / (plan.scale if mode == "proportions" else 1.0)
        ratios = []
        for frame, source in zip(frames, driving):
            out, drv = frame.people[0].body, source.people[0].body
            np.testing.assert_array_equal(present(out)[:14], present(drv)[:14])
            ratios.append(bone_lengths(out)[list(BONES)] / (size * ref_len[list(BONES)]))
            image = draw_xdyna_pose(frame, reference.width, reference.height)
            assert image.any(axis=-1).sum() > 2000
        ratios = np.array(ratios)
        assert np.nanmax(ratios) <= 1 + 1e-9, mode  # never longer than the reference's bone
        # whenever a limb is across the view it has the reference's length: within 3 % at the 90th percentile
        assert (np.nanpercentile(ratios, 90, axis=0) >= 0.97).all(), (mode, np.nanpercentile(ratios, 90, axis=0))
    # measured on one anchor frame (the first release) some bone comes out > 10 % longer than the reference's
    frames, _ = retarget_frames(reference, driving, driver_lengths="anchor")
    stretched = np.nanmax([bone_lengths(f.people[0].body)[list(BONES)] / ref_len[list(BONES)] for f in frames])
    assert stretched > 1.1


def test_real_footage_proportions_mode_keeps_the_head_where_the_face_condition_is(real_poses):
    reference, driving = real_poses
    for mode, near in (("proportions", True), ("limbs", False)):
        frames, _ = retarget_frames(reference, driving, mode=mode)
        offsets = [
            np.hypot(*(f.people[0].body[NOSE, :2] - d.people[0].body[NOSE, :2])) for f, d in zip(frames, driving)
        ]
        assert (np.median(offsets) < 10) == near, (mode, np.median(offsets))
