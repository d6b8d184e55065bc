"""Face landmarks for S-Face: the 68 iBUG points of each frame, read from POSE_KEYPOINT frames.

S-Face (docs/xdyna_model.md §5) is defined on the 68-point iBUG-300W layout that face_alignment returns in the official
code: jaw 0–16, brows 17–26, nose 27–35, the person's right eye 36–41 (image left on a frontal face), left
eye 42–47, mouth 48–67. A POSE_KEYPOINT person's `face_keypoints_2d` holds these 68 points (controlnet_aux
appends the two body eyes as points 68–69), or, from a MediaPipe source, the 468-point face mesh (478 with
the irises), which is mapped to the 68 points through `MEDIAPIPE_TO_IBUG68`.

Landmarks here are `[68, 2]` float64 arrays of canvas pixels with NaN for a missing point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..pose.keypoints import L_EAR, L_EYE, NOSE, R_EAR, R_EYE, PersonPose, PoseFrame, frames_from_pose_keypoint, present

NUM_IBUG = 68
MESH_SIZES = (468, 478)  # MediaPipe face mesh, without and with the 10 iris points

# The index ranges the official code averages for the patch centres. They are one index later than the
# iBUG ranges 42–47 / 36–41 / 48–67 (so the inner corner of the left eye, the outer corner of the right eye and
# the right mouth corner are left out): we keep the slices as released, since the model was trained on them.
LEFT_EYE = slice(43, 48)
RIGHT_EYE = slice(37, 42)
MOUTH = slice(49, 68)
FEATURE_SLICES = (LEFT_EYE, RIGHT_EYE, MOUTH)
FEATURE_NAMES = ("left_eye", "right_eye", "mouth")

# MediaPipe face-mesh vertex for each iBUG point (0-based, iBUG order). Eyes, brows, nose and mouth are the
# correspondences published in PeizhiYan/Mediapipe_2_Dlib_Landmarks and other public tables (which agree on
# them); the jaw follows the table that tracks the jaw line through 172/149/148 and 377/378/397, which halved
# the jaw error of the alternative (93/136/176 …) in our measurement. Measured against dlib's iBUG-68 predictor
# on 29 frames of the example driving video (errors relative to the outer-eye-corner distance, mean): eyes
# 0.029, mouth 0.043, nose 0.037, brows 0.052, jaw 0.073; patch centres 0.020–0.028; landmark bbox edges
# 0.025–0.064. Every group lies in MediaPipe's own named regions (FACEMESH_RIGHT_EYE, _LIPS, _FACE_OVAL, …),
# which tests check when mediapipe is installed.
MEDIAPIPE_TO_IBUG68: tuple[int, ...] = (
    127, 234, 132, 58, 172, 150, 149, 148, 152, 377, 378, 379, 397, 288, 361, 454, 356,  # jaw 0–16
    70, 63, 105, 66, 107,  # right brow 17–21
    336, 296, 334, 293, 300,  # left brow 22–26
    168, 197, 5, 4,  # nose bridge 27–30
    75, 97, 2, 326, 305,  # nose base 31–35
    33, 160, 158, 133, 153, 144,  # right eye 36–41
    362, 385, 387, 263, 373, 380,  # left eye 42–47
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,  # outer lips 48–59
    78, 82, 13, 312, 308, 317, 14, 87,  # inner lips 60–67
)  # fmt: skip


# The body's head keypoints S-Face falls back on where the face landmarks are missing (`body_face`).
HEAD_JOINTS: tuple[int, ...] = (NOSE, R_EYE, L_EYE, R_EAR, L_EAR)


def head_points(person: PersonPose | None) -> np.ndarray | None:
    """`[5, 2]` pixel head keypoints of a person (NaN for missing ones), None with fewer than two."""
    if person is None:
        return None
    body = person.body
    ok = present(body)[list(HEAD_JOINTS)]
    if ok.sum() < 2:
        return None
    points = body[list(HEAD_JOINTS), :2].copy()
    points[~ok] = np.nan
    return points


class FaceLandmarkError(ValueError):
    """Face keypoints that cannot be read as 68 iBUG points (an unknown point count)."""


def mediapipe_to_ibug68(mesh: np.ndarray) -> np.ndarray:
    """Map MediaPipe face-mesh points `[..., 468 or 478, D]` to the 68 iBUG points `[..., 68, D]`."""
    mesh = np.asarray(mesh)
    if mesh.ndim < 2 or mesh.shape[-2] not in MESH_SIZES:
        raise FaceLandmarkError(f"a MediaPipe face mesh has 468 or 478 points, got shape {mesh.shape}")
    return mesh[..., list(MEDIAPIPE_TO_IBUG68), :]


def ibug68_from_face_points(face: np.ndarray) -> np.ndarray:
    """68 iBUG points `[68, 3]` (x, y, confidence) from a person's face keypoints of any supported layout.

    68 points are taken as they are; 70 (controlnet_aux appends the body's two eyes) lose the last two; 468 or
    478 (MediaPipe's mesh) are mapped through `MEDIAPIPE_TO_IBUG68`.
    """
    n = face.shape[0]
    if n in (NUM_IBUG, NUM_IBUG + 2):
        return face[:NUM_IBUG]
    if n in MESH_SIZES:
        return mediapipe_to_ibug68(face)
    raise FaceLandmarkError(
        f"face keypoints have {n} points; S-Face needs the 68 iBUG points (68 or 70 as controlnet_aux writes them) "
        f"or MediaPipe's 468/478-point face mesh"
    )


def usable_landmarks(points: np.ndarray, min_points: int = NUM_IBUG // 2) -> bool:
    """Whether a `[68, 2]` landmark set (NaN = missing) can place S-Face: at least `min_points` present and at
    least one point in each of the eye and mouth ranges."""
    ok = np.isfinite(points).all(axis=1)
    return bool(ok.sum() >= min_points and all(ok[s].any() for s in FEATURE_SLICES))


def _face_size(points: np.ndarray) -> float:
    ok = np.isfinite(points).all(axis=1)
    if not ok.any():
        return -1.0
    span = points[ok].max(axis=0) - points[ok].min(axis=0)
    return float(max(span))


@dataclass(frozen=True)
class FrameLandmarks:
    """The chosen face of one frame: `points` `[68, 2]` canvas pixels (NaN = missing), None when absent; and
    the same person's body head keypoints `head` `[5, 2]` (`HEAD_JOINTS`), None when absent."""

    points: np.ndarray | None
    canvas: tuple[int, int]  # (width, height) the coordinates refer to
    people: int  # how many people the frame held (for messages)
    head: np.ndarray | None = None


def select_face(frame: PoseFrame, person: int = 0, min_points: int = NUM_IBUG // 2) -> FrameLandmarks:
    """The 68 iBUG landmarks of one person in a pose frame.

    Args:
        frame: a parsed POSE_KEYPOINT frame.
        person: index into the frame's people; -1 picks the largest usable face of the frame.
        min_points: fewer present points than this make the face count as missed.
    """
    faces = []
    for p in frame.people:
        if p.face is None:
            faces.append(None)
            continue
        face = ibug68_from_face_points(p.face)
        xy = face[:, :2].copy()
        xy[~present(face)] = np.nan
        faces.append(xy if usable_landmarks(xy, min_points) else None)
    canvas = (frame.width, frame.height)
    heads = [head_points(p) for p in frame.people]
    if person < 0:  # the largest face; in a frame without one, the largest head
        usable = [i for i, f in enumerate(faces) if f is not None]
        if usable:
            index = max(usable, key=lambda i: _face_size(faces[i]))
        else:
            with_head = [i for i, h in enumerate(heads) if h is not None]
            index = max(with_head, key=lambda i: _face_size(heads[i])) if with_head else None
    else:
        index = person if person < len(faces) else None
    if index is None:
        return FrameLandmarks(None, canvas, len(faces))
    return FrameLandmarks(faces[index], canvas, len(faces), heads[index])


def landmarks_from_pose_keypoint(
    pose_keypoint: Any, person: int = 0, min_points: int = NUM_IBUG // 2
) -> list[FrameLandmarks]:
    """Per-frame 68-point face landmarks from a POSE_KEYPOINT value (pixel or normalised coordinates)."""
    return [select_face(frame, person, min_points) for frame in frames_from_pose_keypoint(pose_keypoint)]


def rescale_points(points: np.ndarray, src: Sequence[int], dst: Sequence[int]) -> np.ndarray:
    """Canvas pixels `[..., 2]` of a `src` (width, height) canvas in pixels of a `dst` canvas of the same view.

    Uses the pixel-centre convention of the image resize, as `image_prep.map_points_through_fit` does.
    """
    scale = np.array([dst[0] / src[0], dst[1] / src[1]], dtype=np.float64)
    return (points + 0.5) * scale - 0.5
