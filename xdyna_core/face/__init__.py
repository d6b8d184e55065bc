"""S-Face: face landmarks of the driving frames → the 6-channel condition of the S-Face ControlNet.

`sface_condition_from_pose` is the whole path: carry each frame's 68 face landmarks (and the body's head
keypoints) through the crop and resize that fit the driving frames to W×H (the crop the release uses for
driving videos is top-biased), place boxes and patches over time (`tracking`), and return the condition,
which cuts the canvases (`sface`) of the frames asked for (`condition`), optionally moved onto the head of a
retargeted pose (`follow`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from ..image_prep import CropAnchor, CropBox, ResizeMethod, aspect_crop_box, map_points_through_fit
from ..pose.keypoints import frames_from_pose_keypoint
from .condition import SFaceCondition
from .follow import head_placements
from .landmarks import (
    MEDIAPIPE_TO_IBUG68,
    FaceLandmarkError,
    FrameLandmarks,
    landmarks_from_pose_keypoint,
    mediapipe_to_ibug68,
    rescale_points,
    select_face,
)
from .sface import face_box, render_canvases
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


def points_in_fitted_frame(
    points: np.ndarray | None,
    canvas: tuple[int, int],
    frame_size: tuple[int, int],
    fit: CropBox,
    width: int,
    height: int,
) -> np.ndarray | None:
    """Pixel points `[N, 2]` moved from their keypoint canvas to the source frame, then through the fit."""
    if points is None:
        return None
    if tuple(canvas) != tuple(frame_size):  # keypoints measured on a resized copy of the frames
        points = rescale_points(points, canvas, frame_size)
    if (fit.left, fit.top, fit.width, fit.height) != (0, 0, width, height):  # identity: keep exact values
        points = map_points_through_fit(torch.from_numpy(points), fit, width, height).numpy()
    return points


def landmarks_in_fitted_frames(
    faces: list[FrameLandmarks], frame_size: tuple[int, int], fit: CropBox, width: int, height: int
) -> list[np.ndarray | None]:
    """Each frame's landmarks moved from its keypoint canvas to the source frame, then through the fit."""
    return [points_in_fitted_frame(face.points, face.canvas, frame_size, fit, width, height) for face in faces]


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
    body_fallback: bool = True,
    follow_pose: Any | None = None,
) -> SFaceCondition:
    """The S-Face condition of driving frames of any size, at exactly `width × height`.

    Args:
        frames: `[F, H, W, C]` driving frames in [0, 1] (kept by reference: the condition renders from them).
        pose_keypoint: POSE_KEYPOINT of the same frames (one frame dict per frame; its canvas may be any size
            of the same view, e.g. the frames before a resize).
        width, height: the generation size; frames are cropped to its aspect (`crop`) and resized to it.
        person: index of the person whose face is used; -1 takes the largest face of each frame.
        stabilize, smoothing, max_gap: see `tracking.track_faces`.
        allow_no_face: a clip without any face gives black canvases instead of raising `NoFaceError`.
        body_fallback: place faces the landmarks miss from the same person's body head keypoints
            (`body_face`); off, such frames are only interpolated or held.
        follow_pose: POSE_KEYPOINT of the poses the pose ControlNet draws, when they are not the driving poses
            (X-Dyna Pose Retarget's output, one person per frame, drawn scaled to `width × height`): the
            canvases are moved and scaled onto that head (`follow`). None: where the driving face is.
    """
    faces = landmarks_from_pose_keypoint(pose_keypoint, person)
    if len(faces) != frames.shape[0]:
        raise ValueError(
            f"the pose keypoints have {len(faces)} frames but the driving images have {frames.shape[0]}; "
            f"extract the keypoints from the same frames"
        )
    frame_size = (frames.shape[2], frames.shape[1])
    fit = aspect_crop_box(*frame_size, width, height, crop)
    points = landmarks_in_fitted_frames(faces, frame_size, fit, width, height)
    heads = None
    if body_fallback or follow_pose is not None:
        heads = [points_in_fitted_frame(f.head, f.canvas, frame_size, fit, width, height) for f in faces]
    placements = None
    if follow_pose is not None:
        drawn = drawn_faces(follow_pose, width, height)
        if len(drawn) != len(faces):
            raise ValueError(
                f"the poses to follow have {len(drawn)} frames but the driving images have {len(faces)}; give the "
                f"retargeted poses of these frames"
            )
        placements = torch.from_numpy(head_placements(list(zip(points, heads)), drawn))
    track = track_faces(points, width, height, stabilize, smoothing, max_gap, heads if body_fallback else None)
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
    if track.found and any(s != "detected" for s in track.status):
        counts = {s: track.status.count(s) for s in ("body", "interpolated", "held")}
        log.info(
            "S-Face: %d of %d frames had no face landmarks: %d placed from the body's head keypoints, %d "
            "interpolated, %d held",
            sum(counts.values()),
            len(faces),
            *counts.values(),
        )
    return SFaceCondition(
        frames,
        width,
        height,
        torch.from_numpy(track.boxes),
        torch.from_numpy(track.centres),
        track.status,
        crop=crop,
        resize=resize,
        placements=placements,
    )


def drawn_faces(pose_keypoint: Any, width: int, height: int) -> list[tuple[np.ndarray | None, np.ndarray | None]]:
    """Per frame, the first person's face landmarks and head keypoints where a pose renderer draws them on a
    `width × height` frame (each axis scaled from the pose canvas, as `draw.draw_pose` does)."""
    out = []
    for frame in frames_from_pose_keypoint(pose_keypoint):
        if (frame.width, frame.height) != (width, height):
            frame = frame.resized(width, height)
        face = select_face(frame, 0)
        out.append((face.points, face.head))
    return out
