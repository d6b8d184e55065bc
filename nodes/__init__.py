"""The pack's ComfyUI nodes (V3 schema). Thin wrappers: the maths lives in `xdyna_core`.

Each stage module lists its node classes in `NODES`; this package collects them in STAGES order.
"""

from __future__ import annotations

import importlib

from comfy_api.latest import ComfyExtension, io

from ..xdyna_comfy.folders import register_model_folders

STAGES = (
    "preprocess",
    "model_nodes",
    "sampling_nodes",
    "face_nodes",
    "pose_extract_nodes",
    "pose_nodes",
    "retarget_nodes",
    "hint_nodes",
    "weights_nodes",
)


def node_list() -> list[type[io.ComfyNode]]:
    return [node for stage in STAGES for node in importlib.import_module(f".{stage}", __name__).NODES]


class XDynaExtension(ComfyExtension):
    async def on_load(self) -> None:
        register_model_folders()

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return node_list()


async def comfy_entrypoint() -> XDynaExtension:
    return XDynaExtension()
