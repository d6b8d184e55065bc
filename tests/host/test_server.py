"""The pack inside a real ComfyUI server on loopback: it loads, and its nodes are published to clients."""

from __future__ import annotations


def test_server_publishes_the_pack_nodes(comfy_server):
    info = comfy_server.get_json("/object_info")
    for node_id in ("XDyna_LoadModel", "XDyna_TemporalSampler", "XDyna_FaceCropper", "XDyna_DWPoseExtractor"):
        assert node_id in info, f"{node_id} missing; server log:\n{comfy_server.log()}"
        assert info[node_id]["category"].startswith("X-Dyna")
    assert "XDynaTest_TinyVAE" in info
    assert "IMPORT FAILED" not in comfy_server.log() or "comfyui-xdyna" not in comfy_server.log()
