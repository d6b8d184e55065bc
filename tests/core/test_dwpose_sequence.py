"""Person choice and frames without a person: never a crash, and predictable poses in the gaps."""

from __future__ import annotations

import numpy as np
import pytest

from xdyna_core.pose.dwpose_sequence import FramePeople, choose_people, fill_missing


def people(*boxes, k: int = 4, value: float | None = None) -> FramePeople:
    """People with the given boxes; person i's keypoints all sit at `value` (default: its box centre)."""
    if not boxes:
        return FramePeople.empty(k)
    b = np.asarray(boxes, np.float32)
    centres = (b[:, :2] + b[:, 2:]) / 2.0 if value is None else np.full((len(b), 2), value, np.float32)
    return FramePeople(
        np.repeat(centres[:, None], k, axis=1),
        np.full((len(b), k), 0.9, np.float32),
        b,
        np.linspace(0.9, 0.5, len(b)).astype(np.float32),
    )


CROWD = people([300, 0, 340, 100], [0, 0, 100, 300], [150, 0, 200, 50])  # detector order: not left to right


def test_largest_index_and_all():
    np.testing.assert_array_equal(choose_people(CROWD, "largest").boxes, [[0, 0, 100, 300]])
    np.testing.assert_array_equal(choose_people(CROWD, "index", 0).boxes, [[0, 0, 100, 300]])  # leftmost
    np.testing.assert_array_equal(choose_people(CROWD, "index", 2).boxes, [[300, 0, 340, 100]])
    np.testing.assert_array_equal(choose_people(CROWD, "all").boxes[:, 0], [0, 150, 300])
    assert len(choose_people(CROWD, "index", 3)) == 0  # fewer people than asked for: a frame without a person
    assert len(choose_people(FramePeople.empty(), "largest")) == 0


def test_bad_choices_are_clear_errors():
    with pytest.raises(ValueError, match="person choice"):
        choose_people(CROWD, "tallest")
    with pytest.raises(ValueError, match="0 or more"):
        choose_people(CROWD, "index", -1)
    with pytest.raises(ValueError, match="missing-person mode"):
        fill_missing([CROWD], "guess")


def test_repeat_previous_holds_the_last_pose_and_the_first_for_leading_gaps():
    a, b = people([0, 0, 10, 10]), people([20, 20, 40, 40])
    gap = FramePeople.empty(4)
    filled = fill_missing([gap, a, gap, gap, b, gap], "repeat_previous")
    assert [f is a for f in filled] == [True, True, True, True, False, False]
    assert filled[4] is b and filled[5] is b


def test_interpolate_is_linear_between_neighbours_and_holds_the_ends():
    a, b = people([0, 0, 10, 10], value=0.0), people([0, 0, 30, 50], value=40.0)
    b = FramePeople(b.keypoints, b.scores.copy(), b.boxes, b.box_scores)
    b.scores[0, 1] = 0.1  # a keypoint lost at one end stays lost in between
    gap = FramePeople.empty(4)
    filled = fill_missing([gap, a, gap, gap, gap, b, gap], "interpolate")
    assert filled[0] is a and filled[6] is b
    for i, t in ((2, 0.25), (3, 0.5), (4, 0.75)):
        np.testing.assert_allclose(filled[i].keypoints, 40.0 * t)
        np.testing.assert_allclose(filled[i].boxes, [[0, 0, 10 + 20 * t, 10 + 40 * t]])
        np.testing.assert_allclose(filled[i].scores, [[0.9, 0.1, 0.9, 0.9]])


def test_interpolate_with_different_crowds_takes_the_nearer_frame():
    one, two = people([0, 0, 10, 10]), CROWD
    gap = FramePeople.empty(4)
    filled = fill_missing([one, gap, gap, gap, two], "interpolate")
    assert filled[1] is one and filled[2] is one and filled[3] is two


def test_empty_mode_and_videos_without_anyone():
    gap = FramePeople.empty(4)
    frames = [gap, CROWD, gap]
    assert fill_missing(frames, "empty") == frames
    for mode in ("repeat_previous", "interpolate", "empty"):
        out = fill_missing([gap, gap], mode)
        assert [len(f) for f in out] == [0, 0]
    assert fill_missing([], "interpolate") == []
