"""The committed example workflows and their builder, without a ComfyUI: what the files carry, and what the
builder refuses. (tests/host/test_workflows.py checks the same files in a real server and front-end.)"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO_ROOT
from xdyna_core.weights_manifest import WEIGHTS
from xdyna_tools.examples import graphs
from xdyna_tools.examples.build import ASSET_FILES, VIEW_KEY

EXAMPLES = REPO_ROOT / "example_workflows"
NAMES = [w.name for w in graphs.workflows()]


def ui_file(name: str) -> dict:
    return json.loads((EXAMPLES / f"{name}.json").read_text(encoding="utf-8"))


def test_the_template_folder_holds_only_workflows_and_thumbnails():
    """ComfyUI serves example_workflows/ to browsers: no code in it."""
    files = sorted(p.relative_to(EXAMPLES).as_posix() for p in EXAMPLES.rglob("*") if p.is_file())
    expected = [f"api/{n}.json" for n in NAMES] + [f"{n}{ext}" for n in NAMES for ext in (".jpg", ".json")]
    assert files == sorted(expected)


def test_every_model_loader_says_where_its_file_comes_from_and_goes():
    by_name = {w.local_name: w for w in WEIGHTS}
    for name in NAMES:
        for node in ui_file(name)["nodes"]:
            named = [v for v in node.get("widgets_values", []) if isinstance(v, str) and v in by_name]
            models = node.get("properties", {}).get("models", [])
            assert [m["name"] for m in models] == named, (name, node["type"])
            for m in models:
                w = by_name[m["name"]]
                assert m == {"name": w.local_name, "url": w.remote.url, "directory": w.folder}


def test_every_example_opens_on_its_first_group_at_a_readable_zoom():
    for name in NAMES:
        extra = ui_file(name)["extra"]
        view, ds = extra[VIEW_KEY], extra["ds"]
        assert view["scale"] >= 0.6 and ds["scale"] == view["scale"]  # LiteGraph drops text below about 0.6
        assert ds["offset"] == [-view["top_left"][0], -view["top_left"][1]]
        first = min(ui_file(name)["groups"], key=lambda g: (g["bounding"][1], g["bounding"][0]))
        assert first["title"].startswith("1 · ")
        assert view["top_left"][0] < first["bounding"][0] and view["top_left"][1] < first["bounding"][1]


def test_the_thumbnails_tell_the_examples_apart():
    pictures = {n: np.asarray(Image.open(EXAMPLES / f"{n}.jpg").convert("L").resize((64, 64)), float) for n in NAMES}
    for n, picture in pictures.items():
        assert Image.open(EXAMPLES / f"{n}.jpg").size == (640, 640)
        for other in NAMES:
            if other < n:
                difference = np.abs(picture - pictures[other]).mean()
                assert difference > 12, f"{n} and {other} look alike (mean difference {difference:.1f} of 255)"


def run_builder(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "xdyna_tools.examples", *map(str, args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_without_the_example_assets_the_builder_stops_and_says_where_they_come_from(tmp_path):
    (tmp_path / "reference_1.png").write_bytes(b"only this one")
    out = tmp_path / "out"
    result = run_builder("--assets", tmp_path, "--out", out)
    assert result.returncode == 2, result.stderr
    message = result.stderr
    assert message.startswith("xdyna examples: the example assets driving_1.mp4, pose_1.mp4 are not in ")
    assert str(tmp_path) in message and "bytedance/X-Dyna assets/" in message and "XDYNA_SHARED_DATA" in message
    assert "Traceback" not in message and not out.exists(), "nothing is written with stand-ins"
    assert set(ASSET_FILES) == {"reference_1.png", "driving_1.mp4", "pose_1.mp4"}


@pytest.mark.parametrize("module", ["xdyna_tools.examples.build", "xdyna_tools.examples.graphs"])
def test_the_builder_does_not_import_the_tests(module):
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m == 'tests' or m.startswith('tests.')))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
