"""XDyna_FaceCropper inside a real ComfyUI: schema, direct execution, and a graph from a video file.

Core ComfyUI has no node that makes POSE_KEYPOINT, so the graph test uses the pack's own MediaPipe pose node
(skipped where MediaPipe 0.10.x is not usable); the direct test calls the node class ComfyUI loaded.
"""

from __future__ import annotations

import importlib
import json
from fractions import Fraction

import numpy as np
import pytest
import torch

from tests.host.comfy_host import PromptError
from tests.host.xdyna_setup import retarget_inputs

NODE = "XDyna_FaceCropper"


def pack(comfy_host, module: str):
    return importlib.import_module(f"{comfy_host.pack_module}.{module}")


def write_clip(source, target, frames: int, stride: int = 2) -> list[np.ndarray]:
    """Every `stride`-th frame of `source` (from frame 200) into a new mp4; return them as decoded from it."""
    import av

    with av.open(str(source)) as src, av.open(str(target), "w") as dst:
        stream = dst.add_stream("libx264", rate=Fraction(8))
        stream.width, stream.height, stream.pix_fmt = 512, 896, "yuv420p"
        written = 0
        for i, frame in enumerate(src.decode(video=0)):
            if i < 200 or (i - 200) % stride:
                continue
            dst.mux(stream.encode(av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")))
            written += 1
            if written == frames:
                break
        dst.mux(stream.encode(None))
    with av.open(str(target)) as clip:
        return [f.to_ndarray(format="rgb24") for f in clip.decode(video=0)]


def synthetic_pose(count: int, width: int, height: int) -> list[dict]:
    rng = np.random.default_rng(0)
    frames = []
    for i in range(count):
        pts = rng.uniform(-10, 10, size=(68, 2)) + [width * 0.5 + i, height * 0.3]
        face = np.concatenate([pts, np.ones((68, 1))], 1).ravel().tolist()
        frames.append({"people": [{"face_keypoints_2d": face}], "canvas_width": width, "canvas_height": height})
    return frames


def test_schema_loads_like_a_custom_node(comfy_host):
    assert NODE in comfy_host.pack_node_ids
    info = comfy_host.nodes.NODE_CLASS_MAPPINGS[NODE].GET_NODE_INFO_V1()
    assert info["category"] == "X-Dyna/face"
    assert info["output"] == ["XDYNA_FACE_CONDITION", "IMAGE", "IMAGE", "STRING"]
    required = info["input"]["required"]
    assert required["pose_keypoint"][0] == "POSE_KEYPOINT"
    for group in ("required", "optional"):
        for name, spec in info["input"].get(group, {}).items():
            assert spec[1].get("tooltip"), f"input {name} has no tooltip"


def execute(cls, frames, pose, **options):
    inputs = dict(width=64, height=96, crop="top_biased", stabilize=True, smoothing=1.0, max_gap=8)
    inputs.update(person_index=0, on_no_face="error")
    inputs.update(options)
    return cls.execute(image=frames, pose_keypoint=pose, **inputs).result


def test_execute_in_the_host(comfy_host):
    cls = comfy_host.nodes.NODE_CLASS_MAPPINGS[NODE]
    frames = torch.rand(5, 180, 120, 3, generator=torch.Generator().manual_seed(0))
    condition, local, glob, boxes = execute(cls, frames, synthetic_pose(5, 120, 180))
    assert local.shape == glob.shape == (5, 96, 64, 3)  # five frames: fewer than image_frames, all shown
    assert condition.hint().shape == (5, 96, 64, 6)
    torch.testing.assert_close(condition.hint()[..., 3:], glob)
    assert condition.driving is frames  # rendered from the driving frames on demand, no canvases held
    record = json.loads(boxes)
    assert (record["width"], record["height"]) == (64, 96) and len(record["frames"]) == 5
    assert all(f["status"] == "detected" for f in record["frames"])
    _, local, glob, _ = execute(cls, frames, synthetic_pose(5, 120, 180), image_frames=2)
    torch.testing.assert_close(local, condition.hint([0, 4])[..., :3])  # the first and the last frame
    nobody = [{"people": [], "canvas_width": 120, "canvas_height": 180}] * 5
    with pytest.raises(ValueError, match="on_no_face"):
        execute(cls, frames, nobody)
    assert not execute(cls, frames, nobody, on_no_face="black")[0].hint().any()


def test_body_fallback_switch(comfy_host):
    cls = comfy_host.nodes.NODE_CLASS_MAPPINGS[NODE]
    frames = torch.rand(12, 180, 120, 3, generator=torch.Generator().manual_seed(1))
    pose = synthetic_pose(12, 120, 180)
    for i, frame in enumerate(pose):
        face = np.asarray(frame["people"][0]["face_keypoints_2d"]).reshape(68, 3)[:, :2]
        body = np.zeros((18, 3))
        centre = face.mean(axis=0)
        for joint, offset in zip((0, 14, 15, 16, 17), ((0, 2), (-4, -3), (4, -3), (-9, -1), (9, -1))):
            body[joint] = (*(centre + offset), 1.0)
        frame["people"][0]["pose_keypoints_2d"] = body.ravel().tolist()
        if 3 <= i < 9:
            frame["people"][0]["face_keypoints_2d"] = None  # the landmarks lost for six frames
    statuses = {}
    for fallback in (True, False):
        record = json.loads(execute(cls, frames, pose, max_gap=2, body_fallback=fallback)[3])
        statuses[fallback] = [f["status"] for f in record["frames"]][3:9]
    assert statuses == {True: ["body"] * 6, False: ["held"] * 6}


def mediapipe_pose_usable(comfy_host) -> None:
    if "XDyna_MediaPipePose" not in comfy_host.pack_node_ids:
        pytest.skip("the pack has no XDyna_MediaPipePose node to make POSE_KEYPOINT in a graph")
    usable, why = pack(comfy_host, "xdyna_core.pose.mediapipe_backend").mediapipe_status()
    if not usable:
        pytest.skip(why)


def face_prompt(clip: str, width: int, height: int, on_no_face: str = "error") -> dict:
    return {
        "1": {"class_type": "LoadVideo", "inputs": {"file": clip}},
        "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
        "3": {
            "class_type": "XDyna_MediaPipePose",
            "inputs": {"image": ["2", 0], "mode": "video", "min_visibility": 0.3, "face": True},
        },
        "4": {
            "class_type": NODE,
            "inputs": {
                "image": ["2", 0],
                "pose_keypoint": ["3", 0],
                "width": width,
                "height": height,
                "crop": "top_biased",
                "stabilize": True,
                "smoothing": 1.0,
                "max_gap": 8,
                "person_index": 0,
                "on_no_face": on_no_face,
            },
        },
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 1]}},
        "6": {"class_type": "PreviewImage", "inputs": {"images": ["4", 2]}},
    }


