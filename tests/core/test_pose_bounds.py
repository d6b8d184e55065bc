"""Keypoints only where the picture is: outside the frame or inside letterbox bars they are missing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xdyna_core.pose.bounds import (
    BAR_LEVEL,
    MIN_BAR,
    content_box,
    frame_inside,
    inside,
    intersect,
    person_inside,
)
from xdyna_core.pose.keypoints import PersonPose, PoseFrame, missing_points, present


def letterboxed(count: int = 6, height: int = 96, width: int = 64, box=(0, 20, 50, 90), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(count, height, width, 3, generator=g) * BAR_LEVEL * 0.9  # bars: compression noise
    left, top, right, bottom = box
    frames[:, top:bottom, left:right] = torch.rand(count, bottom - top, right - left, 3, generator=g)
    return frames


def test_content_box_finds_letterbox_and_pillarbox_bars():
    assert content_box(letterboxed()) == (0, 20, 50, 90)
    assert content_box(letterboxed(box=(7, 0, 57, 96))) == (7, 0, 57, 96)
    assert content_box(letterboxed(box=(10, 20, 50, 80))) == (10, 20, 50, 80)  # both: a picture in the middle
    plain = torch.rand(3, 40, 30, 3)
    assert content_box(plain) == (0, 0, 30, 40)


def test_dark_pictures_and_thin_dark_edges_are_not_bars():
    assert content_box(torch.zeros(2, 40, 30, 3)) == (0, 0, 30, 40)  # all dark: the whole frame
    frames = letterboxed(box=(0, 0, 64, 96 - (MIN_BAR - 1)))  # a dark strip thinner than a bar at the bottom
    assert content_box(frames) == (0, 0, 64, 96)
    # a dark scene in some frames: any sampled frame that is bright there keeps the rows in the picture
    frames = letterboxed(box=(0, 0, 64, 96))
    frames[1:, :30] = 0.0
    assert content_box(frames) == (0, 0, 64, 96)
    spots = torch.zeros(2, 96, 64, 3)
    spots[0, 50, 30] = 1.0  # a dark picture with one bright spot: no bars around it
    assert content_box(spots) == (0, 0, 64, 96)
    with pytest.raises(ValueError, match="at least one frame"):
        content_box(torch.zeros(0, 4, 4, 3))


def test_points_on_and_past_the_border():
    points = np.array(
        [[0.0, 0.0, 1.0], [9.99, 4.0, 1.0], [10.0, 4.0, 1.0], [-0.01, 3.0, 1.0], [3.0, 19.5, 1.0], [np.nan, 1, 1]]
    )
    np.testing.assert_array_equal(inside(points, (0, 0, 10, 20)), [True, True, False, False, True, False])
    np.testing.assert_array_equal(inside(points, (0, 0, 10, 19)), [True, True, False, False, False, False])


def test_person_and_frame_keep_only_points_inside():
    body = missing_points(18)
    body[0] = (50.0, 30.0, 1.0)
    body[10] = (40.0, 900.0, 1.0)  # an ankle below an 896-row frame
    body[13] = (60.0, 880.0, 1.0)  # an ankle inside the frame but inside a bottom bar from row 870
    hand = np.column_stack([np.linspace(-5, 15, 21), np.full(21, 100.0), np.ones(21)])
    face = np.column_stack([np.full(70, -20.0), np.full(70, 40.0), np.ones(70)])  # wholly off the left edge
    person = PersonPose(body, face, hand, None)
    kept = person_inside(person, (0, 0, 512, 896))
    assert present(kept.body)[[0, 13]].all() and not present(kept.body)[10]
    assert kept.face is None  # no point of it left: the part is dropped
    assert (present(kept.left_hand) == (hand[:, 0] >= 0)).all()
    boxed = frame_inside(PoseFrame(512, 896, [person]), intersect((0, 0, 512, 896), (0, 0, 512, 870)))
    assert not present(boxed.people[0].body)[13]
    gone = frame_inside(PoseFrame(512, 896, [person]), (200, 200, 300, 300))
    assert gone.people == []
