"""Pose nodes: X-Dyna-style rendering (as images and as hint frames) and the offline MediaPipe extractor."""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

from ..xdyna_comfy import runtime
from ..xdyna_core.pose.bounds import content_box, person_inside
from ..xdyna_core.pose.keypoints import PoseFrame, frames_from_pose_keypoint, frames_to_pose_keypoint
from ..xdyna_core.pose.mediapipe_backend import DEFAULT_HAND_GAP, DEFAULT_HAND_PRESENCE, detect_people
from ..xdyna_core.pose.pose_frames import PoseHintFrames
from ..xdyna_core.validation import finite_number, image_batch, reading_poses
from .hint_nodes import PREVIEW_FRAMES, image_frames_input, preview_images
from .preprocess import (
    check_generation_size,
    generation_size_inputs,
)
from .types import PoseFrames, PoseKeypoint

logger = logging.getLogger("xdyna")

CATEGORY = "X-Dyna/pose"
RENDER_POSE = "X-Dyna Render Pose"
MEDIAPIPE_POSE = "X-Dyna MediaPipe Pose"
MEDIAPIPE_MODES = ("video", "images")
CONTENT_AREAS = ("auto", "whole_image")


def content_area_input() -> io.Combo.Input:
    return io.Combo.Input(
        "content_area",
        options=list(CONTENT_AREAS),
        default="auto",
        optional=True,
        tooltip="auto: keypoints inside black letterbox/pillarbox bars of the video (found from its frames) are "
        "left out, as are any outside the picture. whole_image: only those outside the picture.",
    )


def content_of(image: torch.Tensor, content_area: str) -> tuple[int, int, int, int]:
    if content_area not in CONTENT_AREAS:
        raise ValueError(f"content_area must be one of {CONTENT_AREAS}, got {content_area!r}")
    if content_area == "whole_image":
        return (0, 0, image.shape[2], image.shape[1])
    return content_box(image)


def frames_from_image(image: torch.Tensor):
    """IMAGE `[B, H, W, C]` → uint8 RGB frames, one at a time (a long clip is not copied at once)."""
    for frame in image:
        yield (frame[..., :3].clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu().numpy()


class XDynaRenderPose(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="XDyna_RenderPose",
            display_name=RENDER_POSE,
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
                image_frames_input(0, "the rendered poses as images, for other packs' nodes or a preview"),
            ],
            outputs=[
                io.Image.Output(
                    display_name="pose_image",
                    tooltip="The poses as an IMAGE batch (image_frames of them; every frame by default). Costs "
                    "5.5 MB per frame at 512×896: for X-Dyna's sampler use pose_frames and set image_frames to "
                    "a few, or link X-Dyna Hints to Images for previews.",
                ),
                PoseFrames.Output(
                    display_name="pose_frames",
                    tooltip="The same poses, drawn a window at a time where the sampler needs them (a few kB per "
                    "frame held): for X-Dyna Apply ControlNets and the sampler's frame count.",
                ),
            ],
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
        image_frames: int = 0,
    ) -> io.NodeOutput:
        check_generation_size(width, height)
        with reading_poses(RENDER_POSE, "pose_keypoint"):
            frames = frames_from_pose_keypoint(pose_keypoint, default_size=(width, height))
        if not frames:
            logger.warning("X-Dyna Render Pose: no pose frames given; returning one black frame")
            frames = [PoseFrame(width, height)]
        style = dict(
            stick_width=stick_width, point_radius=point_radius, hands=draw_hands, head=draw_head, face=draw_face
        )
        hints = PoseHintFrames(frames, width, height, **style)
        return io.NodeOutput(preview_images(hints, image_frames), hints)


class XDynaMediaPipePose(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="XDyna_MediaPipePose",
            display_name=MEDIAPIPE_POSE,
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
                io.Float.Input(
                    "hand_presence",
                    default=DEFAULT_HAND_PRESENCE,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    optional=True,
                    tooltip="Lowest hand-presence score of a hand that is kept. MediaPipe's own 0.5 drops about "
                    "half the hands of dance footage (motion blur, small hands) although most are right; 0.05 "
                    "finds three quarters, nine in ten of them where the official DWPose hands are.",
                ),
                io.Int.Input(
                    "hand_gap",
                    default=DEFAULT_HAND_GAP,
                    min=0,
                    max=64,
                    optional=True,
                    tooltip="Video mode: a hand missing for at most this many frames is interpolated, moving "
                    "with its wrist. 0 turns it off.",
                ),
                io.Boolean.Input(
                    "hand_crops",
                    default=False,
                    optional=True,
                    tooltip="Look again for each missed hand on a crop around its wrist (MediaPipe Hands). "
                    "About one point more hands on the example video, at about 35 ms per frame.",
                ),
                content_area_input(),
                image_frames_input(),
            ],
            outputs=[
                PoseKeypoint.Output(display_name="pose_keypoint"),
                io.Image.Output(
                    display_name="pose_image",
                    tooltip="A preview: image_frames of the poses, drawn in the X-Dyna style. For the ControlNet "
                    "use X-Dyna Render Pose.",
                ),
            ],
        )

    @classmethod
    def execute(
        cls,
        image: torch.Tensor,
        mode: str,
        min_visibility: float,
        face: bool,
        hand_presence: float = DEFAULT_HAND_PRESENCE,
        hand_gap: int = DEFAULT_HAND_GAP,
        hand_crops: bool = False,
        content_area: str = "auto",
        image_frames: int = PREVIEW_FRAMES,
    ) -> io.NodeOutput:
        image = image_batch(image, MEDIAPIPE_POSE)
        min_visibility = finite_number(min_visibility, MEDIAPIPE_POSE, "min_visibility", 0.0, 1.0)
        hand_presence = finite_number(hand_presence, MEDIAPIPE_POSE, "hand_presence", 0.0, 1.0)
        total, height, width = image.shape[0], image.shape[1], image.shape[2]
        video = mode == "video"
        # a video has one content area; unrelated images each have their own (applied after detection)
        content = content_of(image, content_area) if video else None
        people = detect_people(
            frames_from_image(image),
            video=video,
            min_visibility=min_visibility,
            face=face,
            on_frame=runtime.frame_progress(total),
            total=total,
            hand_presence=hand_presence,
            content=content,
            hand_crops=hand_crops,
            hand_gap=hand_gap,
        )
        if not video:
            boxes = (content_of(image[i : i + 1], content_area) for i in range(total))
            people = [None if p is None else person_inside(p, box) for p, box in zip(people, boxes)]
            people = [None if p is None or p.is_empty() else p for p in people]
        missing = sum(p is None for p in people)
        if missing:
            logger.warning("X-Dyna MediaPipe Pose: no person in %d of %d frames (left empty)", missing, total)
        frames = [PoseFrame(width, height, [] if p is None else [p]) for p in people]
        preview = preview_images(PoseHintFrames(frames, width, height), image_frames)
        return io.NodeOutput(frames_to_pose_keypoint(frames), preview)


NODES = [XDynaRenderPose, XDynaMediaPipePose]
