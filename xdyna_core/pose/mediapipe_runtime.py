"""Importing MediaPipe 0.10.x's legacy solutions: availability, the install hint, and a quiet import.

Importing MediaPipe's bindings with protobuf ≥ 5 prints "AttributeError: 'MessageFactory' object has no
attribute 'GetPrototype'" to stderr (a probe for an API protobuf removed; nothing fails). Imports go through
`quiet_import`, which captures stderr meanwhile and logs what was printed at debug level.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging

logger = logging.getLogger("xdyna")

MEDIAPIPE_INSTALL_HINT = (
    "python -m pip install --no-deps mediapipe==0.10.21 && python -m pip install absl-py flatbuffers matplotlib"
)


class MediaPipeUnavailableError(ImportError):
    """MediaPipe with its bundled legacy solutions cannot be imported."""


def quiet_import(name: str):
    """Import a MediaPipe module with stderr captured (see the module notes); what it printed goes to the log."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return importlib.import_module(name)
    finally:
        if captured.getvalue().strip():
            logger.debug("importing %s printed: %s", name, captured.getvalue().strip())


def load_holistic_module():
    """Import `mediapipe.python.solutions.holistic` and `solution_base`, or explain how to install them."""
    try:
        solution_base = quiet_import("mediapipe.python.solution_base")
        holistic = quiet_import("mediapipe.python.solutions.holistic")
    except ImportError as err:
        version = _installed_version()
        found = f"mediapipe {version} is installed but has" if version else "mediapipe is not installed, so there is"
        raise MediaPipeUnavailableError(
            f"{found} no bundled Holistic solution ({err}); the offline pose backend needs mediapipe 0.10.x "
            f"up to 0.10.21, whose wheel carries the models. Install it without downgrading numpy/protobuf: "
            f"{MEDIAPIPE_INSTALL_HINT}"
        ) from err
    return solution_base, holistic


def _installed_version() -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("mediapipe")
    except (ImportError, PackageNotFoundError):
        return None


def mediapipe_status() -> tuple[bool, str]:
    """Whether the backend can run here, and a sentence saying why not."""
    try:
        load_holistic_module()
    except MediaPipeUnavailableError as err:
        return False, str(err)
    return True, f"mediapipe {_installed_version()}"
