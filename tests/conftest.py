"""Fixtures shared by both tiers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_report_header(config) -> str:
    from tests.host.comfy_host import find_comfyui

    path, where = find_comfyui()
    return f"host tier: {'ComfyUI from ' + where if path else 'SKIPPED, ' + where}"


def shared_data_dir() -> Path:
    """The example assets (`reference_1.png`, `driving_1.mp4`, `pose_1.mp4`): `XDYNA_SHARED_DATA` or ../shared/data."""
    return Path(os.environ.get("XDYNA_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not (path / "reference_1.png").is_file():
        pytest.skip(f"example assets not found in {path}; set XDYNA_SHARED_DATA to the folder holding reference_1.png")
    return path
