"""The pose nodes inside a real ComfyUI: render, MediaPipe extraction and retargeting in executed graphs."""

from __future__ import annotations

import importlib
import json
import shutil
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from tests.host.comfy_host import PromptError
from tests.host.xdyna_setup import retarget_inputs
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


def pack(comfy_host, module: str):
    return importlib.import_module(f"{comfy_host.pack_module}.{module}")


def test_pose_nodes_are_registered(host):
    for node_id in ("XDyna_RenderPose", "XDyna_MediaPipePose", "XDyna_PoseRetarget"):
        assert node_id in host.pack_node_ids
        info = host.nodes.NODE_CLASS_MAPPINGS[node_id].GET_NODE_INFO_V1()
        assert info["category"] == "X-Dyna/pose"
        for group in ("required", "optional"):
            for name, spec in info["input"].get(group, {}).items():
                assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
    render = host.nodes.NODE_CLASS_MAPPINGS["XDyna_RenderPose"].GET_NODE_INFO_V1()
    assert render["output"] == ["IMAGE", "XDYNA_POSE_FRAMES"]  # pose_image keeps its slot; pose_frames is new
    retarget = host.nodes.NODE_CLASS_MAPPINGS["XDyna_PoseRetarget"].GET_NODE_INFO_V1()
    assert retarget["output"] == ["POSE_KEYPOINT", "IMAGE"]
    assert {"limbs", "global"} <= set(retarget["input"]["required"]["mode"][1]["options"])  # shipped values


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
    prompt["4"] = {"class_type": "XDyna_RenderPose", "inputs": {**prompt["2"]["inputs"], "image_frames": 2}}
    prompt["5"] = {
        "class_type": "XDyna_HintsToImages",
        "inputs": {"hints": ["2", 1], "start": 1, "count": 0, "stride": 1, "face_canvases": "local"},
    }
    prompt["6"] = {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}}
    prompt["7"] = {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}}
    run = host.run(prompt)
    images, hints = run.outputs("2")
    assert images.shape == (3, 448, 256, 3) and images.dtype == torch.float32
    for image, frame in zip(images, value):
        expected = draw_xdyna_pose(frame, 256, 448)
        assert torch.equal((image * 255).round().to(torch.uint8), torch.from_numpy(expected))
    assert not images[1].any()
    assert run.ui["3"]["images"]
    # the hint frames draw the same pixels, for any frames asked for, and hold only keypoints
    assert hints.shape == (3, 448, 256, 3) and len(hints) == 3
    assert torch.equal(hints.frames([2, 0]), images[[2, 0]])
    assert hints.held_bytes() < 10_000
    few, _ = run.outputs("4")
    assert torch.equal(few, images[[0, 2]])  # image_frames 2: the first and the last
    (tail,) = run.outputs("5")
    assert torch.equal(tail, images[1:])


