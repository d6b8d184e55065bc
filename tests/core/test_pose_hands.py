"""Hands: the search square from the forearm, gap filling relative to the wrist, and detection on real footage."""

from __future__ import annotations

import av
import numpy as np
import pytest

from xdyna_core.pose.hands import SEARCH_SIDE, fill_hand_gaps, hand_rates, hand_search_box
from xdyna_core.pose.keypoints import L_ELBOW, L_WRIST, R_WRIST, PersonPose, missing_points, present


def arm_person(wrist, hand_offset=None) -> PersonPose:
    body = missing_points(18)
    body[L_ELBOW] = (100.0, 100.0, 1.0)
    body[L_WRIST] = (*wrist, 1.0)
    body[R_WRIST] = (300.0, 100.0, 1.0)
    hand = None
    if hand_offset is not None:
        hand = np.column_stack([np.asarray(wrist) + hand_offset, np.ones(21)])
    return PersonPose(body, left_hand=hand)


def test_search_square_continues_the_forearm():
    left, top, side = hand_search_box(np.array([100.0, 140.0]), np.array([100.0, 100.0]))
    assert side == pytest.approx(SEARCH_SIDE * 40)
    centre = (left + side / 2, top + side / 2)
    assert centre == pytest.approx((100.0, 152.0))  # 0.3 forearms past the wrist, along the forearm
    _, _, tiny = hand_search_box(np.array([100.0, 102.0]), np.array([100.0, 100.0]))
    assert tiny == pytest.approx(SEARCH_SIDE * 20)  # a foreshortened forearm still gives a usable square


def test_gaps_are_filled_relative_to_the_moving_wrist():
    offset_a = np.column_stack([np.arange(21.0), np.zeros(21)])
    offset_b = np.column_stack([np.zeros(21), np.arange(21.0)])
    wrists = [(100.0 + 10 * t, 140.0 + 5 * t) for t in range(6)]
    people = [arm_person(wrists[0], offset_a)] + [arm_person(w) for w in wrists[1:4]]
    people += [arm_person(wrists[4], offset_b), arm_person(wrists[5])]
    out, filled = fill_hand_gaps(people, max_gap=3)
    assert filled == {"left_hand": 3, "right_hand": 0}
    for t in (1, 2, 3):
        u = t / 4
        expected = np.asarray(wrists[t]) + (1 - u) * offset_a + u * offset_b
        np.testing.assert_allclose(out[t].left_hand[:, :2], expected)
    assert out[5].left_hand is None  # after the last sighting nothing is invented
    assert people[1].left_hand is None  # inputs are not modified
    short, filled = fill_hand_gaps(people, max_gap=2)
    assert filled["left_hand"] == 0 and short[2].left_hand is None


def test_gaps_without_the_wrist_or_with_missing_points_stay_honest():
    offset = np.column_stack([np.arange(21.0), np.zeros(21)])
    people = [arm_person((100.0, 140.0), offset), arm_person((100.0, 140.0)), arm_person((100.0, 140.0), offset)]
    people[1].body[L_WRIST] = (np.nan, np.nan, 0.0)
    assert fill_hand_gaps(people, 4)[1]["left_hand"] == 0  # no wrist to hang the hand on
    people[1].body[L_WRIST] = (100.0, 140.0, 1.0)
    people[2].left_hand[3] = (np.nan, np.nan, 0.0)
    out, _ = fill_hand_gaps(people, 4)
    assert not present(out[1].left_hand)[3] and present(out[1].left_hand).sum() == 20
    assert hand_rates(out) == {"left_hand": 1.0, "right_hand": 0.0}
    with pytest.raises(ValueError, match="max_gap"):
        fill_hand_gaps(people, -1)


# --- real footage ----------------------------------------------------------------------------------------

RUN = range(180, 228)  # 48 consecutive frames (6 s at 8 fps) of fast arm motion
MISSED = (8, 24, 48, 192, 200)  # frames where Holistic at its own settings misses a visible hand


@pytest.fixture(scope="module")
def footage(shared_data):
    pytest.importorskip("mediapipe.python.solutions", reason="mediapipe 0.10.x (≤ 0.10.21) not installed")
    wanted = set(RUN) | set(MISSED)
    with av.open(str(shared_data / "driving_1.mp4")) as video:
        frames = {i: f.to_ndarray(format="rgb24") for i, f in enumerate(video.decode(video=0)) if i in wanted}
    return frames


def test_more_hands_than_mediapipe_finds_on_its_own(footage):
    from xdyna_core.pose.mediapipe_backend import MEDIAPIPE_HAND_PRESENCE, detect_people

    frames = [footage[i] for i in RUN]
    own = detect_people(frames, hand_presence=MEDIAPIPE_HAND_PRESENCE, hand_crops=False, hand_gap=0)
    lower = detect_people(frames, hand_crops=False, hand_gap=0)
    ours = detect_people(frames, hand_crops=False)
    before, mid, after = hand_rates(own), hand_rates(lower), hand_rates(ours)
    for hand in before:
        assert mid[hand] >= before[hand] + 0.1, (hand, before, mid)
        assert after[hand] >= mid[hand], (hand, mid, after)
        assert after[hand] >= 0.75, after
    for person, theirs in zip(ours, own):  # every hand we add sits at the end of its own arm
        for hand, wrist in (("left_hand", L_WRIST), ("right_hand", R_WRIST)):
            points = getattr(person, hand)
            if points is not None and getattr(theirs, hand) is None:
                forearm = np.hypot(*(person.body[wrist, :2] - person.body[wrist - 1, :2]))
                assert np.hypot(*(points[0, :2] - person.body[wrist, :2])) < max(25.0, 0.6 * forearm)


def test_wrist_crops_find_hands_holistic_missed(footage):
    from xdyna_core.pose.mediapipe_backend import MEDIAPIPE_HAND_PRESENCE, detect_people

    frames = [footage[i] for i in MISSED]
    settings = dict(video=False, hand_presence=MEDIAPIPE_HAND_PRESENCE, hand_gap=0)
    plain = detect_people(frames, hand_crops=False, **settings)
    cropped = detect_people(frames, hand_crops=True, **settings)
    count = lambda people: sum(getattr(p, h) is not None for p in people for h in ("left_hand", "right_hand"))  # noqa: E731
    assert count(cropped) >= count(plain) + 2, (count(plain), count(cropped))
    for a, b in zip(plain, cropped):
        for hand in ("left_hand", "right_hand"):
            if getattr(a, hand) is not None:  # what Holistic found is kept as it was
                np.testing.assert_array_equal(getattr(a, hand), getattr(b, hand))
