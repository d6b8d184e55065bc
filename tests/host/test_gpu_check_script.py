"""The GPU check script (`benchmarks/gpu_check.py`) runs here in its smoke mode, so the one run a GPU session
gets is not spent on a broken script: every stage must print its line and the script must exit 0."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.host.conftest import COMFYUI_PATH

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_check_script_runs_end_to_end_in_smoke_mode():
    env = dict(os.environ, COMFYUI_PATH=str(COMFYUI_PATH))
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr[-4000:]
    assert "gpu_check: ok" in out
    for precision in ("fp16", "bf16"):
        call = re.search(rf"^{precision}: one UNet call .* max \|diff\| (\S+) \(of (\S+)\)$", out, re.M)
        assert call, out
        diff, scale = float(call.group(1)), float(call.group(2))
        assert 0 < diff < 0.05 * scale, call.group(0)  # half precision differs from fp32, but only by rounding
        runs = re.findall(rf"^{precision}: (\d+) frames, 2 steps: .* UNet frames (\d+) \(released (\d+)\)", out, re.M)
        assert [frames for frames, _, _ in runs] == ["16", "20"], out
        for _, ours, released in runs:
            assert int(ours) == int(released), out  # the same UNet work as the release: no frame skipped
    offload = re.search(r"^fp16: X-Dyna weights half offloaded vs fully loaded: max \|diff\| (\S+)$", out, re.M)
    assert offload and float(offload.group(1)) == 0.0, out