def test_video_graph_with_mediapipe_pose(comfy_host, shared_data):
    mediapipe_pose_usable(comfy_host)
    frames = write_clip(shared_data / "driving_1.mp4", comfy_host.input_dir / "face_clip.mp4", frames=8)
    run = comfy_host.run(face_prompt("face_clip.mp4", 256, 448))
    condition, local, glob, boxes = run.outputs("4")
    assert local.shape == glob.shape == (len(frames), 448, 256, 3)
    assert condition.status == ("detected",) * len(frames)
    landmarks = pack(comfy_host, "xdyna_core.face.landmarks").landmarks_from_pose_keypoint(run.outputs("3")[0])
    for i, face in enumerate(landmarks):
        pts = (face.points + 0.5) * 0.5 - 0.5  # 512×896 → 256×448, same aspect: no crop
        left, top, right, bottom = condition.boxes[i].tolist()
        (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
        assert left <= x0 and x1 < right and top <= y0 and y1 < bottom
        assert glob[i, top:bottom, left:right].any() and not glob[i, :top].any() and not glob[i, bottom:].any()
    assert len(run.ui["5"]["images"]) == len(frames) and len(run.ui["6"]["images"]) == len(frames)
    assert json.loads(boxes)["frames"][0]["box"] == condition.boxes[0].tolist()


def test_no_face_in_a_graph_is_a_clear_error(comfy_host, shared_data):
    mediapipe_pose_usable(comfy_host)
    import av

    target = comfy_host.input_dir / "face_black.mp4"
    with av.open(str(target), "w") as dst:
        stream = dst.add_stream("libx264", rate=Fraction(8))
        stream.width, stream.height, stream.pix_fmt = 128, 128, "yuv420p"
        for _ in range(3):
            dst.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((128, 128, 3), np.uint8), format="rgb24")))
        dst.mux(stream.encode(None))
    with pytest.raises(PromptError) as err:
        comfy_host.run(face_prompt("face_black.mp4", 64, 64))
    message = str(err.value)
    assert "no usable face in any of the 3 frames" in message and "on_no_face" in message
    run = comfy_host.run(face_prompt("face_black.mp4", 64, 64, on_no_face="black"))
    assert not run.outputs("4")[0].hint().any()


