"""A real ComfyUI server on loopback with this pack and the test-only support nodes installed.

The server itself is `xdyna_tools.comfy_launch.ComfyServer` (the workflow builder runs the same one); the tests
add a tiny generated package exposing `support_nodes.py` (tiny VAE, CLIP vision, conditioning) to it.
"""

from __future__ import annotations

from xdyna_tools.comfy_launch import PACK_ROOT
from xdyna_tools.comfy_launch import ComfyServer as _ComfyServer

SUPPORT_PACKAGE = '''"""Test-only tiny-weight nodes for a ComfyUI server started by the X-Dyna tests (generated)."""
import importlib.util

_spec = importlib.util.spec_from_file_location("xdyna_support_nodes", {path!r})
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
NODE_CLASS_MAPPINGS = {{k: v for k, v in _module.SUPPORT_NODES.items() if k != "XDynaTest_TinyControlNet"}}
'''


class ComfyServer(_ComfyServer):
    """`xdyna_tools.comfy_launch.ComfyServer` with `tests/host/support_nodes.py` as one more custom node package."""

    def prepare(self) -> ComfyServer:
        super().prepare()
        support = self.custom_nodes / "xdyna_test_support"
        support.mkdir(exist_ok=True)
        source = PACK_ROOT / "tests" / "host" / "support_nodes.py"
        (support / "__init__.py").write_text(SUPPORT_PACKAGE.format(path=str(source)))
        return self
