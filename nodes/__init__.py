"""The pack's ComfyUI nodes (V3 schema). Thin wrappers: the maths lives in `xdyna_core`."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .comfy_glue import register_model_folders
from .model_nodes import XDynaApplyDynamicsAdapter, XDynaLoadModel, XDynaLoadReference
from .preprocess import XDynaCropResize

NODES: list[type[io.ComfyNode]] = [
    XDynaCropResize,
    XDynaLoadModel,
    XDynaLoadReference,
    XDynaApplyDynamicsAdapter,
]


class XDynaExtension(ComfyExtension):
    async def on_load(self) -> None:
        register_model_folders()

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> XDynaExtension:
    return XDynaExtension()
