"""`python -m xdyna_core.convert --help` answers without importing torch (which takes seconds to load)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO_ROOT

HELP_WITHOUT_TORCH = """
import runpy, sys
sys.argv = ["python -m xdyna_core.convert", "--help"]
try:
    runpy.run_module("xdyna_core.convert", run_name="__main__")
except SystemExit as end:
    assert end.code == 0, end.code
print("torch imported:", "torch" in sys.modules)
"""


def test_help_does_not_import_torch():
    run = subprocess.run(
        [sys.executable, "-c", HELP_WITHOUT_TORCH], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert "--dtype {fp16,bf16,fp32,keep}" in run.stdout
    assert run.stdout.strip().endswith("torch imported: False")
