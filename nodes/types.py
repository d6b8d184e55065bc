"""The custom socket types the pack's nodes exchange, declared once.

| type | value |
|---|---|
| `POSE_KEYPOINT` | poses in the comfyui_controlnet_aux format (a list of frame dicts), shared with other packs |
| `XDYNA_WEIGHTS` | `model_nodes.XDynaWeights`: the X-Dyna additions of one UNet checkpoint |
| `XDYNA_REFERENCE` | `xdyna_core.reference.XDynaReference`: the prepared reference image |
| `XDYNA_POSE_FRAMES` | `xdyna_core.hints.HintFrames` with 3 channels: rendered poses, produced a window at a time |
| `XDYNA_FACE_CONDITION` | `xdyna_core.hints.HintFrames` with 6 channels: the S-Face condition `cat([local, global])` |
"""

from __future__ import annotations

from comfy_api.latest import io

PoseKeypoint = io.Custom("POSE_KEYPOINT")
XDynaWeightsType = io.Custom("XDYNA_WEIGHTS")
XDynaReferenceType = io.Custom("XDYNA_REFERENCE")
PoseFrames = io.Custom("XDYNA_POSE_FRAMES")
FaceCondition = io.Custom("XDYNA_FACE_CONDITION")