def retarget_prompt(clip: str, reference: str, link_face: bool) -> dict:
    """Driving poses retargeted (limbs mode) onto the reference's body, and the S-Face condition of the driving
    frames, its canvases following the retargeted head when `link_face`."""
    prompt = face_prompt(clip, 256, 448)
    prompt["7"] = {"class_type": "LoadImage", "inputs": {"image": reference}}
    prompt["8"] = {
        "class_type": "XDyna_MediaPipePose",
        "inputs": {"image": ["7", 0], "mode": "images", "min_visibility": 0.3, "face": True},
    }
    prompt["9"] = {"class_type": "XDyna_PoseRetarget", "inputs": retarget_inputs(("3", 0), ("8", 0), mode="limbs")}
    if link_face:
        prompt["4"]["inputs"]["retargeted_pose"] = ["9", 0]
    return prompt


def test_face_canvases_follow_the_retargeted_head_in_a_graph(comfy_host, shared_data):
    mediapipe_pose_usable(comfy_host)
    import shutil

    write_clip(shared_data / "driving_1.mp4", comfy_host.input_dir / "follow_clip.mp4", frames=6)
    shutil.copy(shared_data / "reference_1.png", comfy_host.input_dir / "follow_reference.png")
    runs = {link: comfy_host.run(retarget_prompt("follow_clip.mp4", "follow_reference.png", link)) for link in (0, 1)}
    stay, follow = (runs[link].outputs("4")[0] for link in (0, 1))
    assert stay.placements is None and follow.placements is not None
    keypoints = pack(comfy_host, "xdyna_core.pose.keypoints")
    retargeted = keypoints.frames_from_pose_keypoint(runs[1].outputs("9")[0])
    drawn = [f.resized(256, 448).people[0].face[:68, :2] for f in retargeted]  # where Render Pose draws it

    def face_centre(canvas):  # centroid of the global canvas' face region
        ys, xs = torch.nonzero(canvas.abs().sum(-1) > 0, as_tuple=True)
        return np.array([xs.float().mean() + 0.5, ys.float().mean() + 0.5])

    for i, points in enumerate(drawn):
        target = np.nanmean(points, axis=0)
        near = np.hypot(*(face_centre(follow.global_canvases([i])[0]) - target))
        far = np.hypot(*(face_centre(stay.global_canvases([i])[0]) - target))
        assert near < 8 < far, (i, near, far)  # the box is not centred on the landmarks: 8 px of slack
    record = json.loads(runs[1].outputs("4")[3])
    assert all(len(f["placement"]) == 6 for f in record["frames"])


def test_retargeted_pose_of_other_frames_is_named(comfy_host):
    cls = comfy_host.nodes.NODE_CLASS_MAPPINGS[NODE]
    frames = torch.rand(5, 180, 120, 3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="retargeted_pose has 4 frames but image has 5"):
        execute(cls, frames, synthetic_pose(5, 120, 180), retargeted_pose=synthetic_pose(4, 120, 180))
    with pytest.raises(ValueError, match="the retargeted_pose input is not readable POSE_KEYPOINT"):
        execute(cls, frames, synthetic_pose(5, 120, 180), retargeted_pose="not json")
    # the driving poses themselves: nothing moves
    plain = execute(cls, frames, synthetic_pose(5, 120, 180))[0]
    same = execute(cls, frames, synthetic_pose(5, 120, 180), retargeted_pose=synthetic_pose(5, 120, 180))[0]
    torch.testing.assert_close(same.hint(), plain.hint(), rtol=0, atol=0)
