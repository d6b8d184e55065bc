"""The pose nodes inside a real ComfyUI: render, MediaPipe extraction and retargeting in executed graphs."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from tests.host.comfy_host import PromptError
from xdyna_core.pose.draw import draw_xdyna_pose
from xdyna_core.pose.keypoints import PersonPose, PoseFrame, frame_to_dict, frames_from_pose_keypoint, missing_points


class PoseFromJSON:
    """Test-only source of POSE_KEYPOINT values (as a pose editor or a JSON loader would hand them over)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": "[]", "multiline": True})}}

    RETURN_TYPES = ("POSE_KEYPOINT",)
    FUNCTION = "load"
    CATEGORY = "testing"

    def load(self, text):
        return (json.loads(text),)


@pytest.fixture(scope="module")
def host(comfy_host):
    comfy_host.nodes.NODE_CLASS_MAPPINGS["XDynaTest_PoseFromJSON"] = PoseFromJSON
    return comfy_host


def standing(dx: float = 0.0) -> PersonPose:
    body = missing_points(18)
    xy = [(256, 150), (256, 210), (216, 212), (196, 300), (186, 380), (296, 212), (316, 300), (326, 380),
          (230, 420), (228, 560), (226, 700), (282, 420), (284, 560), (286, 700)]  # fmt: skip
    for j, (x, y) in enumerate(xy):
        body[j] = (x + dx, y, 1.0)
    return PersonPose(body)


def test_pose_nodes_are_registered(host):
    for node_id in ("XDyna_RenderPose", "XDyna_MediaPipePose", "XDyna_PoseRetarget"):
        assert node_id in host.pack_node_ids
        info = host.nodes.NODE_CLASS_MAPPINGS[node_id].GET_NODE_INFO_V1()
        assert info["category"] == "X-Dyna/pose"


def test_render_pose_graph(host):
    frames = [PoseFrame(512, 896, [standing()]), PoseFrame(512, 896, []), PoseFrame(512, 896, [standing(60)])]
    value = [frame_to_dict(f, normalized=True) for f in frames]
    prompt = {
        "1": {"class_type": "XDynaTest_PoseFromJSON", "inputs": {"text": json.dumps(value)}},
        "2": {
            "class_type": "XDyna_RenderPose",
            "inputs": {
                "pose_keypoint": ["1", 0],
                "width": 256,
                "height": 448,
                "stick_width": 4,
                "point_radius": 4,
                "draw_hands": True,
                "draw_head": False,
                "draw_face": False,
            },
        },
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    run = host.run(prompt)
    (images,) = run.outputs("2")
    assert images.shape == (3, 448, 256, 3) and images.dtype == torch.float32
    for image, frame in zip(images, value):
        expected = draw_xdyna_pose(frame, 256, 448)
        assert torch.equal((image * 255).round().to(torch.uint8), torch.from_numpy(expected))
    assert not images[1].any()
    assert run.ui["3"]["images"]


def test_retarget_error_names_the_problem(host):
    driving = [frame_to_dict(PoseFrame(512, 896, [standing()]))]
    reference = [frame_to_dict(PoseFrame(512, 896, []))]
    prompt = {
        "1": {"class_type": "XDynaTest_PoseFromJSON", "inputs": {"text": json.dumps(driving)}},
        "2": {"class_type": "XDynaTest_PoseFromJSON", "inputs": {"text": json.dumps(reference)}},
        "3": {
            "class_type": "XDyna_PoseRetarget",
            "inputs": {
                "driving_pose": ["1", 0],
                "reference_pose": ["2", 0],
                "mode": "limbs",
                "anchor_frame": 0,
                "driver_lengths": "anchor",
                "smoothing": False,
                "frame_rate": 15.0,
                "min_cutoff": 1.0,
                "beta": 5.0,
                "driving_person": 0,
                "reference_person": 0,
            },
        },
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}},
    }
    with pytest.raises(PromptError, match="reference pose has 0 people"):
        host.run(prompt)


def write_sparse_clip(source, target, step: int) -> int:
    """Every `step`-th frame of `source` into a new 8 fps mp4; returns the frame count."""
    count = 0
    with av.open(str(source)) as src, av.open(str(target), "w") as dst:
        stream = dst.add_stream("libx264", rate=Fraction(8))
        stream.width, stream.height, stream.pix_fmt = 512, 896, "yuv420p"
        for i, frame in enumerate(src.decode(video=0)):
            if i % step == 0:
                image = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
                dst.mux(stream.encode(image))
                count += 1
        dst.mux(stream.encode(None))
    return count


def test_mediapipe_retarget_render_graph(host, shared_data):
    pytest.importorskip("mediapipe.python.solutions", reason="mediapipe 0.10.x (≤ 0.10.21) not installed")
    shutil.copy(shared_data / "reference_1.png", host.input_dir / "reference_1.png")
    count = write_sparse_clip(shared_data / "driving_1.mp4", host.input_dir / "driving_sparse.mp4", step=40)
    mediapipe = {"mode": "images", "min_visibility": 0.3, "face": True}
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "reference_1.png"}},
        "2": {"class_type": "XDyna_MediaPipePose", "inputs": {"image": ["1", 0], **mediapipe}},
        "3": {"class_type": "LoadVideo", "inputs": {"file": "driving_sparse.mp4"}},
        "4": {"class_type": "GetVideoComponents", "inputs": {"video": ["3", 0]}},
        "5": {"class_type": "XDyna_MediaPipePose", "inputs": {"image": ["4", 0], **mediapipe}},
        "6": {
            "class_type": "XDyna_PoseRetarget",
            "inputs": {
                "driving_pose": ["5", 0],
                "reference_pose": ["2", 0],
                "mode": "limbs",
                "anchor_frame": 0,
                "driver_lengths": "anchor",
                "smoothing": True,
                "frame_rate": ["4", 2],
                "min_cutoff": 1.0,
                "beta": 5.0,
                "driving_person": 0,
                "reference_person": 0,
            },
        },
        "7": {
            "class_type": "XDyna_RenderPose",
            "inputs": {
                "pose_keypoint": ["6", 0],
                "width": 512,
                "height": 896,
                "stick_width": 4,
                "point_radius": 4,
                "draw_hands": True,
                "draw_head": False,
                "draw_face": False,
            },
        },
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["5", 1]}},
    }
    run = host.run(prompt)

    reference_pose, reference_image = run.outputs("2")
    assert len(reference_pose) == 1 and len(reference_pose[0]["people"]) == 1
    assert reference_image.shape == (1, 896, 512, 3)
    driving_pose, driving_image = run.outputs("5")
    assert len(driving_pose) == count == 15
    assert all(len(frame["people"]) == 1 for frame in driving_pose)  # a person on every frame
    assert driving_image.shape == (count, 896, 512, 3)
    assert (count, count) in run.log.progress  # the progress bar reached the end

    retargeted, retargeted_image = run.outputs("6")
    frames = frames_from_pose_keypoint(retargeted)
    assert len(frames) == count and all(len(f.people) == 1 for f in frames)
    reference = frames_from_pose_keypoint(reference_pose)[0].people[0].body
    np.testing.assert_allclose(frames[0].people[0].body[1, :2], reference[1, :2], atol=2.0)  # neck on the reference's
    (rendered,) = run.outputs("7")
    assert rendered.shape == (count, 896, 512, 3)
    assert torch.equal(rendered, retargeted_image)
    assert (rendered.amax(dim=-1) > 0).flatten(1).sum(1).min() > 2000  # every frame has a skeleton
