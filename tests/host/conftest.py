"""Host tier: tests that run inside a real ComfyUI (see `comfy_host.py` for how one is found and booted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.host.comfy_host import ComfyHost, find_comfyui

COMFYUI_PATH, COMFYUI_WHERE = find_comfyui()
HOST_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items) -> None:
    if COMFYUI_PATH is not None:
        return
    skip = pytest.mark.skip(reason=f"host tier needs a real ComfyUI: {COMFYUI_WHERE}")
    for item in items:
        if HOST_DIR in Path(item.fspath).resolve().parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def comfy_host(tmp_path_factory) -> ComfyHost:
    """ComfyUI booted once per session on CPU (or CUDA if present), with this pack loaded as a custom node."""
    assert COMFYUI_PATH is not None
    return ComfyHost(COMFYUI_PATH, tmp_path_factory.mktemp("comfyui"))


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    """A real ComfyUI server on loopback (CPU) with this pack and the test support nodes installed."""
    from tests.host.comfy_server import ComfyServer

    assert COMFYUI_PATH is not None
    server = ComfyServer(COMFYUI_PATH, tmp_path_factory.mktemp("comfyui-server")).start()
    yield server
    server.stop()
