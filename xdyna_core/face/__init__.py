"""S-Face: face landmarks of the driving frames → the 6-channel condition of the S-Face ControlNet.

`sface_condition_from_pose` is the whole path: fit the driving frames to W×H (the crop the release uses for
driving videos is top-biased), carry each frame's 68 face landmarks through the same crop and resize, place
boxes and patches over time (`tracking`), and cut the canvases (`sface`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..image_prep import CropAnchor, CropBox, ResizeMethod, fit_to_size, map_points_through_fit
from .landmarks import (
    MEDIAPIPE_TO_IBUG68,
    FaceLandmarkError,
    FrameLandmarks,
    landmarks_from_pose_keypoint,
    mediapipe_to_ibug68,
    rescale_points,
)
from .sface import SFaceCondition, face_box, render_canvases
from .tracking import FaceTrack, track_faces

__all__ = [
    "MEDIAPIPE_TO_IBUG68",
    "FaceLandmarkError",
    "FaceTrack",
    "NoFaceError",
    "SFaceCondition",
    "face_box",
    "mediapipe_to_ibug68",
    "render_canvases",
    "sface_condition_from_pose",
    "track_faces",
]

log = logging.getLogger("xdyna")


class NoFaceError(ValueError):
    """No frame of the clip has a usable face for S-Face."""


def landmarks_in_fitted_frames(
    faces: list[FrameLandmarks], frame_size: tuple[int, int], fit: CropBox, width: int, height: int
) -> list[np.ndarray | None]:
    """Each frame's landmarks moved from its keypoint canvas to the source frame, then through the fit."""
    out = []
    for face in faces:
        if face.points is None:
            out.append(None)
            continue
        points = face.points
        if tuple(face.canvas) != tuple(frame_size):  # keypoints measured on a resized copy of the frames
            points = rescale_points(points, face.canvas, frame_size)
        if (fit.left, fit.top, fit.width, fit.height) != (0, 0, width, height):  # identity: keep exact values
            points = map_points_through_fit(torch.from_numpy(points), fit, width, height).numpy()
        out.append(points)
    return out


def sface_condition_from_pose(
    frames: torch.Tensor,
    pose_keypoint: Any,
    width: int,
    height: int,
    crop: CropAnchor = "top_biased",
    resize: ResizeMethod = "bilinear",
    person: int = 0,
    stabilize: bool = True,
    smoothing: float = 1.0,
    max_gap: int = 8,
    allow_no_face: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SFaceCondition:
    """The S-Face condition of driving frames of any size, at exactly `width × height`.

    Args:
        frames: `[F, H, W, C]` driving frames in [0, 1].
        pose_keypoint: POSE_KEYPOINT of the same frames (one frame dict per frame; its canvas may be any size
            of the same view, e.g. the frames before a resize).
        width, height: the generation size; frames are cropped to its aspect (`crop`) and resized to it.
        person: index of the person whose face is used; -1 takes the largest face of each frame.
        stabilize, smoothing, max_gap: see `tracking.track_faces`.
        allow_no_face: a clip without any face gives black canvases instead of raising `NoFaceError`.
        progress: `(done, total)` callback per rendered frame.
    """
    faces = landmarks_from_pose_keypoint(pose_keypoint, person)
    if len(faces) != frames.shape[0]:
        raise ValueError(
            f"the pose keypoints have {len(faces)} frames but the driving images have {frames.shape[0]}; "
            f"extract the keypoints from the same frames"
        )
    fitted, fit = fit_to_size(frames, width, height, anchor=crop, method=resize)
    points = landmarks_in_fitted_frames(faces, (frames.shape[2], frames.shape[1]), fit, width, height)
    track = track_faces(points, width, height, stabilize=stabilize, smoothing=smoothing, max_gap=max_gap)
    if not track.found:
        people = sum(face.people for face in faces)
        if not allow_no_face:
            raise NoFaceError(
                f"no usable face in any of the {len(faces)} frames (the keypoints hold {people} people in all; "
                f"person index {person}): S-Face needs 68 face landmarks per frame. Extract the pose with face "
                f"keypoints enabled, check the person index and that the face survives the {crop} crop, or set "
                f"on_no_face to 'black' to run without facial-expression guidance"
            )
        log.warning("S-Face: no face in any frame; the face conditions are black")
    missed = track.status.count("interpolated") + track.status.count("held")
    if track.found and missed:
        log.info("S-Face: %d of %d frames had no face; their boxes were interpolated or held", missed, len(faces))
    local, glob = render_canvases(fitted, track.boxes, track.centres, progress=progress)
    return SFaceCondition(
        local.contiguous(),
        glob.contiguous(),
        torch.from_numpy(track.boxes),
        torch.from_numpy(track.centres),
        track.status,
    )
