"""The retargeting node: the driving motion on the reference person's body (maths in xdyna_core.pose.retarget)."""

from __future__ import annotations

import logging

from comfy_api.latest import io

from ..xdyna_core.pose.keypoints import frames_from_pose_keypoint, frames_to_pose_keypoint
from ..xdyna_core.pose.pose_frames import PoseHintFrames
from ..xdyna_core.pose.retarget import DRIVER_LENGTHS, RETARGET_MODES, retarget_frames
from ..xdyna_core.pose.smoothing import SMOOTHING_METHODS, smooth_frames
from ..xdyna_core.validation import finite_number, reading_poses
from .hint_nodes import PREVIEW_FRAMES, image_frames_input, preview_images
from .types import PoseKeypoint

logger = logging.getLogger("xdyna")

CATEGORY = "X-Dyna/pose"
POSE_RETARGET = "X-Dyna Pose Retarget"
# Chosen from driving_1.mp4 onto reference_1.png (see web/docs/XDyna_PoseRetarget.md): the reference's
# proportions (no bone past the reference's, 90th percentile of each bone at 1.00), the driver's framing
# (median joint 8 px, nose 2 px from the driving pose), so the S-Face crops of the driving frames stay on the head.
DEFAULT_MODE = "proportions"


class XDynaPoseRetarget(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="XDyna_PoseRetarget",
            display_name=POSE_RETARGET,
            category=CATEGORY,
            description=(
                "Puts the driving motion on the reference person's body: every limb keeps the driver's direction "
                "and foreshortening and gets the reference's length (measured over the whole clip, so a limb "
                "pointing at the camera in one frame does not stretch the others), hands and face move with "
                "their wrists and nose, and the clip is kept inside the frame. Optional smoothing without lag."
            ),
            inputs=[
                PoseKeypoint.Input("driving_pose", tooltip="Poses of the driving video (one frame per video frame)."),
                PoseKeypoint.Input("reference_pose", tooltip="Pose of the reference image (its first frame is used)."),
                io.Combo.Input(
                    "mode",
                    options=list(RETARGET_MODES),
                    default=DEFAULT_MODE,
                    tooltip="proportions: the reference's body proportions where the driver is, at the driver's "
                    "size (the head stays where the driving face is). limbs: the reference's proportions, size and "
                    "place (link pose_keypoint to the Face Cropper's retargeted_pose too). global: the driver's proportions at the reference's size and place. none: the "
                    "driving pose as is, the framing of the released examples.",
                ),
                io.Int.Input(
                    "anchor_frame",
                    default=0,
                    min=0,
                    max=1_000_000,
                    tooltip="limbs and global: the driving frame whose neck is put on the reference's neck. "
                    "With driver_lengths anchor also the frame the driver's bones are measured on.",
                ),
                io.Combo.Input(
                    "driver_lengths",
                    options=list(DRIVER_LENGTHS),
                    default="clip",
                    tooltip="clip: each driver bone's full length is its 90th percentile over the clip, and a "
                    "foreshortened limb is shortened in the driver's proportion, never stretched. anchor: "
                    "lengths of the anchor frame, ratios uncapped (the first release; stretches every limb "
                    "that is foreshortened in that frame).",
                ),
                io.Boolean.Input("smoothing", default=False, tooltip="Smooth the driving keypoints over time."),
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
                    "follows fast moves more closely.",
                ),
                io.Int.Input("driving_person", default=0, min=0, max=64, tooltip="Which driving person (0 = first)."),
                io.Int.Input(
                    "reference_person", default=0, min=0, max=64, tooltip="Which reference person (0 = first)."
                ),
                io.Combo.Input(
                    "smoothing_filter",
                    options=list(SMOOTHING_METHODS),
                    default="zero_lag",
                    optional=True,
                    tooltip="zero_lag: the One Euro filter forward and then backward over the whole clip, no "
                    "delay. one_euro: the causal filter (about a frame behind fast motion at 8 fps).",
                ),
                io.Boolean.Input(
                    "keep_in_frame",
                    default=True,
                    optional=True,
                    tooltip="Move the whole clip (and shrink it only if it must) so the joints the reference "
                    "shows stay inside the canvas. Not applied in mode none.",
                ),
                image_frames_input(PREVIEW_FRAMES),
            ],
            outputs=[
                PoseKeypoint.Output(display_name="pose_keypoint"),
                io.Image.Output(
                    display_name="pose_image",
                    tooltip="A preview: image_frames of the retargeted poses. For the ControlNet render the "
                    "pose_keypoint with X-Dyna Render Pose.",
                ),
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
        smoothing_filter: str = "zero_lag",
        keep_in_frame: bool = True,
        image_frames: int = PREVIEW_FRAMES,
    ) -> io.NodeOutput:
        frame_rate = finite_number(frame_rate, POSE_RETARGET, "frame_rate", 1.0, 240.0)
        min_cutoff = finite_number(min_cutoff, POSE_RETARGET, "min_cutoff", 0.01, 30.0)
        beta = finite_number(beta, POSE_RETARGET, "beta", 0.0, 1000.0)
        with reading_poses(POSE_RETARGET, "reference_pose"):
            references = frames_from_pose_keypoint(reference_pose)
        if not references:
            raise ValueError("reference_pose holds no frame; connect the pose extracted from the reference image")
        with reading_poses(POSE_RETARGET, "driving_pose"):
            driving = frames_from_pose_keypoint(driving_pose, default_size=(references[0].width, references[0].height))
        if not driving:
            raise ValueError("driving_pose holds no frame; connect the poses extracted from the driving video")
        if smoothing:
            driving = smooth_frames(
                driving, frame_rate, min_cutoff, beta, person_index=driving_person, method=smoothing_filter
            )
        frames, plan = retarget_frames(
            references[0], driving, anchor_frame, mode, driver_lengths, reference_person, driving_person, keep_in_frame
        )
        logger.info("X-Dyna Pose Retarget: %s, size ratio %.3f, %d frames", mode, plan.scale, len(frames))
        reference = references[0]
        preview = preview_images(PoseHintFrames(frames, reference.width, reference.height), image_frames)
        return io.NodeOutput(frames_to_pose_keypoint(frames), preview)


NODES = [XDynaPoseRetarget]
