"""Pose nodes: X-Dyna-style rendering, the offline MediaPipe extractor, retargeting onto the reference body."""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

from ..xdyna_core.pose.draw import draw_pose
from ..xdyna_core.pose.keypoints import PoseFrame, frames_from_pose_keypoint, frames_to_pose_keypoint
from ..xdyna_core.pose.mediapipe_backend import detect_people
from ..xdyna_core.pose.retarget import DRIVER_LENGTHS, RETARGET_MODES, retarget_frames
from ..xdyna_core.pose.smoothing import smooth_frames
from . import comfy_glue
from .preprocess import (
    check_generation_size,
    generation_size_inputs,
)
from .types import PoseKeypoint

logger = logging.getLogger("xdyna")

CATEGORY = "X-Dyna/pose"
MEDIAPIPE_MODES = ("video", "images")


def render_frames(frames: list[PoseFrame], width: int, height: int, **style) -> torch.Tensor:
    """Pose frames → IMAGE `[F, H, W, 3]` in [0, 1]; one black frame when there are none."""
    images = torch.zeros(max(1, len(frames)), height, width, 3)
    for i, frame in enumerate(frames):  # frame by frame: a long clip never exists twice in memory
        images[i] = torch.from_numpy(draw_pose(frame, width, height, **style)).float().div_(255.0)
    return images


