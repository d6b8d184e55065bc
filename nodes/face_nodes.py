"""Face nodes: driving frames + face landmarks → the S-Face condition (local and global canvases)."""

from __future__ import annotations

from comfy_api.latest import io

from ..xdyna_core.face import sface_condition_from_pose
from ..xdyna_core.image_prep import CROP_ANCHORS
from ..xdyna_core.pose.keypoints import frames_from_pose_keypoint
from ..xdyna_core.pose.pose_frames import spread_index
from ..xdyna_core.validation import finite_number, image_batch, reading_poses
from .hint_nodes import PREVIEW_FRAMES, image_frames_input
from .preprocess import (
    check_generation_size,
    generation_size_inputs,
)
from .types import FaceCondition, PoseKeypoint

CATEGORY = "X-Dyna/face"
FACE_CROPPER = "X-Dyna Face Cropper (S-Face)"
ON_NO_FACE = ("error", "black")


class XDynaFaceCropper(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="XDyna_FaceCropper",
            display_name=FACE_CROPPER,
            category=CATEGORY,
            description=(
                "Builds X-Dyna's S-Face condition from the driving video: per frame a black canvas with the face "
                "region and one with eye and mouth patches, at exactly width×height and registered to the "
                "cropped frame. Boxes are held still while the face stays inside them, faces the landmarks miss "
                "are placed from the body's nose, eyes and ears, and the boxes are lightly smoothed over time. "
                "The canvases are cut a window at a time inside the sampler, never held for the whole clip."
            ),
            inputs=[
                io.Image.Input(
                    "image", tooltip="The driving frames (any size; the same frames the keypoints come from)."
                ),
                PoseKeypoint.Input(
                    "pose_keypoint",
                    tooltip=(
                        "Keypoints of the same frames with face landmarks (68 iBUG points, as DWPose writes them, "
                        "or MediaPipe's 468-point face mesh); pixel or normalised coordinates."
                    ),
                ),
                *generation_size_inputs(
                    "Generation width in pixels (multiple of 8); the canvases have exactly this size.",
                    "Generation height in pixels (multiple of 8).",
                ),
                io.Combo.Input(
                    "crop",
                    options=list(CROP_ANCHORS),
                    default="top_biased",
                    tooltip=(
                        "How frames of another aspect are cropped before resizing; the landmarks follow. "
                        "top_biased (a quarter of the vertical surplus above) is how X-Dyna crops driving "
                        "frames; use the same setting as for the pose frames."
                    ),
                ),
                io.Boolean.Input(
                    "stabilize",
                    default=True,
                    tooltip=(
                        "Keep the previous frame's face box while the face stays inside it (the rule the "
                        "official code intends). Off: a new box every frame."
                    ),
                ),
                io.Float.Input(
                    "smoothing",
                    default=1.0,
                    min=0.0,
                    max=10.0,
                    step=0.1,
                    tooltip=(
                        "Temporal smoothing of box position and size, in frames (sigma of a centred Gaussian, "
                        "no lag). 0 turns it off; 1 removes landmark jitter; larger values steady fast motion."
                    ),
                ),
                io.Int.Input(
                    "max_gap",
                    default=8,
                    min=0,
                    max=10000,
                    tooltip=(
                        "Frames with neither face landmarks nor the body's head keypoints are bridged: gaps up "
                        "to this many frames are interpolated between the faces around them, longer ones keep "
                        "the last face box."
                    ),
                ),
                io.Int.Input(
                    "person_index",
                    default=0,
                    min=-1,
                    max=100,
                    tooltip="Whose face to use when the keypoints hold several people; -1 takes the largest face of each frame.",
                ),
                io.Combo.Input(
                    "on_no_face",
                    options=list(ON_NO_FACE),
                    default="error",
                    tooltip=(
                        "When no frame has a face: error stops with an explanation; black gives all-black "
                        "conditions (the animation then gets no facial-expression guidance)."
                    ),
                ),
                io.Boolean.Input(
                    "body_fallback",
                    default=True,
                    optional=True,
                    tooltip=(
                        "Where the face landmarks are missing (masked, turned or blurred faces), place the face "
                        "from the same person's body nose, eyes and ears, calibrated on the frames that have "
                        "both. Off: such frames are only interpolated or held."
                    ),
                ),
                image_frames_input(what="previews of the local and global canvases"),
                PoseKeypoint.Input(
                    "retargeted_pose",
                    optional=True,
                    tooltip=(
                        "The poses the pose ControlNet draws when they are not the driving poses (X-Dyna Pose "
                        "Retarget's pose_keypoint): the canvases are moved and scaled onto that head, so face and "
                        "pose guidance agree where the face is. Leave unlinked for the driving poses."
                    ),
                ),
            ],
            outputs=[
                FaceCondition.Output(
                    display_name="face_condition",
                    tooltip="The S-Face condition (6 channels: local, global), cut a window at a time.",
                ),
                io.Image.Output(display_name="local_preview", tooltip="A preview: image_frames local canvases."),
                io.Image.Output(display_name="global_preview", tooltip="A preview: image_frames global canvases."),
                io.String.Output(display_name="boxes_json"),
            ],
        )

    @classmethod
    def execute(
        cls,
        image,
        pose_keypoint,
        width: int,
        height: int,
        crop: str,
        stabilize: bool,
        smoothing: float,
        max_gap: int,
        person_index: int,
        on_no_face: str,
        body_fallback: bool = True,
        image_frames: int = PREVIEW_FRAMES,
        retargeted_pose=None,
    ) -> io.NodeOutput:
        check_generation_size(width, height)
        if on_no_face not in ON_NO_FACE:
            raise ValueError(f"on_no_face must be one of {ON_NO_FACE}, got {on_no_face!r}")
        image = image_batch(image, FACE_CROPPER)
        smoothing = finite_number(smoothing, FACE_CROPPER, "smoothing", 0.0, 10.0)
        if retargeted_pose is not None:
            with reading_poses(FACE_CROPPER, "retargeted_pose"):
                retargeted_pose = frames_from_pose_keypoint(retargeted_pose)  # read once, followed as read
            if len(retargeted_pose) != image.shape[0]:
                raise ValueError(
                    f"{FACE_CROPPER}: retargeted_pose has {len(retargeted_pose)} frames but image has "
                    f"{image.shape[0]}; link the Pose Retarget output made from these driving frames' poses"
                )
        with reading_poses(FACE_CROPPER, "pose_keypoint"):
            condition = sface_condition_from_pose(
                image,
                pose_keypoint,
                width,
                height,
                crop=crop,
                person=person_index,
                stabilize=stabilize,
                smoothing=smoothing,
                max_gap=max_gap,
                allow_no_face=on_no_face == "black",
                body_fallback=body_fallback,
                follow_pose=retargeted_pose,
            )
        preview = condition.hint(spread_index(condition.num_frames, image_frames))
        return io.NodeOutput(
            condition, preview[..., :3].contiguous(), preview[..., 3:].contiguous(), condition.to_json()
        )


NODES = [XDynaFaceCropper]
