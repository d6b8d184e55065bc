"""Skeleton images in the style X-Dyna was trained on (docs/xdyna_model.md §5), drawn like DWPose / controlnet_aux draw them.

Measured on the official rendering `pose_1.mp4` (see tests/core/test_pose_draw.py): black background;
the OpenPose body limbs as filled ellipses (half-width 4 px) in the classic 18-colour palette × 0.6; joints
as radius-4 discs in the full palette colour; no head skeleton (eyes, ears and their limbs are absent, the
nose–neck limb and the nose are drawn); both hands in DWPose's style (edges 2 px wide in 20 HSV-rainbow
colours, joints as blue radius-4 discs); no face. The geometry reproduces DWPose's drawing calls exactly
(cv2 `ellipse2Poly` with integer centre/axes/angle, `fillConvexPoly`, `circle`, `line`), so a pose drawn
from the same keypoints matches pixel for pixel. Unlike DWPose, a joint off the canvas is not drawn, and neither
are its limbs (DWPose draws the part of such a limb that shows). Images are RGB, `[H, W, 3]` uint8.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

from .bounds import inside
from .keypoints import BODY_LIMBS, HAND_EDGES, HEAD_POINTS, NUM_BODY, PoseFrame, frame_from_dict, present

# The OpenPose palette (RGB): joint i is drawn in colour i, limb i in colour i × 0.6.
BODY_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip
LIMB_DIM = 0.6
LIMB_COLORS: tuple[tuple[int, int, int], ...] = tuple(
    tuple(int(float(c) * LIMB_DIM) for c in color) for color in BODY_COLORS[: len(BODY_LIMBS)]
)
# Hand edge e is drawn in HSV (e / 20, 1, 1) × 255 (float; cv2 rounds it when drawing); joints in blue.
HAND_EDGE_COLORS: tuple[tuple[float, float, float], ...] = tuple(
    tuple(c * 255.0 for c in colorsys.hsv_to_rgb(e / len(HAND_EDGES), 1.0, 1.0)) for e in range(len(HAND_EDGES))
)
HAND_POINT_COLOR = (0, 0, 255)
HAND_LINE_WIDTH = 2
FACE_POINT_COLOR = (255, 255, 255)
FACE_POINT_RADIUS = 3

# The limbs X-Dyna draws: all but those touching eyes and ears (limbs 13–16).
XDYNA_LIMBS: tuple[int, ...] = tuple(
    i for i, (a, b) in enumerate(BODY_LIMBS) if a not in HEAD_POINTS and b not in HEAD_POINTS
)
XDYNA_JOINTS: tuple[int, ...] = tuple(i for i in range(NUM_BODY) if i not in HEAD_POINTS)


def _int(value: float) -> int:
    """DWPose's `int()` truncation, made immune to the last-bit error of a pixel → normalised → pixel trip
    (185.99999999999997 must draw where 186 does)."""
    return int(value + math.copysign(1e-6, value))


def _as_frame(frame: PoseFrame | Mapping[str, Any], width: int, height: int) -> PoseFrame:
    if isinstance(frame, PoseFrame):
        return frame.resized(width, height) if (frame.width, frame.height) != (width, height) else frame
    parsed = frame_from_dict(frame, "auto", default_size=(width, height))
    return parsed.resized(width, height) if (parsed.width, parsed.height) != (width, height) else parsed


def _drawable(points: np.ndarray | None, width: int, height: int, min_confidence: float) -> np.ndarray:
    """Points that exist, are confident enough and lie on the canvas: a joint off the canvas is not drawn, nor
    are its limbs (a stub running to the edge would show a limb the picture does not have)."""
    if points is None:
        return np.zeros(0, dtype=bool)
    return present(points, min_confidence) & inside(points, (0, 0, width, height))


def draw_limb(canvas: np.ndarray, p1: np.ndarray, p2: np.ndarray, color, stick_width: int) -> None:
    """One body limb as DWPose draws it: an ellipse through both joints, `stick_width` half-thick."""
    mean_x, mean_y = (p1[0] + p2[0]) / 2.0, (p1[1] + p2[1]) / 2.0
    length = math.hypot(p1[0] - p2[0], p1[1] - p2[1])
    angle = math.degrees(math.atan2(p1[1] - p2[1], p1[0] - p2[0]))
    polygon = cv2.ellipse2Poly((_int(mean_x), _int(mean_y)), (_int(length / 2), stick_width), _int(angle), 0, 360, 1)
    cv2.fillConvexPoly(canvas, polygon, color)


def draw_bodies(
    canvas: np.ndarray,
    bodies: list[np.ndarray],
    limbs: tuple[int, ...],
    joints: tuple[int, ...],
    stick_width: int,
    point_radius: int,
    min_confidence: float,
) -> None:
    """All limbs (limb by limb over people, as DWPose loops), then all joints on top."""
    height, width = canvas.shape[:2]
    drawable = [_drawable(body, width, height, min_confidence) for body in bodies]
    for limb in limbs:
        a, b = BODY_LIMBS[limb]
        for body, ok in zip(bodies, drawable):
            if ok[a] and ok[b]:
                draw_limb(canvas, body[a], body[b], LIMB_COLORS[limb], stick_width)
    for joint in joints:
        for body, ok in zip(bodies, drawable):
            if ok[joint]:
                x, y = body[joint, :2]
                cv2.circle(canvas, (_int(x), _int(y)), point_radius, BODY_COLORS[joint], thickness=-1)


def draw_hand(canvas: np.ndarray, hand: np.ndarray | None, point_radius: int, min_confidence: float) -> None:
    """DWPose's hand: rainbow edges 2 px wide, blue joints; like DWPose, nothing on row 0 or column 0 (its
    missing-point marker)."""
    if hand is None:
        return
    height, width = canvas.shape[:2]
    ok = _drawable(hand, width, height, min_confidence)
    pixels = [(_int(x), _int(y)) if good else None for (x, y), good in zip(np.nan_to_num(hand[:, :2]), ok)]
    ok = [p is not None and p[0] > 0 and p[1] > 0 for p in pixels]
    for edge, (a, b) in enumerate(HAND_EDGES):
        if ok[a] and ok[b]:
            cv2.line(canvas, pixels[a], pixels[b], HAND_EDGE_COLORS[edge], thickness=HAND_LINE_WIDTH)
    for point, good in zip(pixels, ok):
        if good:
            cv2.circle(canvas, point, point_radius, HAND_POINT_COLOR, thickness=-1)


def draw_face(canvas: np.ndarray, face: np.ndarray | None, min_confidence: float) -> None:
    if face is None:
        return
    height, width = canvas.shape[:2]
    for (x, y), good in zip(np.nan_to_num(face[:, :2]), _drawable(face, width, height, min_confidence)):
        if good and _int(x) > 0 and _int(y) > 0:
            cv2.circle(canvas, (_int(x), _int(y)), FACE_POINT_RADIUS, FACE_POINT_COLOR, thickness=-1)


def draw_pose(
    frame: PoseFrame | Mapping[str, Any],
    width: int,
    height: int,
    *,
    stick_width: int = 4,
    point_radius: int = 4,
    body: bool = True,
    hands: bool = True,
    head: bool = False,
    face: bool = False,
    min_confidence: float = 0.3,
) -> np.ndarray:
    """Draw every person of a pose frame on a black `height × width` RGB canvas.

    Args:
        frame: a `PoseFrame` or a POSE_KEYPOINT frame dict (pixel or normalised coordinates, detected as
            controlnet_aux does). Coordinates are mapped from the frame's canvas to `width × height`.
        stick_width: half-thickness of the body limbs (DWPose: 4).
        point_radius: radius of body and hand joints (DWPose: 4).
        body, hands, face: which parts to draw. head: also the eyes, ears and their limbs (OpenPose's full
            skeleton; X-Dyna's renderings omit them).
        min_confidence: points with a lower confidence are not drawn (DWPose keeps scores ≥ 0.3; what we
            write carries 1.0).
    """
    if width < 1 or height < 1:
        raise ValueError(f"canvas size must be positive, got {width}x{height}")
    if stick_width < 1 or point_radius < 0:
        raise ValueError(f"stick_width must be ≥ 1 and point_radius ≥ 0, got {stick_width} and {point_radius}")
    pose = _as_frame(frame, width, height)
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    if body:
        limbs = tuple(range(len(BODY_LIMBS))) if head else XDYNA_LIMBS
        joints = tuple(range(NUM_BODY)) if head else XDYNA_JOINTS
        draw_bodies(canvas, [p.body for p in pose.people], limbs, joints, stick_width, point_radius, min_confidence)
    if hands:
        for person in pose.people:
            draw_hand(canvas, person.left_hand, point_radius, min_confidence)
            draw_hand(canvas, person.right_hand, point_radius, min_confidence)
    if face:
        for person in pose.people:
            draw_face(canvas, person.face, min_confidence)
    return canvas


def draw_xdyna_pose(
    frame: PoseFrame | Mapping[str, Any],
    width: int,
    height: int,
    stick_width: int = 4,
    point_radius: int = 4,
    hands: bool = True,
) -> np.ndarray:
    """One pose frame in X-Dyna's style (body without eyes/ears, hands, no face) as `[H, W, 3]` uint8 RGB."""
    return draw_pose(frame, width, height, stick_width=stick_width, point_radius=point_radius, hands=hands)
