"""Pose keypoints: typed per-person arrays and the POSE_KEYPOINT format of comfyui_controlnet_aux.

A POSE_KEYPOINT frame is a dict in the OpenPose JSON style that comfyui_controlnet_aux writes (and pose
editors and ComfyUI's own SDPose nodes read)::

    {"people": [{"pose_keypoints_2d": [x, y, c] * 18,      # OpenPose-18 body order, neck included
                 "face_keypoints_2d": [x, y, c] * 70,      # 68 iBUG points + right/left eye (or null)
                 "hand_left_keypoints_2d": [x, y, c] * 21,  # the person's own left hand (or null)
                 "hand_right_keypoints_2d": [x, y, c] * 21}],
     "canvas_width": W, "canvas_height": H}

and a POSE_KEYPOINT value is a list of such frames, one per video frame. Coordinates are pixels of the
W×H canvas (what controlnet_aux's DWPose writes) or normalised to [0, 1] (what several editors write); a
missing point is `[0, 0, 0]`. controlnet_aux writes confidence 1.0 for every kept point and its reader
drops points below 1.0, so that is what we write by default.

In memory a person is a `PersonPose` of `[N, 3]` float arrays `(x, y, confidence)` in canvas pixels, where
a missing point has `x = y = NaN` and confidence 0. Parts that were not detected at all are `None`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

CoordinateStyle = Literal["auto", "pixel", "normalized"]
COORDINATE_STYLES: tuple[str, ...] = ("auto", "pixel", "normalized")

# OpenPose-18 (COCO-18) body order, as controlnet_aux's `pose_keypoints_2d` uses it.
BODY_NAMES: tuple[str, ...] = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)  # fmt: skip
NOSE, NECK = 0, 1
R_SHOULDER, R_ELBOW, R_WRIST, L_SHOULDER, L_ELBOW, L_WRIST = 2, 3, 4, 5, 6, 7
R_HIP, R_KNEE, R_ANKLE, L_HIP, L_KNEE, L_ANKLE = 8, 9, 10, 11, 12, 13
R_EYE, L_EYE, R_EAR, L_EAR = 14, 15, 16, 17
HEAD_POINTS: tuple[int, ...] = (R_EYE, L_EYE, R_EAR, L_EAR)
NUM_BODY, NUM_HAND, NUM_FACE = 18, 21, 68

# The 17 OpenPose limbs in the order of the classic palette (limb i is drawn in colour i).
BODY_LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip

# OpenPose-21 hand layout (MediaPipe's and COCO-WholeBody's are the same): wrist, then 4 points per finger.
HAND_EDGES: tuple[tuple[int, int], ...] = tuple(
    (0 if k == 0 else 4 * f + k, 4 * f + k + 1) for f in range(5) for k in range(4)
)

# COCO-WholeBody (133 points, DWPose's output): body 0–16, feet 17–22, face 23–90, left hand 91–111, right
# hand 112–132 (mmpose `coco_wholebody.py`). OpenPose index → COCO index; the neck has none (it is the mean
# of the shoulders, as DWPose computes it).
WHOLEBODY_TO_BODY: tuple[int | None, ...] = (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
WHOLEBODY_SHOULDERS = (5, 6)
WHOLEBODY_FEET = slice(17, 23)
WHOLEBODY_FACE = slice(23, 91)
WHOLEBODY_LEFT_HAND = slice(91, 112)
WHOLEBODY_RIGHT_HAND = slice(112, 133)

PART_KEYS: dict[str, str] = {
    "body": "pose_keypoints_2d",
    "face": "face_keypoints_2d",
    "left_hand": "hand_left_keypoints_2d",
    "right_hand": "hand_right_keypoints_2d",
}
EXPECTED_POINTS = {"body": NUM_BODY, "left_hand": NUM_HAND, "right_hand": NUM_HAND}


class PoseFormatError(ValueError):
    """A POSE_KEYPOINT value that cannot be read (wrong structure, lengths not multiples of 3, no canvas)."""


def missing_points(n: int) -> np.ndarray:
    """`n` missing points: `[n, 3]` with NaN coordinates and confidence 0."""
    points = np.zeros((n, 3), dtype=np.float64)
    points[:, :2] = np.nan
    return points


def present(points: np.ndarray | None, min_confidence: float = 0.0) -> np.ndarray:
    """Boolean mask of the points that exist: finite coordinates and confidence above `min_confidence`
    (at least `min_confidence` when it is positive)."""
    if points is None:
        return np.zeros(0, dtype=bool)
    finite = np.isfinite(points[:, :2]).all(axis=1) & np.isfinite(points[:, 2])
    conf = np.nan_to_num(points[:, 2], nan=0.0)
    above = conf >= min_confidence if min_confidence > 0 else conf > 0
    return finite & above


def _clean(points: np.ndarray) -> np.ndarray:
    """Canonical missing points: anything non-finite or with confidence ≤ 0 becomes (NaN, NaN, 0)."""
    points = np.array(points, dtype=np.float64, copy=True)
    keep = present(points)
    points[~keep, :2] = np.nan
    points[~keep, 2] = 0.0
    return points


@dataclass
class PersonPose:
    """One person's keypoints in canvas pixels: `[N, 3]` arrays of (x, y, confidence).

    Args:
        body: `[18, 3]`, OpenPose-18 order.
        face: `[68, 3]` iBUG-68 points, or `[70, 3]` with the right and left eye appended (as controlnet_aux
            writes them), or None when no face was found.
        left_hand, right_hand: `[21, 3]` each (the person's own left and right hands), or None.
        extra: other `*_keypoints_2d` lists met when reading (e.g. ComfyUI SDPose's `foot_keypoints_2d`),
            kept so that a read → write round trip loses nothing.
    """

    body: np.ndarray
    face: np.ndarray | None = None
    left_hand: np.ndarray | None = None
    right_hand: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.body = _clean(self.body)
        if self.body.shape != (NUM_BODY, 3):
            raise PoseFormatError(f"a body has {NUM_BODY} points (x, y, confidence), got shape {self.body.shape}")
        for name in ("face", "left_hand", "right_hand"):
            part = getattr(self, name)
            if part is not None:
                part = _clean(part)
                if part.ndim != 2 or part.shape[1] != 3:
                    raise PoseFormatError(f"{name} must be [N, 3] (x, y, confidence), got shape {part.shape}")
                if name in EXPECTED_POINTS and part.shape[0] != EXPECTED_POINTS[name]:
                    raise PoseFormatError(f"{name} has {EXPECTED_POINTS[name]} points, got {part.shape[0]}")
                setattr(self, name, part)
        self.extra = {key: _clean(value) for key, value in self.extra.items()}

    @classmethod
    def empty(cls) -> PersonPose:
        return cls(missing_points(NUM_BODY))

    def parts(self) -> dict[str, np.ndarray | None]:
        return {"body": self.body, "face": self.face, "left_hand": self.left_hand, "right_hand": self.right_hand}

    def copy(self) -> PersonPose:
        return PersonPose(
            self.body.copy(),
            None if self.face is None else self.face.copy(),
            None if self.left_hand is None else self.left_hand.copy(),
            None if self.right_hand is None else self.right_hand.copy(),
            {key: value.copy() for key, value in self.extra.items()},
        )

    def map_points(self, fn) -> PersonPose:
        """A copy with `fn([N, 2]) -> [N, 2]` applied to the coordinates of every part (missing stay missing)."""

        def mapped(points: np.ndarray | None) -> np.ndarray | None:
            if points is None:
                return None
            out = points.copy()
            out[:, :2] = fn(points[:, :2])
            return out

        return PersonPose(
            mapped(self.body),
            mapped(self.face),
            mapped(self.left_hand),
            mapped(self.right_hand),
            {key: mapped(value) for key, value in self.extra.items()},
        )

    def is_empty(self) -> bool:
        return not any(present(part).any() for part in (*self.parts().values(), *self.extra.values()))


@dataclass
class PoseFrame:
    """The people of one frame on a `width × height` canvas (pixel coordinates)."""

    width: int
    height: int
    people: list[PersonPose] = field(default_factory=list)

    def resized(self, width: int, height: int) -> PoseFrame:
        """The same poses on a `width × height` canvas (each axis scaled, as normalised coordinates are)."""
        sx, sy = width / self.width, height / self.height
        scale = np.array([sx, sy])
        return PoseFrame(width, height, [person.map_points(lambda xy: xy * scale) for person in self.people])


# --- reading --------------------------------------------------------------------------------------------


def _points_from_list(values: Any, where: str) -> np.ndarray | None:
    if values is None:
        return None
    try:
        flat = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise PoseFormatError(f"{where} must be a flat list of numbers [x, y, c, ...]: {err}") from None
    if flat.size == 0:
        return None
    if flat.size % 3:
        raise PoseFormatError(f"{where} has {flat.size} numbers, not a multiple of 3 (x, y, confidence per point)")
    return flat.reshape(-1, 3)


def _canvas_size(frame: Mapping[str, Any], default_size: tuple[int, int] | None) -> tuple[int, int]:
    width, height = frame.get("canvas_width"), frame.get("canvas_height")
    if width is None or height is None:
        if default_size is None:
            raise PoseFormatError(
                "the pose frame has no canvas_width/canvas_height; give the canvas size of the image it was detected on"
            )
        return default_size
    width, height = _pixels(width, "canvas_width"), _pixels(height, "canvas_height")
    if width < 1 or height < 1:
        raise PoseFormatError(f"canvas size must be positive, got {width}x{height}")
    return width, height


def _pixels(value: Any, key: str) -> int:
    """A canvas side in whole pixels (numbers and numeric text, as editors write them)."""
    try:
        number = float(value) if isinstance(value, str) else value
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            raise ValueError
        return int(number)
    except (TypeError, ValueError, OverflowError):
        raise PoseFormatError(f"{key} is {value!r}, not a number of pixels") from None


def _looks_normalized(people: list[dict[str, np.ndarray | None]]) -> bool:
    """True when every present coordinate lies in [0, 1] (controlnet_aux's own test, here per frame)."""
    coords = [part[present(part), :2] for person in people for part in person.values() if part is not None]
    coords = [c for c in coords if c.size]
    if not coords:
        return False
    return bool((np.abs(np.concatenate(coords)) <= 1.0).all())


def frame_from_dict(
    frame: Mapping[str, Any] | None,
    coords: CoordinateStyle = "auto",
    default_size: tuple[int, int] | None = None,
) -> PoseFrame:
    """Read one POSE_KEYPOINT frame dict into a `PoseFrame` in canvas pixels.

    Args:
        frame: the dict (`people`, `canvas_width`, `canvas_height`); None or `{}` is an empty frame.
        coords: `pixel`, `normalized`, or `auto` (normalised when every present coordinate is within [0, 1]).
        default_size: (width, height) used when the frame has no canvas size.

    Empty frames, missing parts, `null` lists, NaN/inf coordinates and zero confidences all read as missing.
    """
    if coords not in COORDINATE_STYLES:
        raise ValueError(f"coords must be one of {COORDINATE_STYLES}, got {coords!r}")
    if not frame:
        if default_size is None:
            raise PoseFormatError("an empty pose frame needs a default canvas size")
        return PoseFrame(*default_size)
    if not isinstance(frame, Mapping):
        raise PoseFormatError(f"a pose frame is a dict with 'people', got {type(frame).__name__}")
    width, height = _canvas_size(frame, default_size)
    raw_people = frame.get("people") or []
    parsed: list[dict[str, np.ndarray | None]] = []
    extras: list[dict[str, np.ndarray]] = []
    for p, person in enumerate(raw_people):
        if not isinstance(person, Mapping):
            raise PoseFormatError(f"people[{p}] must be a dict of *_keypoints_2d lists, got {type(person).__name__}")
        parts = {name: _points_from_list(person.get(key), f"people[{p}].{key}") for name, key in PART_KEYS.items()}
        for name, n in EXPECTED_POINTS.items():
            if parts[name] is not None and parts[name].shape[0] != n:
                raise PoseFormatError(
                    f"people[{p}].{PART_KEYS[name]} has {parts[name].shape[0]} points, expected {n}"
                    + (" (OpenPose BODY_25? X-Dyna uses the 18-point COCO body)" if name == "body" else "")
                )
        extra = {}
        for key, values in person.items():
            if key.endswith("_keypoints_2d") and key not in PART_KEYS.values():
                points = _points_from_list(values, f"people[{p}].{key}")
                if points is not None:
                    extra[key] = points
        parsed.append(parts)
        extras.append(extra)

    normalized = coords == "normalized" or (coords == "auto" and _looks_normalized(parsed + extras))
    scale = np.array([width, height], dtype=np.float64) if normalized else None
    people = []
    for parts, extra in zip(parsed, extras):
        if scale is not None:
            for points in (*parts.values(), *extra.values()):
                if points is not None:
                    points[:, :2] *= scale
        body = parts["body"] if parts["body"] is not None else missing_points(NUM_BODY)
        people.append(PersonPose(body, parts["face"], parts["left_hand"], parts["right_hand"], extra))
    return PoseFrame(width, height, people)


def frames_from_pose_keypoint(
    value: Any, coords: CoordinateStyle = "auto", default_size: tuple[int, int] | None = None
) -> list[PoseFrame]:
    """Read a POSE_KEYPOINT value: a list of frame dicts, one frame dict, or their JSON text.

    Frames without a canvas size take the previous frame's (or `default_size`). Frames read already
    (`PoseFrame`s in the list) are taken as they are.
    """
    try:
        return _frames_from_value(value, coords, default_size)
    except RecursionError:
        # JSON text (or a structure) nested thousands of levels deep: no pose is, and Python's parser gives up
        raise PoseFormatError("pose keypoints are nested too deeply to be pose frames") from None


def _frames_from_value(value: Any, coords: CoordinateStyle, default_size: tuple[int, int] | None) -> list[PoseFrame]:
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise PoseFormatError(f"pose keypoints are not valid JSON: {err}") from None
    if value is None:
        return []
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, Sequence):
        raise PoseFormatError(f"POSE_KEYPOINT must be a list of frame dicts, got {type(value).__name__}")
    frames: list[PoseFrame] = []
    size = default_size
    for i, frame in enumerate(value):
        try:
            parsed = frame if isinstance(frame, PoseFrame) else frame_from_dict(frame, coords, size)
        except PoseFormatError as err:
            raise PoseFormatError(f"frame {i}: {err}") from None
        size = (parsed.width, parsed.height)
        frames.append(parsed)
    return frames


# --- writing --------------------------------------------------------------------------------------------


def _points_to_list(
    points: np.ndarray | None, scale: np.ndarray | None, binary: bool, min_confidence: float
) -> list[float] | None:
    if points is None:
        return None
    keep = present(points, min_confidence)
    out = np.zeros_like(points)
    xy = points[keep, :2] / scale if scale is not None else points[keep, :2]
    out[keep, :2] = xy
    out[keep, 2] = 1.0 if binary else points[keep, 2]
    return [float(v) for v in out.reshape(-1)]


def frame_to_dict(
    frame: PoseFrame, normalized: bool = False, binary_confidence: bool = True, min_confidence: float = 0.0
) -> dict[str, Any]:
    """Write a `PoseFrame` as a controlnet_aux POSE_KEYPOINT frame dict.

    Args:
        normalized: write coordinates divided by the canvas size instead of pixels.
        binary_confidence: write 1.0 for every kept point (what controlnet_aux writes; its reader drops points
            below 1.0), else the stored confidences.
        min_confidence: points below it are written as missing `[0, 0, 0]`.
    """
    scale = np.array([frame.width, frame.height], dtype=np.float64) if normalized else None
    people = []
    for person in frame.people:
        entry: dict[str, Any] = {
            key: _points_to_list(getattr(person, name), scale, binary_confidence, min_confidence)
            for name, key in PART_KEYS.items()
        }
        for key, points in person.extra.items():
            entry[key] = _points_to_list(points, scale, binary_confidence, min_confidence)
        people.append(entry)
    return {"people": people, "canvas_width": int(frame.width), "canvas_height": int(frame.height)}


def frames_to_pose_keypoint(frames: Iterable[PoseFrame], normalized: bool = False) -> list[dict[str, Any]]:
    return [frame_to_dict(frame, normalized) for frame in frames]


# --- DWPose (COCO-WholeBody 133) → POSE_KEYPOINT --------------------------------------------------------


def person_from_wholebody(keypoints: np.ndarray, scores: np.ndarray, threshold: float = 0.3) -> PersonPose:
    """One person's 133 COCO-WholeBody points (pixels `[133, 2]`, scores `[133]`) as a `PersonPose`.

    Follows DWPose's conversion: the neck is the mean of the shoulders and exists only when both shoulder
    scores exceed `threshold`; other points are kept when their score is at least `threshold`; a hand or the
    face with no point kept is None; the face gets the body's right and left eye appended (70 points), as
    controlnet_aux writes it. Kept points get confidence 1.0.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if keypoints.shape != (133, 2) or scores.shape != (133,):
        raise PoseFormatError(
            f"expected COCO-WholeBody [133, 2] points and [133] scores, got {keypoints.shape}, {scores.shape}"
        )
    scores = np.nan_to_num(scores, nan=0.0)

    def take(index: Sequence[int] | slice) -> np.ndarray:
        points = np.concatenate([keypoints[index], scores[index, None]], axis=1)
        keep = points[:, 2] >= threshold
        points[keep, 2] = 1.0
        points[~keep] = (np.nan, np.nan, 0.0)
        return points

    body = missing_points(NUM_BODY)
    for op_index, coco_index in enumerate(WHOLEBODY_TO_BODY):
        if coco_index is not None:
            body[op_index] = take([coco_index])[0]
    left, right = WHOLEBODY_SHOULDERS
    if scores[left] > threshold and scores[right] > threshold:
        body[NECK] = (*keypoints[[left, right]].mean(axis=0), 1.0)

    def part(index: slice) -> np.ndarray | None:
        points = take(index)
        return points if present(points).any() else None

    face = part(WHOLEBODY_FACE)
    if face is not None:
        face = np.concatenate([face, body[[R_EYE, L_EYE]]])
    return PersonPose(body, face, part(WHOLEBODY_LEFT_HAND), part(WHOLEBODY_RIGHT_HAND))


def frame_from_wholebody(
    keypoints: np.ndarray, scores: np.ndarray, width: int, height: int, threshold: float = 0.3
) -> dict:
    """DWPose's people of one frame as a controlnet_aux POSE_KEYPOINT frame dict (pixel coordinates).

    Args:
        keypoints: `[P, 133, 2]` COCO-WholeBody points in pixels of the `width × height` frame (P may be 0).
        scores: `[P, 133]` their scores.
        threshold: DWPose's keep threshold (0.3).
    """
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, 133, 2)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1, 133)
    if keypoints.shape[0] != scores.shape[0]:
        raise PoseFormatError(f"{keypoints.shape[0]} people of keypoints but {scores.shape[0]} of scores")
    people = [person_from_wholebody(k, s, threshold) for k, s in zip(keypoints, scores)]
    return frame_to_dict(PoseFrame(int(width), int(height), people))


def bone_length(points: np.ndarray, a: int, b: int) -> float:
    """Distance between points a and b, NaN when either is missing."""
    if not (present(points[[a, b]]).all()):
        return math.nan
    return float(np.hypot(*(points[a, :2] - points[b, :2])))