def test_retarget_error_names_the_problem(host):
    driving = [frame_to_dict(PoseFrame(512, 896, [standing()]))]
    reference = [frame_to_dict(PoseFrame(512, 896, []))]
    prompt = {
        "1": {"class_type": "XDynaTest_PoseFromJSON", "inputs": {"text": json.dumps(driving)}},
        "2": {"class_type": "XDynaTest_PoseFromJSON", "inputs": {"text": json.dumps(reference)}},
        "3": {
            "class_type": "XDyna_PoseRetarget",
            "inputs": retarget_inputs(mode="limbs", driver_lengths="anchor", frame_rate=15.0),
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
            "inputs": retarget_inputs(("5", 0), mode="limbs", smoothing=True, frame_rate=["4", 2]),
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
    assert driving_image.shape == (8, 896, 512, 3)  # a preview: 8 frames spread over the clip
    assert (count, count) in run.log.progress  # the progress bar reached the end

    retargeted, retargeted_image = run.outputs("6")
    frames = frames_from_pose_keypoint(retargeted)
    assert len(frames) == count and all(len(f.people) == 1 for f in frames)
    reference = frames_from_pose_keypoint(reference_pose)[0].people[0].body
    np.testing.assert_allclose(frames[0].people[0].body[1, :2], reference[1, :2], atol=2.0)  # neck on the reference's
    rendered, _ = run.outputs("7")
    assert rendered.shape == (count, 896, 512, 3)
    spread = pack(host, "xdyna_core.pose.pose_frames").spread_index(count, 8)
    assert torch.equal(rendered[spread], retargeted_image)
    assert (rendered.amax(dim=-1) > 0).flatten(1).sum(1).min() > 2000  # every frame has a skeleton


def test_retarget_modes_filters_and_framing_in_a_graph(host):
    rng = np.random.default_rng(0)
    driving = []
    for t in range(12):
        person = standing(4.0 * t)
        person.body[:14, 1] += 180.0  # low in the frame: the driver's feet at row 880
        person.body[:14, :2] += rng.normal(0.0, 1.5, (14, 2))
        driving.append(frame_to_dict(PoseFrame(512, 896, [person])))
    tall = standing()
    tall.body[[9, 10, 12, 13], 1] += np.array([60.0, 160.0, 60.0, 160.0])  # a reference with much longer legs
    reference = [frame_to_dict(PoseFrame(512, 896, [tall]))]
    nodes = {
        "1": {"class_type": "XDynaTest_PoseFromJSON", "inputs": {"text": json.dumps(driving)}},
        "2": {"class_type": "XDynaTest_PoseFromJSON", "inputs": {"text": json.dumps(reference)}},
        "3": {"class_type": "XDyna_PoseRetarget", "inputs": retarget_inputs(mode="none", image_frames=3)},
        "4": {"class_type": "XDyna_PoseRetarget", "inputs": retarget_inputs(keep_in_frame=False)},
        "5": {"class_type": "XDyna_PoseRetarget", "inputs": retarget_inputs()},
        "6": {"class_type": "XDyna_PoseRetarget", "inputs": retarget_inputs(mode="none", smoothing=True)},
        "7": {
            "class_type": "XDyna_PoseRetarget",
            "inputs": retarget_inputs(mode="none", smoothing=True, smoothing_filter="one_euro"),
        },
    }
    for i in "34567":
        nodes[f"p{i}"] = {"class_type": "PreviewImage", "inputs": {"images": [i, 1]}}
    run = host.run(nodes)
    as_is, preview = run.outputs("3")
    assert as_is == [frame_to_dict(f) for f in frames_from_pose_keypoint(driving)]  # none: the driving pose
    assert preview.shape[0] == 3
    loose = frames_from_pose_keypoint(run.outputs("4")[0])
    kept = frames_from_pose_keypoint(run.outputs("5")[0])
    # proportions with the reference's long legs: the feet pass the bottom edge unless the clip is kept in frame
    assert any(not np.isfinite(f.people[0].body[[10, 13], 0]).all() for f in loose)
    assert all(np.isfinite(f.people[0].body[:14, 0]).all() for f in kept)
    assert max(f.people[0].body[:14, 1].max() for f in kept) <= 896 - 1 - 4 + 1e-6
    # smoothing without lag follows the walk; the causal filter trails it
    walk = np.array([d["people"][0]["pose_keypoints_2d"][3] for d in driving])
    zero = np.array([f.people[0].body[1, 0] for f in frames_from_pose_keypoint(run.outputs("6")[0])])
    causal = np.array([f.people[0].body[1, 0] for f in frames_from_pose_keypoint(run.outputs("7")[0])])
    assert abs(np.mean(zero - walk)) < 0.5 < abs(np.mean(causal - walk))


def test_mediapipe_node_passes_its_hand_and_content_settings(host, monkeypatch):
    pose_nodes = pack(host, "nodes.pose_nodes")
    keypoints = pack(host, "xdyna_core.pose.keypoints")
    seen = {}

    def fake_detect(frames, **options):
        frames = list(frames)
        seen.update(options)
        body = keypoints.missing_points(18)
        body[0] = (20.0, 5.0, 1.0)  # inside the top bar
        body[1] = (20.0, 30.0, 1.0)
        return [keypoints.PersonPose(body) for _ in frames]

    monkeypatch.setattr(pose_nodes, "detect_people", fake_detect)
    cls = host.nodes.NODE_CLASS_MAPPINGS["XDyna_MediaPipePose"]
    image = torch.rand(3, 64, 48, 3)
    image[:, :12] = 0.0  # a letterbox bar over the top 12 rows
    common = dict(image=image, min_visibility=0.3, face=True)
    result = cls.execute(mode="video", hand_presence=0.2, hand_gap=7, hand_crops=True, image_frames=1, **common)
    assert seen["hand_presence"] == 0.2 and seen["hand_gap"] == 7 and seen["hand_crops"] is True
    assert seen["content"] == (0, 12, 48, 64) and result.result[1].shape[0] == 1
    cls.execute(mode="video", content_area="whole_image", **common)
    assert seen["content"] == (0, 0, 48, 64)
    frames = cls.execute(mode="images", **common).result[0]  # unrelated images: each its own bars, after
    assert seen["content"] is None
    assert all(frame["people"][0]["pose_keypoints_2d"][2] == 0 for frame in frames)  # the nose in the bar: gone
    frames = cls.execute(mode="images", content_area="whole_image", **common).result[0]
    assert all(frame["people"][0]["pose_keypoints_2d"][2] == 1 for frame in frames)
