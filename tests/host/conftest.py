"""Host tier: tests that run inside a real ComfyUI (see `comfy_host.py` for how one is found and booted).

Without a ComfyUI the tier is skipped, unless `XDYNA_REQUIRE_HOST=1` (as CI sets): then the run fails at once,
and any host test that skips for another reason fails the session at the end (tests/conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import require_host, shared_data_dir
from tests.host.comfy_host import ComfyHost, find_comfyui

COMFYUI_PATH, COMFYUI_WHERE = find_comfyui()
HOST_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items) -> None:
    if COMFYUI_PATH is not None:
        return
    if require_host():
        raise pytest.UsageError(f"XDYNA_REQUIRE_HOST is set but the host tier has no ComfyUI: {COMFYUI_WHERE}")
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


@pytest.fixture(scope="session")
def staged(comfy_server) -> dict:
    """Every file the example workflows name, in the server's model and input folders (placeholders for the
    models, the example assets or tiny stand-ins for the inputs); returns the server's node schemas."""
    from tests.host.media import tiny_image, tiny_video
    from xdyna_tools.examples.build import INPUT_FILES, stage_inputs, stage_models

    stage_models(comfy_server.models)
    assets = shared_data_dir()
    if all((assets / name).is_file() for name in INPUT_FILES):
        stage_inputs(comfy_server.input_dir, assets)
    else:  # the front-end's missing-media check looks at names only
        for name in INPUT_FILES:
            path = comfy_server.input_dir / name
            tiny_image(path) if name.endswith(".png") else tiny_video(path)
    return comfy_server.get_json("/object_info")


@pytest.fixture(scope="module")
def frontend(comfy_server, staged, tmp_path_factory):
    """ComfyUI's real front-end in headless Chromium, on the session's server; one per test module, because
    Playwright's synchronous client holds an event loop in this thread while it is open, and the in-process
    ComfyUI (`comfy_host`) runs its own with asyncio.run()."""
    from xdyna_tools.frontend import FrontEnd, chromium_unavailable, post_settings

    reason = chromium_unavailable()
    if reason:
        pytest.skip(reason)
    post_settings(comfy_server.url)
    with FrontEnd(comfy_server.url, tmp_path_factory.mktemp("chromium-profile")) as front:
        front.open()
        yield front
