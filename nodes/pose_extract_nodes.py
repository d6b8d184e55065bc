"""Pose extraction nodes: driving frames → POSE_KEYPOINT (controlnet_aux format) and a rendered pose image.

ONNX sessions are opened for each run and released after it, not cached: onnxruntime's GPU memory lies
outside ComfyUI's memory manager, and holding it for the rest of the session would take it from the UNet.
ComfyUI's output cache already skips the node when its inputs have not changed.
"""

from __future__ import annotations

import os

import torch
from comfy_api.latest import io

from ..xdyna_comfy import folders, runtime
from ..xdyna_core.pose.bounds import frame_inside
from ..xdyna_core.pose.dwpose import DETECTOR_FILE, ESTIMATOR_FILE, DWPose, locate_model_files
from ..xdyna_core.pose.dwpose_detector import SCORE_THRESHOLD
from ..xdyna_core.pose.dwpose_sequence import MISSING_MODES, PERSON_CHOICES
from ..xdyna_core.pose.keypoints import frame_from_dict, frame_from_wholebody, frame_to_dict
from ..xdyna_core.pose.onnx_runtime import (
    ACCELERATED_PROVIDERS,
    GPU_MEMORY_PROVIDERS,
    PROVIDER_CHOICES,
    available_providers,
    choose_providers,
    import_onnxruntime,
)
from ..xdyna_core.pose.pose_frames import PoseHintFrames
from ..xdyna_core.validation import finite_number, image_batch
from .hint_nodes import PREVIEW_FRAMES, image_frames_input, preview_images
from .pose_nodes import content_area_input, content_of
from .types import PoseKeypoint

CATEGORY = "X-Dyna/pose"
DWPOSE = "X-Dyna DWPose Extractor"
# onnxruntime's working memory besides the weights (YOLOX-L activations at 640² dominate), for make-room requests.
ONNX_WORKSPACE_BYTES = 1 << 30


def model_choices(default: str) -> list[str]:
    """The released file first (downloaded on first use if absent), then every other .onnx in the folders."""
    return [default] + sorted(n for n in folders.dwpose_model_files() if n != default)


def provider_choices() -> list[str]:
    return list(PROVIDER_CHOICES) + [p for p in ACCELERATED_PROVIDERS if p in available_providers()]


