"""X-Dyna Hints to Images inside a real ComfyUI: any part of a pose or S-Face hint clip as an IMAGE batch."""

from __future__ import annotations

import importlib

import pytest
import torch

NODE = "XDyna_HintsToImages"


def pack(comfy_host, module: str):
    return importlib.import_module(f"{comfy_host.pack_module}.{module}")


def test_schema(comfy_host):
    info = comfy_host.nodes.NODE_CLASS_MAPPINGS[NODE].GET_NODE_INFO_V1()
    assert info["category"] == "X-Dyna/preview" and info["output"] == ["IMAGE"]
    assert set(info["input"]["required"]["hints"][0].split(",")) == {"XDYNA_POSE_FRAMES", "XDYNA_FACE_CONDITION"}
    for name, spec in info["input"]["required"].items():
        assert spec[1].get("tooltip"), name


def test_start_count_stride_and_face_canvases(comfy_host):
    cls = comfy_host.nodes.NODE_CLASS_MAPPINGS[NODE]
    tensors = pack(comfy_host, "xdyna_core.hints").TensorHintFrames
    clip = torch.rand(10, 8, 6, 6)
    face = tensors(clip)

    def run(hints, **options):
        inputs = {"start": 0, "count": 0, "stride": 1, "face_canvases": "local", **options}
        return cls.execute(hints, **inputs).result[0]

    torch.testing.assert_close(run(face, start=1, count=3, stride=2), clip[[1, 3, 5], ..., :3])
    torch.testing.assert_close(run(face, start=7, face_canvases="global"), clip[7:, ..., 3:])
    both = run(face, start=9, face_canvases="side_by_side")
    assert both.shape == (1, 8, 12, 3)
    torch.testing.assert_close(both, torch.cat([clip[9:, ..., :3], clip[9:, ..., 3:]], dim=2))
    poses = tensors(clip[..., :3])
    torch.testing.assert_close(run(poses, stride=4, face_canvases="global"), clip[[0, 4, 8], ..., :3])
    with pytest.raises(ValueError, match="start is 10, but the hint clip has 10 frames"):
        run(face, start=10)
    with pytest.raises(TypeError, match="hints input must be pose frames"):
        run(clip)
