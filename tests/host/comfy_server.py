"""A real ComfyUI server on loopback, with this pack (and the test-only support nodes) as custom nodes.

`python main.py --cpu --listen 127.0.0.1 --port <free> --base-directory <tmp>` from the ComfyUI checkout; the
base directory holds `custom_nodes/` (a link to this repository and a tiny generated package exposing
`support_nodes.py`), `models/`, `input/`, `output/` and `user/`, so the checkout itself is never written to.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.host.comfy_host import PACK_ROOT

SUPPORT_PACKAGE = '''"""Test-only tiny-weight nodes for a ComfyUI server started by the X-Dyna tests (generated)."""
import importlib.util

_spec = importlib.util.spec_from_file_location("xdyna_support_nodes", {path!r})
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
NODE_CLASS_MAPPINGS = {{k: v for k, v in _module.SUPPORT_NODES.items() if k != "XDynaTest_TinyControlNet"}}
'''


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """Start with `ComfyServer(comfy_path, base_dir).start()`; `url`, `get_json(path)`; `stop()` when done."""

    def __init__(self, comfy_path: Path, base_dir: Path, port: int | None = None):
        self.comfy_path = comfy_path
        self.base = base_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log_path = base_dir / "server.log"

    @property
    def models(self) -> Path:
        return self.base / "models"

    @property
    def input_dir(self) -> Path:
        return self.base / "input"

    @property
    def output_dir(self) -> Path:
        return self.base / "output"

    def _prepare(self) -> None:
        for name in ("custom_nodes", "models", "input", "output", "temp", "user"):
            (self.base / name).mkdir(parents=True, exist_ok=True)
        pack = self.base / "custom_nodes" / "comfyui-xdyna"
        if not pack.exists():
            pack.symlink_to(PACK_ROOT, target_is_directory=True)
        support = self.base / "custom_nodes" / "xdyna_test_support"
        support.mkdir(exist_ok=True)
        source = PACK_ROOT / "tests" / "host" / "support_nodes.py"
        (support / "__init__.py").write_text(SUPPORT_PACKAGE.format(path=str(source)))

    def start(self, timeout: float = 180.0) -> ComfyServer:
        self._prepare()
        command = [
            sys.executable,
            "main.py",
            "--cpu",
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--base-directory",
            str(self.base),
            "--disable-auto-launch",
            # the asset database would otherwise live in (and lock) the checkout's own user/ folder
            "--database-url",
            f"sqlite:///{self.base / 'user' / 'comfyui.db'}",
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        log = open(self.log_path, "w")  # noqa: SIM115 (closed with the process)
        self.process = subprocess.Popen(command, cwd=self.comfy_path, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log()}")
            try:
                self.get_json("/system_stats")
                return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f} s:\n{self.log()}")

    def get_json(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
