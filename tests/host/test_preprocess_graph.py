"""The first pack node inside a real ComfyUI: core loaders → XDyna_CropResize → core savers."""

from __future__ import annotations

import shutil
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from tests.host.comfy_host import PromptError
from tests.oracles.official_preprocess import official_driving_crop, official_reference_crop


def write_clip(source, target, frames: int) -> list[np.ndarray]:
    """Copy the first `frames` frames of `source` into a new mp4; return them as decoded from the new file."""
    with av.open(str(source)) as src, av.open(str(target), "w") as dst:
        stream = dst.add_stream("libx264", rate=Fraction(8))
        stream.width, stream.height, stream.pix_fmt = 512, 896, "yuv420p"
        for i, frame in enumerate(src.decode(video=0)):
            if i == frames:
                break
            dst.mux(stream.encode(av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")))
        dst.mux(stream.encode(None))
    with av.open(str(target)) as clip:
        return [f.to_ndarray(format="rgb24") for f in clip.decode(video=0)]


def test_pack_loads_like_a_custom_node(comfy_host):
    assert "XDyna_CropResize" in comfy_host.pack_node_ids
    info = comfy_host.nodes.NODE_CLASS_MAPPINGS["XDyna_CropResize"].GET_NODE_INFO_V1()
    assert info["category"] == "X-Dyna/preprocess"
    crop = info["input"]["required"]["crop"]
    assert crop[1]["options"] == ["center", "top_biased"] if crop[0] == "COMBO" else crop[0] == ["center", "top_biased"]
    assert "xdyna" in comfy_host.folder_paths.folder_names_and_paths


def test_reference_image_graph(comfy_host, shared_data):
    shutil.copy(shared_data / "reference_1.png", comfy_host.input_dir / "reference_1.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "reference_1.png"}},
        "2": {
            "class_type": "XDyna_CropResize",
            "inputs": {"image": ["1", 0], "width": 384, "height": 384, "crop": "center", "resize": "bilinear"},
        },
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "xdyna_ref"}},
    }
    run = comfy_host.run(prompt)

    fitted = run.outputs("2")[0]
    # The oracle starts from the pixels ComfyUI decoded: LoadImage decodes through PyAV, whose JPEG colour
    # conversion differs from OpenCV's by a few levels (reference_1.png is a JPEG stream).
    loaded = run.outputs("1")[0][0]
    source = (loaded * 255.0).round().to(torch.uint8).numpy()
    assert np.abs(source.astype(float) - loaded.numpy() * 255.0).max() < 1e-3
    expected = official_reference_crop(source, 384, 384)
    assert fitted.shape == (1, 384, 384, 3)
    diff = (fitted[0] * 255.0 - torch.from_numpy(expected).float()).abs()
    assert diff.max().item() <= 1.5 and diff.mean().item() < 0.6

    saved = run.ui["3"]["images"][0]
    on_disk = np.array(Image.open(comfy_host.output_dir / saved["subfolder"] / saved["filename"]))
    assert on_disk.shape == (384, 384, 3)
    assert np.abs(on_disk.astype(int) - np.clip(fitted[0].numpy() * 255.0, 0, 255).astype(int)).max() <= 1


def test_driving_video_graph(comfy_host, shared_data):
    frames = write_clip(shared_data / "driving_1.mp4", comfy_host.input_dir / "driving_clip.mp4", frames=6)
    prompt = {
        "1": {"class_type": "LoadVideo", "inputs": {"file": "driving_clip.mp4"}},
        "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
        "3": {
            "class_type": "XDyna_CropResize",
            "inputs": {"image": ["2", 0], "width": 256, "height": 192, "crop": "top_biased", "resize": "bilinear"},
        },
        "4": {"class_type": "CreateVideo", "inputs": {"images": ["3", 0], "fps": ["2", 2]}},
        "5": {
            "class_type": "SaveVideo",
            "inputs": {"video": ["4", 0], "filename_prefix": "xdyna/driving", "format": "mp4", "codec": "h264"},
        },
    }
    run = comfy_host.run(prompt)

    fitted = run.outputs("3")[0]
    assert fitted.shape == (len(frames), 192, 256, 3)
    for i in (0, len(frames) - 1):
        expected = official_driving_crop(frames[i], 192, 256)
        diff = (fitted[i] * 255.0 - torch.from_numpy(expected).float()).abs()
        assert diff.mean().item() < 1.0, (i, diff.mean().item())

    saved = run.ui["5"]["images"][0]
    with av.open(str(comfy_host.output_dir / saved["subfolder"] / saved["filename"])) as video:
        stream = video.streams.video[0]
        decoded = [f for f in video.decode(video=0)]
        assert (stream.width, stream.height, len(decoded)) == (256, 192, len(frames))
        assert float(stream.average_rate) == pytest.approx(8.0)
    assert cv2 is not None


def test_bad_size_is_a_clear_node_error(comfy_host, shared_data):
    shutil.copy(shared_data / "reference_1.png", comfy_host.input_dir / "reference_1.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "reference_1.png"}},
        "2": {
            "class_type": "XDyna_CropResize",
            "inputs": {"image": ["1", 0], "width": 500, "height": 896, "crop": "center", "resize": "bilinear"},
        },
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    with pytest.raises(PromptError) as err:
        comfy_host.run(prompt)
    message = str(err.value)
    assert "width is 500" in message and "multiples of 8" in message and "496 or 504" in message
