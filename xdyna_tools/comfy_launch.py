"""Find a ComfyUI checkout, and run it as a server on loopback with this pack installed (for the workflow builder
and the host tests).

`python main.py --cpu --listen 127.0.0.1 --port <free> --base-directory <dir>` from the checkout; the base
directory holds `custom_nodes/` (a link to this pack, plus any package a caller adds), `models/`, `input/`,
`output/`, `temp/` and `user/`, so the checkout itself is never written to.
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

PACK_ROOT = Path(__file__).resolve().parents[1]
PACK_FOLDER = "comfyui-xdyna"  # the folder name the pack gets under custom_nodes/ here
CONVENTIONAL_LOCATIONS = (Path.home() / "ComfyUI", Path("/opt/ComfyUI"))


def is_comfyui_checkout(path: Path) -> bool:
    return (path / "main.py").is_file() and (path / "execution.py").is_file() and (path / "comfy").is_dir()


def find_comfyui() -> tuple[Path | None, str]:
    """Locate a ComfyUI checkout: `COMFYUI_PATH`, the ComfyUI this pack sits in, then conventional places.

    Returns the path (or None) and a sentence saying where it was found or where we looked.
    """
    env = os.environ.get("COMFYUI_PATH")
    if env:
        path = Path(env).expanduser().resolve()
        if is_comfyui_checkout(path):
            return path, f"COMFYUI_PATH={path}"
        return None, f"COMFYUI_PATH={env} is not a ComfyUI checkout (no main.py, execution.py and comfy/ there)"
    if PACK_ROOT.parent.name == "custom_nodes" and is_comfyui_checkout(PACK_ROOT.parent.parent):
        return PACK_ROOT.parent.parent, f"the ComfyUI this pack is installed in ({PACK_ROOT.parent.parent})"
    for path in CONVENTIONAL_LOCATIONS:
        if is_comfyui_checkout(path):
            return path, f"conventional location {path}"
    looked = ", ".join(str(p) for p in CONVENTIONAL_LOCATIONS)
    return None, (
        f"no ComfyUI checkout found: set COMFYUI_PATH, install this pack under ComfyUI/custom_nodes, "
        f"or put ComfyUI at one of {looked} (../shared/host/unpack-comfyui.sh DEST unpacks one)"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """Start with `ComfyServer(comfy_path, base_dir).start()`; `url`, `get_json(path)`; `stop()` when done.

    `prepare()` lays out the base directory (start() calls it); subclasses add custom node packages there.
    """

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

    @property
    def custom_nodes(self) -> Path:
        return self.base / "custom_nodes"

    def prepare(self) -> ComfyServer:
        for name in ("custom_nodes", "models", "input", "output", "temp", "user"):
            (self.base / name).mkdir(parents=True, exist_ok=True)
        pack = self.custom_nodes / PACK_FOLDER
        if not pack.exists():
            pack.symlink_to(PACK_ROOT, target_is_directory=True)
        return self

    def start(self, timeout: float = 180.0) -> ComfyServer:
        self.prepare()
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
