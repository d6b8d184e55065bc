"""End to end in a real ComfyUI: reference + driving video → pose and S-Face conditions → X-Dyna → video file.

Everything is a real node (core video I/O, the pack's pose, face, model, ControlNet and sampler nodes) on tiny
official-layout weights; only the VAE, CLIP vision and text conditioning come from test-only tiny-weight nodes.
"""

from __future__ import annotations

import shutil

import av
import pytest
import torch

from tests.fixtures.official_layout import TINY_UNET
from tests.fixtures.weights import controlnet_state_dict, save_safetensors
from tests.host.comfy_host import widget_defaults
from tests.host.prompts import tiny_workflow_nodes
from tests.host.support_nodes import SUPPORT_NODES
from tests.host.test_model_graph import files  # noqa: F401  (tiny UNet and IP-Adapter files)
from tests.host.test_preprocess_graph import write_clip

pytest.importorskip("mediapipe", reason="the driving poses and face landmarks come from X-Dyna MediaPipe Pose")

WIDTH, HEIGHT, FRAMES = 48, 64, 6


def defaults(comfy_host, class_type: str) -> dict:
    """Widget defaults of a node, as the front-end would fill them in."""
    return widget_defaults(comfy_host.nodes.NODE_CLASS_MAPPINGS[class_type].INPUT_TYPES()["required"])


def node(comfy_host, class_type: str, **inputs) -> dict:
    return {"class_type": class_type, "inputs": {**defaults(comfy_host, class_type), **inputs}}


@pytest.fixture(scope="module")
def clips(comfy_host, shared_data, files):  # noqa: F811
    write_clip(shared_data / "driving_1.mp4", comfy_host.input_dir / "xdyna_driving.mp4", frames=FRAMES)
    write_clip(shared_data / "pose_1.mp4", comfy_host.input_dir / "xdyna_pose.mp4", frames=FRAMES)
    folder = comfy_host.workdir / "models" / "controlnet"
    folder.mkdir(parents=True, exist_ok=True)
    save_safetensors(controlnet_state_dict(TINY_UNET, 3, seed=8), folder / "tiny-pose-cn.safetensors")
    save_safetensors(controlnet_state_dict(TINY_UNET, 6, seed=9), folder / "tiny-face-cn.safetensors")
    comfy_host.folder_paths.add_model_folder_path("controlnet", str(folder), is_default=True)
    comfy_host.nodes.NODE_CLASS_MAPPINGS.update(SUPPORT_NODES)
    shutil.copy(shared_data / "reference_1.png", comfy_host.input_dir / "reference_1.png")


def test_reference_and_driving_video_become_a_video_file(comfy_host, clips):
    n = lambda class_type, **inputs: node(comfy_host, class_type, **inputs)  # noqa: E731
    prompt = {
        "driving_file": n("LoadVideo", file="xdyna_driving.mp4"),
        "driving": n("GetVideoComponents", video=["driving_file", 0]),
        "pose_file": n("LoadVideo", file="xdyna_pose.mp4"),
        "pose_video": n("GetVideoComponents", video=["pose_file", 0]),
        "pose_frames": n("XDyna_CropResize", image=["pose_video", 0], width=WIDTH, height=HEIGHT, crop="top_biased"),
        "keypoints": n("XDyna_MediaPipePose", image=["driving", 0], face=True),
        "face": n(
            "XDyna_FaceCropper", image=["driving", 0], pose_keypoint=["keypoints", 0], width=WIDTH, height=HEIGHT
        ),
        "image": n("LoadImage", image="reference_1.png"),
        **tiny_workflow_nodes(
            n,
            reference_image=("image", 0),
            pose_images=("pose_frames", 0),
            size=(WIDTH, HEIGHT),
            seed=5,
            steps=2,
            fps=15.0,
            filename_prefix="xdyna/e2e",
            face_condition=("face", 0),
        ),
    }
    run = comfy_host.run(prompt)

    assert len(run.outputs("keypoints")[0]) == FRAMES
    samples = run.outputs("sampler")[0]["samples"]
    assert samples.shape == (FRAMES, 4, HEIGHT // 8, WIDTH // 8) and torch.isfinite(samples).all()
    saved = run.ui["save"]["images"][0]
    with av.open(str(comfy_host.output_dir / saved["subfolder"] / saved["filename"])) as video:
        stream = video.streams.video[0]
        frames = list(video.decode(video=0))
        assert (stream.width, stream.height, len(frames)) == (WIDTH, HEIGHT, FRAMES)
    assert run.log.progress and run.log.progress[-1] == (2, 2)
