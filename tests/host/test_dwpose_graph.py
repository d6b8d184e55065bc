"""XDyna_DWPoseExtractor inside a real ComfyUI: LoadImage → ImageBatch → extractor → PreviewImage.

The extractor runs tiny ONNX stand-ins of the released files (tests/fixtures/tiny_onnx.py) placed in a
temporary `xdyna/dwpose` folder registered with folder_paths: the detector reports a person in frames with a
blue pixel, the estimator puts every keypoint on the red spot of its crop, so the expected pose is known.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.tiny_onnx import dwpose_folder
from tests.host.comfy_host import PromptError

WIDTH, HEIGHT = 640, 480
SPOT = (250, 200)


@pytest.fixture
def dwpose_models(comfy_host, tmp_path, monkeypatch):
    """Tiny models in a temporary models/xdyna/dwpose, the only folder registered for the duration of a test."""
    folder = dwpose_folder(tmp_path / "models" / "xdyna" / "dwpose")
    monkeypatch.setitem(comfy_host.folder_paths.folder_names_and_paths, "xdyna_dwpose", ([str(folder)], {".onnx"}))
    return folder


def write_frames(comfy_host) -> tuple[str, str]:
    with_person = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    with_person[SPOT[1], SPOT[0]] = (255, 0, 0)
    with_person[470, 600] = (0, 0, 255)
    Image.fromarray(with_person).save(comfy_host.input_dir / "dwpose_person.png")
    Image.fromarray(np.zeros_like(with_person)).save(comfy_host.input_dir / "dwpose_nobody.png")
    return "dwpose_person.png", "dwpose_nobody.png"


def extractor_prompt(first: str, second: str, **options) -> dict:
    inputs = {
        "image": ["3", 0],
        "detector": "yolox_l.onnx",
        "pose_model": "dw-ll_ucoco_384.onnx",
        "person": "largest",
        "person_index": 0,
        "missing_person": "repeat_previous",
        "detection_threshold": 0.3,
        "keypoint_threshold": 0.3,
        "provider": "cpu",
        "batch_size": 4,
    }
    inputs.update(options)
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": first}},
        "2": {"class_type": "LoadImage", "inputs": {"image": second}},
        "3": {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["2", 0]}},
        "4": {"class_type": "XDyna_DWPoseExtractor", "inputs": inputs},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 1]}},
    }


def body_points(frame: dict) -> np.ndarray:
    """(x, y) in pixels of the body keypoints present in the first person of a POSE_KEYPOINT frame."""
    triples = np.asarray(frame["people"][0]["pose_keypoints_2d"], np.float64).reshape(-1, 3)
    points = triples[triples[:, 2] > 0, :2]
    if len(points) and points.max() <= 1.0:  # normalised coordinates
        points = points * [frame["canvas_width"], frame["canvas_height"]]
    return points


def test_the_node_is_registered_with_tooltips_and_its_model_folder(comfy_host):
    assert "XDyna_DWPoseExtractor" in comfy_host.pack_node_ids
    info = comfy_host.nodes.NODE_CLASS_MAPPINGS["XDyna_DWPoseExtractor"].GET_NODE_INFO_V1()
    assert info["category"] == "X-Dyna/pose"
    assert info["output"] == ["POSE_KEYPOINT", "IMAGE"]
    for name, spec in info["input"]["required"].items():
        assert spec[1].get("tooltip"), f"input {name} has no tooltip"
    paths, extensions = comfy_host.folder_paths.folder_names_and_paths["xdyna_dwpose"]
    assert ".onnx" in extensions
    assert any(p.replace("\\", "/").endswith("models/xdyna/dwpose") for p in paths)


def test_extractor_graph_gives_pose_keypoints_and_a_rendered_pose(comfy_host, dwpose_models):
    first, second = write_frames(comfy_host)
    run = comfy_host.run(extractor_prompt(first, second))
    frames, rendered = run.outputs("4")
    assert len(frames) == 2
    for frame in frames:
        assert (frame["canvas_width"], frame["canvas_height"]) == (WIDTH, HEIGHT)
        assert len(frame["people"]) == 1
        np.testing.assert_allclose(body_points(frame), np.tile(SPOT, (len(body_points(frame)), 1)), atol=0.01)
    assert frames[1]["people"] == frames[0]["people"]  # nobody in frame 2: the previous pose is repeated
    assert tuple(rendered.shape) == (2, HEIGHT, WIDTH, 3)
    drawn = rendered[0].numpy().max(axis=-1) > 0
    ys, xs = np.nonzero(drawn)
    assert len(xs) and np.abs(xs - SPOT[0]).max() <= 12 and np.abs(ys - SPOT[1]).max() <= 12
    np.testing.assert_array_equal(rendered[1].numpy(), rendered[0].numpy())
    assert run.ui["5"]["images"], "PreviewImage saved nothing"
    assert (2, 2) in comfy_host._progress or run.log.progress[-1:] == [(2, 2)]
    _, first_only = comfy_host.run(extractor_prompt(first, second, image_frames=1)).outputs("4")
    np.testing.assert_array_equal(first_only.numpy(), rendered[:1].numpy())


def test_keypoints_outside_the_content_area_are_left_out(comfy_host, dwpose_models, monkeypatch):
    pose_nodes = importlib.import_module(f"{comfy_host.pack_module}.nodes.pose_nodes")
    monkeypatch.setattr(pose_nodes, "content_box", lambda image: (0, SPOT[1] + 10, WIDTH, HEIGHT))  # a bar above
    first, second = write_frames(comfy_host)
    frames, _ = comfy_host.run(extractor_prompt(first, second)).outputs("4")
    assert [len(f["people"]) for f in frames] == [0, 0]  # every keypoint lies in the bar: nobody left
    frames, _ = comfy_host.run(extractor_prompt(first, second, content_area="whole_image")).outputs("4")
    assert [len(f["people"]) for f in frames] == [1, 1]


def test_empty_mode_leaves_the_frame_without_people(comfy_host, dwpose_models):
    first, second = write_frames(comfy_host)
    frames, rendered = comfy_host.run(extractor_prompt(first, second, missing_person="empty")).outputs("4")
    assert [len(f["people"]) for f in frames] == [1, 0]
    assert rendered[1].max().item() == 0.0


def test_missing_model_files_offline_name_each_file_and_the_folder(comfy_host, tmp_path, monkeypatch):
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True, raising=False)
    empty = tmp_path / "models" / "xdyna" / "dwpose"
    monkeypatch.setitem(comfy_host.folder_paths.folder_names_and_paths, "xdyna_dwpose", ([str(empty)], {".onnx"}))
    first, second = write_frames(comfy_host)
    with pytest.raises(PromptError) as err:
        comfy_host.run(extractor_prompt(first, second))
    message = str(err.value)
    assert "yolox_l.onnx" in message and "dw-ll_ucoco_384.onnx" in message
    assert "yzd-v/DWPose" in message and str(empty) in message


def test_interrupt_stops_the_extraction_between_frames(comfy_host, dwpose_models, monkeypatch):
    import comfy.model_management
    import comfy.utils

    progress = []

    def interrupt_after_first_frame(value, total, preview=None, node_id=None):
        progress.append((value, total))
        comfy.model_management.interrupt_current_processing(True)

    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", interrupt_after_first_frame)
    first, second = write_frames(comfy_host)
    with pytest.raises(PromptError) as err:
        comfy_host.run(extractor_prompt(first, second, batch_size=1))
    assert "execution_interrupted" in str(err.value.details)
    assert progress == [(1, 2)]  # the second frame's check raised before it was reported
