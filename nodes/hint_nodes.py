"""Hint frames as images: the preview node, and the bounded IMAGE outputs of the preprocessing nodes.

Pose and face hints travel between nodes as `HintFrames` (rendered a window at a time), so a clip never
exists as float32 images on the way to the sampler. IMAGE outputs that exist for looking at the result hold
`image_frames` frames spread over the clip (8 by default: a contact sheet of 44 MB at 512×896); X-Dyna Hints
to Images turns any part of a hint clip into an IMAGE batch for previews or other packs' nodes.
"""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..xdyna_core.hints import HintFrames
from ..xdyna_core.pose.pose_frames import spread_index
from ..xdyna_core.validation import require
from .types import FaceCondition, PoseFrames

CATEGORY = "X-Dyna/preview"
HINTS_TO_IMAGES = "X-Dyna Hints to Images"
PREVIEW_FRAMES = 8
FACE_PARTS = ("side_by_side", "local", "global")


def image_frames_input(default: int = PREVIEW_FRAMES, what: str = "a preview") -> io.Int.Input:
    """The `image_frames` widget of a node whose IMAGE output is `what`."""
    return io.Int.Input(
        "image_frames",
        default=default,
        min=0,
        max=100_000,
        optional=True,
        tooltip=f"Frames in the IMAGE output ({what}), spread evenly over the clip; 0 = every frame. Each "
        "frame costs W×H×12 bytes (5.5 MB at 512×896); the hints themselves are rendered a window at a time "
        "whatever this says.",
    )


def preview_images(hints: HintFrames, image_frames: int) -> torch.Tensor:
    """IMAGE of `image_frames` frames spread over the clip (every frame for 0); one black frame for no frames."""
    if hints.num_frames == 0:
        return torch.zeros(1, hints.height, hints.width, 3)
    return hints.frames(spread_index(hints.num_frames, image_frames))


def face_parts(hint: torch.Tensor, part: str) -> torch.Tensor:
    """3-channel images of a 6-channel S-Face hint: the local or global canvases, or both side by side."""
    if part == "local":
        return hint[..., :3]
    if part == "global":
        return hint[..., 3:]
    return torch.cat([hint[..., :3], hint[..., 3:]], dim=2)


class XDynaHintsToImages(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="XDyna_HintsToImages",
            display_name=HINTS_TO_IMAGES,
            category=CATEGORY,
            description=(
                "Renders part of a pose or S-Face hint clip as an IMAGE batch, for previews or other packs' nodes. "
                "Hints are otherwise rendered a window at a time inside the sampler and never held as images."
            ),
            inputs=[
                io.MultiType.Input(
                    "hints",
                    types=[PoseFrames, FaceCondition],
                    tooltip="X-Dyna Render Pose's pose_frames or X-Dyna Face Cropper's face_condition.",
                ),
                io.Int.Input("start", default=0, min=0, max=1_000_000, tooltip="First frame (0 = the first)."),
                io.Int.Input(
                    "count",
                    default=PREVIEW_FRAMES,
                    min=0,
                    max=1_000_000,
                    tooltip="How many frames to render; 0 = every frame from start on. Each costs W×H×12 bytes.",
                ),
                io.Int.Input("stride", default=1, min=1, max=10_000, tooltip="Take every stride-th frame."),
                io.Combo.Input(
                    "face_canvases",
                    options=list(FACE_PARTS),
                    default="side_by_side",
                    tooltip="For an S-Face condition: the eye/mouth patches (local), the face box (global), or "
                    "both side by side (twice as wide). Ignored for poses.",
                ),
            ],
            outputs=[io.Image.Output(display_name="images")],
        )

    @classmethod
    def execute(cls, hints, start: int, count: int, stride: int, face_canvases: str) -> io.NodeOutput:
        hints = require(
            hints,
            HintFrames,
            HINTS_TO_IMAGES,
            "hints",
            "pose frames or an S-Face condition",
            "X-Dyna Render Pose's pose_frames or X-Dyna Face Cropper's face_condition",
        )
        if start >= hints.num_frames:
            raise ValueError(
                f"start is {start}, but the hint clip has {hints.num_frames} frames (0 to "
                f"{hints.num_frames - 1}); lower start"
            )
        index = list(range(start, hints.num_frames, stride))
        if count:
            index = index[:count]
        images = hints.frames(index)
        if hints.channels == 6:
            images = face_parts(images, face_canvases)
        return io.NodeOutput(images.contiguous())


NODES = [XDynaHintsToImages]
