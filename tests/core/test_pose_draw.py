"""X-Dyna-style pose drawing: exact geometry on synthetic poses, and the official rendering `pose_1.mp4`.

The official pose video carries no keypoints, so its joints are read back from the frames (each body joint is
a disc in its own palette colour) and redrawn with our renderer; limb thickness and joint size are the
values that reproduce the official pixels best.
"""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from xdyna_core.pose.draw import (
    BODY_COLORS,
    HAND_EDGE_COLORS,
    HAND_POINT_COLOR,
    LIMB_COLORS,
    XDYNA_JOINTS,
    XDYNA_LIMBS,
    draw_pose,
    draw_xdyna_pose,
)
from xdyna_core.pose.keypoints import BODY_LIMBS, HEAD_POINTS, PersonPose, PoseFrame, frame_to_dict, missing_points

W, H = 512, 896
HEAD_LIMBS = tuple(i for i in range(len(BODY_LIMBS)) if i not in XDYNA_LIMBS)


def standing_person(dx: float = 0.0) -> PersonPose:
    xy = {
        0: (256, 150), 1: (256, 210), 2: (216, 212), 3: (196, 300), 4: (186, 380), 5: (296, 212), 6: (316, 300),
        7: (326, 380), 8: (230, 420), 9: (228, 560), 10: (226, 700), 11: (282, 420), 12: (284, 560),
        13: (286, 700), 14: (246, 140), 15: (266, 140), 16: (236, 146), 17: (276, 146),
    }  # fmt: skip
    body = missing_points(18)
    for j, (x, y) in xy.items():
        body[j] = (x + dx, y, 1.0)
    # wrist, then four points down each of five spread fingers
    hand = np.array(
        [[186 + dx, 390, 1.0]] + [[162 + dx + 12 * f, 390 + 14 * k, 1.0] for f in range(5) for k in range(1, 5)]
    )
    right = hand.copy()
    right[:, 0] += 140
    face = np.array([[236 + dx + k % 10 * 4, 130 + k // 10 * 6, 1.0] for k in range(70)])
    return PersonPose(body, face, hand, right)


def channel_max(image: np.ndarray) -> np.ndarray:
    """Max over the colour channels (channel by channel: numpy's reduction over a last axis of 3 is slow)."""
    return np.maximum(np.maximum(image[..., 0], image[..., 1]), image[..., 2])


def colour_mask(image: np.ndarray, colour, tol: int = 0) -> np.ndarray:
    target = np.round(np.asarray(colour, dtype=float)).astype(np.int16)
    return channel_max(np.abs(image.astype(np.int16) - target)) <= tol


def test_xdyna_style_on_a_synthetic_pose():
    person = standing_person()
    image = draw_xdyna_pose(frame_to_dict(PoseFrame(W, H, [person])), W, H)
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    for joint in XDYNA_JOINTS:  # discs in the full palette colour, centred on the integer joint position
        x, y = person.body[joint, :2].astype(int)
        assert tuple(image[y, x]) == BODY_COLORS[joint], joint
        assert colour_mask(image[y - 4 : y + 5, x - 4 : x + 5], BODY_COLORS[joint]).sum() == 49  # radius 4
    for limb in XDYNA_LIMBS:  # limbs in the palette × 0.6
        a, b = BODY_LIMBS[limb]
        if {a, b} & {2, 5}:  # the shoulder limbs overlap their neighbours near the neck
            continue
        mid = person.body[[a, b], :2].mean(axis=0).astype(int)
        assert tuple(image[mid[1], mid[0]]) == LIMB_COLORS[limb], limb
    for joint in HEAD_POINTS:  # no eyes or ears
        assert not colour_mask(image, BODY_COLORS[joint]).any(), joint
    for limb in HEAD_LIMBS:
        assert not colour_mask(image, LIMB_COLORS[limb]).any(), limb
    assert not colour_mask(image, (255, 255, 255)).any()  # no face
    assert colour_mask(image, HAND_POINT_COLOR).sum() > 0
    assert all(colour_mask(image, c, tol=1).any() for c in HAND_EDGE_COLORS)


def test_limb_thickness_and_point_size_follow_the_settings():
    body = missing_points(18)
    body[8], body[9] = (100.0, 100.0, 1.0), (100.0, 400.0, 1.0)  # a vertical right thigh
    frame = PoseFrame(W, H, [PersonPose(body)])
    for stick in (2, 4, 7):
        image = draw_pose(frame, W, H, stick_width=stick, point_radius=0)
        row = colour_mask(image[250], LIMB_COLORS[7])
        assert row.sum() == 2 * stick + 1, stick  # half-thickness `stick` around the axis
    for radius in (2, 4, 6):
        image = draw_pose(frame, W, H, point_radius=radius)
        assert colour_mask(image[100], BODY_COLORS[8]).sum() == 2 * radius + 1


def test_head_face_and_hand_switches():
    frame = PoseFrame(W, H, [standing_person()])
    full = draw_pose(frame, W, H, head=True, face=True)
    for joint in HEAD_POINTS:
        assert colour_mask(full, BODY_COLORS[joint]).any()
    assert colour_mask(full, (255, 255, 255)).any()
    no_hands = draw_xdyna_pose(frame, W, H, hands=False)
    hand_only = [c for c in HAND_EDGE_COLORS if min(np.abs(np.subtract(c, BODY_COLORS)).max(1)) > 2]
    assert len(hand_only) == 18  # hues 0 and 0.5 are also the nose's red and the right knee's cyan
    assert not any(colour_mask(no_hands, c, tol=1).any() for c in hand_only)
    assert colour_mask(no_hands, HAND_POINT_COLOR).sum() == 49  # only the left knee's disc is that blue


def test_coordinate_styles_and_canvas_scaling_give_the_same_image():
    frame = PoseFrame(W, H, [standing_person()])
    pixel = draw_xdyna_pose(frame_to_dict(frame), W, H)
    normalized = draw_xdyna_pose(frame_to_dict(frame, normalized=True), W, H)
    half = frame.resized(W // 2, H // 2)
    from_half = draw_xdyna_pose(frame_to_dict(half), W, H)
    assert np.array_equal(pixel, normalized)
    assert np.array_equal(pixel, from_half)


def test_several_people_empty_and_broken_frames():
    two = draw_xdyna_pose(PoseFrame(W, H, [standing_person(-120), standing_person(120)]), W, H, hands=False)
    assert colour_mask(two, BODY_COLORS[0]).sum() == 2 * 49
    assert not draw_xdyna_pose({"people": [], "canvas_width": W, "canvas_height": H}, W, H).any()
    assert not draw_xdyna_pose({}, W, H).any()
    body = standing_person().body
    body[0] = (np.nan, 5.0, 1.0)
    body[3] = (1e12, -1e12, 1.0)  # far off the canvas: not drawn, no overflow in cv2
    image = draw_xdyna_pose(PoseFrame(W, H, [PersonPose(body)]), W, H)
    assert not colour_mask(image, BODY_COLORS[0]).any()
    assert not colour_mask(image, LIMB_COLORS[2]).any() and not colour_mask(image, LIMB_COLORS[3]).any()


def test_points_past_the_border_are_not_drawn_nor_their_limbs():
    body = standing_person().body
    body[10] = (226.0, H + 0.25, 1.0)  # right ankle just below the canvas
    body[13] = (286.0, H - 1.0, 1.0)  # left ankle on the last row
    body[4] = (-0.5, 380.0, 1.0)  # right wrist just left of the canvas
    image = draw_xdyna_pose(PoseFrame(W, H, [PersonPose(body)]), W, H, hands=False)
    assert not colour_mask(image, BODY_COLORS[10]).any() and not colour_mask(image, LIMB_COLORS[8]).any()
    assert not colour_mask(image, BODY_COLORS[4]).any() and not colour_mask(image, LIMB_COLORS[3]).any()
    assert colour_mask(image, BODY_COLORS[13]).any() and colour_mask(image, LIMB_COLORS[11]).any()
    assert colour_mask(image, BODY_COLORS[9]).any() and colour_mask(image, LIMB_COLORS[2]).any()


# --- the official rendering ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def official_frames(shared_data) -> list[np.ndarray]:
    """Every 40th frame of the official pose video (15 frames, 512×896, H.264)."""
    with av.open(str(shared_data / "pose_1.mp4")) as video:
        frames = [f.to_ndarray(format="rgb24") for i, f in enumerate(video.decode(video=0)) if i % 40 == 0]
    assert frames[0].shape == (H, W, 3)
    return frames


def named_palette() -> tuple[list[str], np.ndarray]:
    names, colours = [], []
    for i, c in enumerate(BODY_COLORS):
        names.append(f"joint{i}")
        colours.append(c)
    for i in range(len(BODY_LIMBS)):
        names.append(f"limb{i}")
        colours.append(tuple(int(v * 0.6) for v in BODY_COLORS[i]))
    for i, c in enumerate(HAND_EDGE_COLORS):
        names.append(f"hand{i}")
        colours.append(tuple(round(v) for v in c))
    return names, np.array(colours)


def flat_pixels(image: np.ndarray) -> np.ndarray:
    """Pixels inside a drawn shape, away from its edges (where the video's chroma subsampling mixes colours)."""
    spread = np.stack(
        [
            cv2.dilate(image[..., c], np.ones((3, 3))).astype(int) - cv2.erode(image[..., c], np.ones((3, 3)))
            for c in range(3)
        ],
        -1,
    )
    return (channel_max(image) > 40) & (channel_max(spread) < 25)


def test_official_palette_is_ours_without_eyes_and_ears(official_frames):
    names, colours = named_palette()
    counts: dict[str, int] = {}
    for frame in official_frames:
        pixels = frame[flat_pixels(frame)].astype(int)
        distance = np.abs(pixels[:, None, :] - colours[None]).max(-1)
        assert distance.min(1).max() <= 30, "a colour outside the OpenPose/DWPose palette"
        for index in distance.argmin(1):
            counts[names[index]] = counts.get(names[index], 0) + 1
    drawn = {f"joint{j}" for j in XDYNA_JOINTS} | {f"limb{i}" for i in XDYNA_LIMBS}
    head = {f"joint{j}" for j in HEAD_POINTS} | {f"limb{i}" for i in HEAD_LIMBS}
    assert drawn <= set(counts), f"palette colours we draw but the official frames lack: {drawn - set(counts)}"
    assert not head & set(counts), f"eye/ear colours in the official frames: {head & set(counts)}"
    assert set(counts) <= drawn | {f"hand{i}" for i in range(len(HAND_EDGE_COLORS))}


def joints_from_official(frame: np.ndarray) -> np.ndarray:
    """Body joints read back from an official frame: the centroid of the disc in each joint's colour."""
    body = missing_points(18)
    frame = frame.astype(np.int16)
    bright = channel_max(frame) >= 200
    # the left knee's blue is also the hand joints' blue: take it after the hip and ankle, nearest their midpoint
    for joint in [j for j in XDYNA_JOINTS if j != 12] + [12]:
        mask = (colour_mask(frame, BODY_COLORS[joint], tol=70) & bright).astype(np.uint8)
        n, _, stats, centres = cv2.connectedComponentsWithStats(mask)
        found = [(stats[i, 4], centres[i]) for i in range(1, n) if stats[i, 4] >= 20]
        if not found:
            continue
        if joint == 12 and np.isfinite(body[[11, 13], 0]).all():
            middle = body[[11, 13], :2].mean(axis=0)
            _, centre = min(found, key=lambda f: np.hypot(*(f[1] - middle)))
        else:
            _, centre = min(found, key=lambda f: abs(f[0] - 49))
        body[joint] = (*centre, 1.0)
    return body


class OfficialFrame:
    """An official frame with what the comparison needs precomputed: its flat body pixels off the hands."""

    def __init__(self, frame: np.ndarray):
        self.frame = frame.astype(np.int16)
        hands = cv2.dilate(colour_mask(frame, HAND_POINT_COLOR, tol=70).astype(np.uint8), np.ones((15, 15))) > 0
        self.body = flat_pixels(frame) & ~hands
        self.pose = PoseFrame(W, H, [PersonPose(joints_from_official(frame))])

    def mismatch(self, ours: np.ndarray) -> tuple[int, float]:
        """Pixels that differ by more than compression explains, away from our shapes' edges; and the share
        of the official body pixels (hand areas excluded) that we reproduce."""
        differ = channel_max(np.abs(self.frame - ours)) > 60
        grey = ours.sum(-1).astype(np.float32)
        edges = cv2.dilate(grey, np.ones((3, 3))) != cv2.erode(grey, np.ones((3, 3)))
        return int((differ & ~edges).sum()), float((~differ[self.body]).mean())


def test_official_geometry_is_stick_4_and_radius_4(official_frames):
    settings = [(4, 4), (3, 4), (5, 4), (4, 3), (4, 5)]
    best_settings, coverage = [], []
    for frame in official_frames:
        official = OfficialFrame(frame)
        scores = {
            (stick, radius): official.mismatch(
                draw_pose(official.pose, W, H, stick_width=stick, point_radius=radius, hands=False).astype(np.int16)
            )
            for stick, radius in settings
        }
        best_settings.append(min(scores, key=lambda k: scores[k][0]))
        coverage.append(scores[(4, 4)][1])
    assert all(best == (4, 4) for best in best_settings), best_settings
    # the rest is joints hidden under hand dots (their limbs cannot be redrawn) and compression
    assert np.mean(coverage) > 0.97 and min(coverage) > 0.9, coverage
