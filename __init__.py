"""X-Dyna for ComfyUI: expressive human image animation (CVPR 2025) as a ComfyUI node pack.

ComfyUI loads this file as a custom node package. The V3 extension is registered only when ComfyUI is
importable, so the package (and its plain-torch core) can also be imported by tests and tools anywhere.
"""

import importlib.util

WEB_DIRECTORY = "./web"

if importlib.util.find_spec("comfy_api") is not None:
    from .nodes import comfy_entrypoint

    __all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
else:
    __all__ = ["WEB_DIRECTORY"]