class XDynaDWPoseExtractor(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="XDyna_DWPoseExtractor",
            display_name=DWPOSE,
            category=CATEGORY,
            description=(
                "Finds the driving person's whole-body pose (body, feet, hands, face: 133 points) in every frame "
                "with DWPose on onnxruntime, and renders it in the X-Dyna style. Model files are downloaded "
                "from Hugging Face yzd-v/DWPose into models/xdyna/dwpose on first use."
            ),
            inputs=[
                io.Image.Input("image", tooltip="Driving video frames (or a single image), any size."),
                io.Combo.Input(
                    "detector",
                    options=model_choices(DETECTOR_FILE),
                    default=DETECTOR_FILE,
                    tooltip="Person detector (YOLOX) in models/xdyna/dwpose. yolox_l.onnx is downloaded if missing.",
                ),
                io.Combo.Input(
                    "pose_model",
                    options=model_choices(ESTIMATOR_FILE),
                    default=ESTIMATOR_FILE,
                    tooltip="Whole-body keypoint model (SimCC) in models/xdyna/dwpose. dw-ll_ucoco_384.onnx is "
                    "downloaded if missing.",
                ),
                io.Combo.Input(
                    "person",
                    options=list(PERSON_CHOICES),
                    default="largest",
                    tooltip="Which person to follow when several are found: largest (biggest box), index (the "
                    "person_index-th from the left, 0 = leftmost), or all (everyone, left to right).",
                ),
                io.Int.Input(
                    "person_index",
                    default=0,
                    min=0,
                    max=63,
                    tooltip="Used when person is index: 0 is the leftmost person. A frame with fewer people counts "
                    "as a frame without a person.",
                ),
                io.Combo.Input(
                    "missing_person",
                    options=list(MISSING_MODES),
                    default="repeat_previous",
                    tooltip="Frames where nobody is found: repeat_previous holds the last pose, interpolate blends "
                    "the poses on both sides, empty leaves the frame without a pose (a black pose image).",
                ),
                io.Float.Input(
                    "detection_threshold",
                    default=SCORE_THRESHOLD,
                    min=0.01,
                    max=0.99,
                    step=0.01,
                    tooltip="Minimum person score of the detector (0.3 as DWPose). Lower it if people are missed.",
                ),
                io.Float.Input(
                    "keypoint_threshold",
                    default=0.3,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="Keypoints scoring below this are left out of the pose (0.3 as DWPose).",
                ),
                io.Combo.Input(
                    "provider",
                    options=provider_choices(),
                    default="auto",
                    tooltip="Where onnxruntime runs the models: auto picks the GPU when its onnxruntime build "
                    "supports it, else the CPU. The provider actually used is written to the log.",
                ),
                io.Int.Input(
                    "batch_size",
                    default=8,
                    min=1,
                    max=64,
                    tooltip="Frames per detector call and people per pose-model call, where the model files allow "
                    "batches (files with a fixed batch of 1 run one at a time whatever this says).",
                ),
                content_area_input(),
                image_frames_input(),
            ],
            outputs=[
                PoseKeypoint.Output(
                    display_name="pose_keypoint",
                    tooltip="One pose frame per image, controlnet_aux format (people, canvas_width, canvas_height).",
                ),
                io.Image.Output(
                    display_name="pose_image",
                    tooltip="A preview: image_frames of the poses drawn in the X-Dyna style, frame size. For the "
                    "ControlNet render the pose_keypoint with X-Dyna Render Pose.",
                ),
            ],
        )

    @classmethod
    def execute(
        cls,
        image: torch.Tensor,
        detector: str,
        pose_model: str,
        person: str,
        person_index: int,
        missing_person: str,
        detection_threshold: float,
        keypoint_threshold: float,
        provider: str,
        batch_size: int,
        content_area: str = "auto",
        image_frames: int = PREVIEW_FRAMES,
    ) -> io.NodeOutput:
        image = image_batch(image, DWPOSE)
        detection_threshold = finite_number(detection_threshold, DWPOSE, "detection_threshold", 0.0, 1.0)
        keypoint_threshold = finite_number(keypoint_threshold, DWPOSE, "keypoint_threshold", 0.0, 1.0)
        import_onnxruntime()  # before a download of several hundred MB that could not be used
        search = folders.dwpose_folders()
        detector_path, estimator_path = locate_model_files(detector, pose_model, search)
        if choose_providers(provider)[0] in GPU_MEMORY_PROVIDERS:
            weights = os.path.getsize(detector_path) + os.path.getsize(estimator_path)
            runtime.free_gpu_memory_for(2 * weights + ONNX_WORKSPACE_BYTES)
        dwpose = DWPose.load(
            detector_path, estimator_path, provider, runtime.onnx_device_id(), score_threshold=detection_threshold
        )
        total, height, width = image.shape[0], image.shape[1], image.shape[2]
        people = dwpose(
            image,
            person=person,
            person_index=person_index,
            missing=missing_person,
            batch_size=batch_size,
            on_progress=runtime.frame_progress(total),
        )
        del dwpose
        content = content_of(image, content_area)
        frames = [
            frame_inside(
                frame_from_dict(frame_from_wholebody(p.keypoints, p.scores, width, height, keypoint_threshold)), content
            )
            for p in people
        ]
        preview = preview_images(PoseHintFrames(frames, width, height), image_frames)
        return io.NodeOutput([frame_to_dict(frame) for frame in frames], preview)


NODES = [XDynaDWPoseExtractor]
