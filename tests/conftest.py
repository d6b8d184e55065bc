"""Fixtures and checks shared by both tiers.

`XDYNA_REQUIRE_HOST=1` (CI sets it) makes the host tier mandatory: without a ComfyUI the run stops at
collection (tests/host/conftest.py), and a host test that skips for any other reason (no Chromium, no
MediaPipe, no example assets) fails the session; only `gpu`-marked tests may skip, on machines without CUDA.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST_TESTS = "tests/host/"


def require_host() -> bool:
    return os.environ.get("XDYNA_REQUIRE_HOST", "").strip().lower() in {"1", "true", "yes", "on"}


def pytest_report_header(config) -> str:
    from tests.host.comfy_host import find_comfyui

    path, where = find_comfyui()
    required = " (required: XDYNA_REQUIRE_HOST)" if require_host() else ""
    return f"host tier{required}: {'ComfyUI from ' + where if path else 'SKIPPED, ' + where}"


class HostTally:
    """What happened to the host tier's tests in this session."""

    def __init__(self):
        self.passed = self.failed = 0
        self.skipped: list[str] = []

    def record(self, report) -> None:
        if not report.nodeid.startswith(HOST_TESTS):
            return
        if report.skipped:
            if "gpu" not in report.keywords:  # the GPU tier skips without CUDA, by design
                reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
                self.skipped.append(f"{report.nodeid}: {reason}")
        elif report.when == "call":
            self.passed += report.passed
            self.failed += report.failed


TALLY = HostTally()


def pytest_runtest_logreport(report) -> None:
    TALLY.record(report)


def pytest_collectreport(report) -> None:
    TALLY.record(report)  # a module that skips as a whole (pytest.importorskip at its top)


def pytest_sessionfinish(session, exitstatus) -> None:
    if require_host() and TALLY.skipped and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    write = terminalreporter.write_line
    write(f"host tier: {TALLY.passed} passed, {TALLY.failed} failed, {len(TALLY.skipped)} skipped")
    if require_host() and TALLY.skipped:
        write("XDYNA_REQUIRE_HOST is set, so these host tests must not skip:", red=True)
        for line in TALLY.skipped:
            write(f"  {line}", red=True)


def shared_data_dir() -> Path:
    """The example assets (`reference_1.png`, `driving_1.mp4`, `pose_1.mp4`): `XDYNA_SHARED_DATA` or ../shared/data."""
    return Path(os.environ.get("XDYNA_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not (path / "reference_1.png").is_file():
        pytest.skip(f"example assets not found in {path}; set XDYNA_SHARED_DATA to the folder holding reference_1.png")
    return path
