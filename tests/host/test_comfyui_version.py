"""The ComfyUI range the pack declares is the one its host tier runs on."""

from __future__ import annotations

import os
import re

from tests.conftest import REPO_ROOT


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_the_declared_minimum_is_the_comfyui_under_test(comfy_host):
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    declared = re.search(r'^requires-comfyui\s*=\s*"([^"]+)"', pyproject, re.MULTILINE)[1]  # tomllib needs 3.11
    minimum = re.fullmatch(r">=\s*([\d.]+)", declared)
    assert minimum, f"requires-comfyui should be a lower bound, got {declared!r}"
    source = (comfy_host.path / "comfyui_version.py").read_text()
    running = re.search(r"__version__\s*=\s*\"([\d.]+)\"", source)[1]
    assert version(running) >= version(minimum[1]), f"ComfyUI {running} is older than the declared {declared}"
    if os.environ.get("XDYNA_REQUIRE_HOST"):  # CI: the minimum itself is what runs
        assert version(running) == version(minimum[1]), f"CI runs ComfyUI {running}, the pack declares {declared}"