def frames_from_image(image: torch.Tensor):
    """IMAGE `[B, H, W, C]` → uint8 RGB frames, one at a time (a long clip is not copied at once)."""
    for frame in image:
        yield (frame[..., :3].clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu().numpy()


class XDynaRenderPose(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="XDyna_RenderPose",
            display_name="X-Dyna Render Pose",
            category=CATEGORY,
            description=(
                "Draws POSE_KEYPOINT frames as the skeleton images X-Dyna's pose ControlNet was trained on: "
                "black background, OpenPose body limbs without eyes and ears, DWPose-style hands, no face, "
                "at exactly width×height."
            ),
            inputs=[
                PoseKeypoint.Input(
                    "pose_keypoint",
                    tooltip="Poses in the controlnet_aux format (pixel or normalised coordinates), e.g. from "
                    "X-Dyna DWPose Extractor, X-Dyna MediaPipe Pose, X-Dyna Pose Retarget or a pose editor.",
                ),
                *generation_size_inputs(
                    "Output width: the generation width. Poses are scaled from their canvas.",
                    "Output height: the generation height.",
                ),
                io.Int.Input(
                    "stick_width",
                    default=4,
                    min=1,
                    max=32,
                    tooltip="Half-thickness of the body limbs in pixels. X-Dyna's renderings use 4 (at 512×896).",
                ),
                io.Int.Input(
                    "point_radius",
                    default=4,
                    min=0,
                    max=32,
                    tooltip="Radius of body and hand joints in pixels. X-Dyna's renderings use 4.",
                ),
                io.Boolean.Input("draw_hands", default=True, tooltip="Draw the hands (X-Dyna: on)."),
                io.Boolean.Input(
                    "draw_head",
                    default=False,
                    tooltip="Also draw eyes, ears and their limbs (OpenPose's full body). X-Dyna was trained "
                    "without them: leave off for X-Dyna.",
                ),
                io.Boolean.Input(
                    "draw_face",
                    default=False,
                    tooltip="Also draw the face landmarks as white dots (X-Dyna: off; its face comes from S-Face).",
                ),
            ],
            outputs=[io.Image.Output(display_name="pose_image")],
        )

    @classmethod
    def execute(
        cls,
        pose_keypoint,
        width: int,
        height: int,
        stick_width: int,
        point_radius: int,
        draw_hands: bool,
        draw_head: bool,
        draw_face: bool,
    ) -> io.NodeOutput:
        check_generation_size(width, height)
        frames = frames_from_pose_keypoint(pose_keypoint, default_size=(width, height))
        if not frames:
            logger.warning("X-Dyna Render Pose: no pose frames given; returning one black frame")
        style = dict(
            stick_width=stick_width, point_radius=point_radius, hands=draw_hands, head=draw_head, face=draw_face
        )
        return io.NodeOutput(render_frames(frames, width, height, **style))


class XDynaMediaPipePose(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="XDyna_MediaPipePose",
            display_name="X-Dyna MediaPipe Pose",
            category=CATEGORY,
            description=(
                "Finds one person's body, hands and face in every frame with MediaPipe Holistic: on the CPU, "
                "offline, no model download (the models ship inside the mediapipe 0.10.x wheel). Outputs "
                "POSE_KEYPOINT in the DWPose/controlnet_aux layout and the X-Dyna-style rendering."
            ),
            inputs=[
                io.Image.Input("image", tooltip="Driving video frames or a reference image, any size."),
                io.Combo.Input(
                    "mode",
                    options=list(MEDIAPIPE_MODES),
                    default="video",
                    tooltip="video: the frames are consecutive (tracking and landmark smoothing between "
                    "frames). images: every frame on its own (unrelated images, or sparse frames).",
                ),
                io.Float.Input(
                    "min_visibility",
                    default=0.3,
                    min=0.0,
                    max=1.0,
                    step=0.05,
                    tooltip="Body points MediaPipe rates less visible than this are left out (it still "
                    "places hidden joints). DWPose keeps points scored 0.3 and above.",
                ),
                io.Boolean.Input(
                    "face",
                    default=True,
                    tooltip="Also find the 68 face landmarks (needed for the S-Face input; off is faster).",
                ),
            ],
            outputs=[
                PoseKeypoint.Output(display_name="pose_keypoint"),
                io.Image.Output(display_name="pose_image"),
            ],
        )

    @classmethod
    def execute(cls, image: torch.Tensor, mode: str, min_visibility: float, face: bool) -> io.NodeOutput:
        total, height, width = image.shape[0], image.shape[1], image.shape[2]
        people = detect_people(
            frames_from_image(image),
            video=mode == "video",
            min_visibility=min_visibility,
            face=face,
            on_frame=comfy_glue.frame_progress(total),
            total=total,
        )
        missing = sum(p is None for p in people)
        if missing:
            logger.warning("X-Dyna MediaPipe Pose: no person in %d of %d frames (left empty)", missing, total)
        frames = [PoseFrame(width, height, [] if p is None else [p]) for p in people]
        return io.NodeOutput(frames_to_pose_keypoint(frames), render_frames(frames, width, height))


class XDynaPoseRetarget(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="XDyna_PoseRetarget",
            display_name="X-Dyna Pose Retarget",
            category=CATEGORY,
            description=(
                "Puts the driving motion on the reference person's body: fits the driving skeleton's size and "
                "position to the reference pose, gives every limb the reference's length while keeping the "
                "driver's limb directions, and moves hands and face with their wrists and nose. Optional "
                "One Euro smoothing against jitter."
            ),
            inputs=[
                PoseKeypoint.Input("driving_pose", tooltip="Poses of the driving video (one frame per video frame)."),
                PoseKeypoint.Input("reference_pose", tooltip="Pose of the reference image (its first frame is used)."),
                io.Combo.Input(
                    "mode",
                    options=list(RETARGET_MODES),
                    default="limbs",
                    tooltip="limbs: global fit plus every bone scaled to the reference's length. global: one "
                    "scale and shift for the whole skeleton (keeps the driver's proportions).",
                ),
                io.Int.Input(
                    "anchor_frame",
                    default=0,
                    min=0,
                    max=1_000_000,
                    tooltip="Driving frame fitted onto the reference pose: pick one where the driver stands "
                    "like the reference person.",
                ),
                io.Combo.Input(
                    "driver_lengths",
                    options=list(DRIVER_LENGTHS),
                    default="anchor",
                    tooltip="Where the driver's bone lengths are measured: on the anchor frame, or over the "
                    "whole clip (robust when a limb points at the camera in the anchor frame).",
                ),
                io.Boolean.Input("smoothing", default=False, tooltip="One Euro filter on the driving keypoints."),
                io.Float.Input(
                    "frame_rate",
                    default=15.0,
                    min=1.0,
                    max=240.0,
                    step=0.5,
                    tooltip="Frames per second of the driving poses (the smoothing cutoffs are in Hz).",
                ),
                io.Float.Input(
                    "min_cutoff",
                    default=1.0,
                    min=0.01,
                    max=30.0,
                    step=0.05,
                    tooltip="Smoothing cutoff in Hz when still: lower removes more jitter.",
                ),
                io.Float.Input(
                    "beta",
                    default=5.0,
                    min=0.0,
                    max=1000.0,
                    step=0.1,
                    tooltip="How fast the cutoff rises with speed (per image height per second): higher "
                    "follows fast moves with less lag.",
                ),
                io.Int.Input("driving_person", default=0, min=0, max=64, tooltip="Which driving person (0 = first)."),
                io.Int.Input(
                    "reference_person", default=0, min=0, max=64, tooltip="Which reference person (0 = first)."
                ),
            ],
            outputs=[
                PoseKeypoint.Output(display_name="pose_keypoint"),
                io.Image.Output(display_name="pose_image"),
            ],
        )

    @classmethod
    def execute(
        cls,
        driving_pose,
        reference_pose,
        mode: str,
        anchor_frame: int,
        driver_lengths: str,
        smoothing: bool,
        frame_rate: float,
        min_cutoff: float,
        beta: float,
        driving_person: int,
        reference_person: int,
    ) -> io.NodeOutput:
        references = frames_from_pose_keypoint(reference_pose)
        if not references:
            raise ValueError("reference_pose holds no frame; connect the pose extracted from the reference image")
        driving = frames_from_pose_keypoint(driving_pose, default_size=(references[0].width, references[0].height))
        if not driving:
            raise ValueError("driving_pose holds no frame; connect the poses extracted from the driving video")
        if smoothing:
            driving = smooth_frames(driving, frame_rate, min_cutoff, beta, person_index=driving_person)
        frames, plan = retarget_frames(
            references[0], driving, anchor_frame, mode, driver_lengths, reference_person, driving_person
        )
        logger.info("X-Dyna Pose Retarget: global scale %.3f, %d frames", plan.scale, len(frames))
        reference = references[0]
        return io.NodeOutput(frames_to_pose_keypoint(frames), render_frames(frames, reference.width, reference.height))


NODES = [XDynaRenderPose, XDynaMediaPipePose, XDynaPoseRetarget]
