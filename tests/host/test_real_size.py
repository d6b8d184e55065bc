"""The shipped example workflows, end to end through a real server, on weights of the real sizes and layouts.

Every file of the README's weights table is written once per test run with seeded random weights
(`tests/fixtures/real_size.py`, fp16 on disk): the X-Dyna UNet `.ckpt`, both ControlNets,
`ip-adapter-plus_sd15.bin`, a CLIP ViT-H/14 and an SD1.5 checkpoint that core's loaders detect, and DWPose
files with the released inputs and outputs that always find the same person. Each API workflow from
`example_workflows/api/` runs unchanged but for its size (64x112), 20 frames and 2 steps, and must end in a
saved video of those frames. The half-precision run makes the server's device answer as a GPU computing in
fp16 would (the support package's `XDYNA_TEST_COMPUTE`), so the `auto` precisions pick fp16 as on a GPU.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import pytest

from tests.host.comfy_server import ComfyServer
from tests.host.conftest import COMFYUI_PATH
from tests.host.support_nodes import COMPUTE_ENV
from tests.host.test_failure_recovery import error_message, run_prompt, succeeded

WORKFLOWS = Path(__file__).resolve().parents[2] / "example_workflows" / "api"
WIDTH, HEIGHT, FRAMES, STEPS = 64, 112, 20, 2
CACHE_ENV = "XDYNA_REAL_SIZE_CACHE"  # a folder to keep the generated weights in between runs (default: per run)


@pytest.fixture(scope="session")
def real_size_models(tmp_path_factory) -> Path:
    cache = os.environ.get(CACHE_ENV)
    models = Path(cache) if cache else tmp_path_factory.mktemp("real-size") / "models"
    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-m", "tests.fixtures.real_size", str(models), str(COMFYUI_PATH)]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, f"writing the real-size weights failed:\n{done.stderr[-4000:]}"
    return models


def start_server(base: Path, models: Path, shared_data: Path, compute: str | None) -> ComfyServer:
    base.mkdir(parents=True, exist_ok=True)
    if not (base / "models").exists():
        (base / "models").symlink_to(models, target_is_directory=True)
    (base / "input").mkdir(exist_ok=True)
    for name in ("reference_1.png", "driving_1.mp4"):
        shutil.copy(shared_data / name, base / "input" / name)
    saved = os.environ.get(COMPUTE_ENV)
    if compute:
        os.environ[COMPUTE_ENV] = compute
    try:
        return ComfyServer(COMFYUI_PATH, base).start(timeout=300)
    finally:
        os.environ.pop(COMPUTE_ENV, None)
        if saved is not None:
            os.environ[COMPUTE_ENV] = saved


def release_in_process_models() -> None:
    """Free what the in-process host of the earlier tests still holds: a real-size server needs ~12 GB."""
    management = sys.modules.get("comfy.model_management")
    if management is not None:
        management.unload_all_models()
        management.soft_empty_cache()
    gc.collect()


@pytest.fixture(scope="module", params=["server-default", "fp16-like-a-gpu"])
def server(request, tmp_path_factory, real_size_models, shared_data):
    release_in_process_models()
    compute = "fp16" if request.param == "fp16-like-a-gpu" else None
    running = start_server(tmp_path_factory.mktemp(request.param), real_size_models, shared_data, compute)
    yield request.param, running
    running.stop()


def small(workflow: dict, prefix: str) -> dict:
    """The shipped workflow at 64x112, 20 frames, 2 steps; everything else as shipped."""
    for node in workflow.values():
        inputs, kind = node["inputs"], node["class_type"]
        if "width" in inputs and "height" in inputs:
            inputs["width"], inputs["height"] = WIDTH, HEIGHT
        if kind == "VideoTemporalCrop":
            inputs["length"] = FRAMES
        if kind == "VideoFrameSample":
            inputs["num_frames"] = FRAMES
        if kind == "XDyna_TemporalSampler":
            inputs["steps"] = STEPS
        if kind == "SaveVideo":
            inputs["filename_prefix"] = prefix
    return workflow


def ancestors(workflow: dict, nodes: set[str]) -> set[str]:
    """The nodes and every node they take an input from."""
    seen, todo = set(), list(nodes)
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo += [v[0] for v in workflow[node]["inputs"].values() if isinstance(v, list) and len(v) == 2]
    return seen


def saved_video(server: ComfyServer, entry: dict) -> Path:
    for output in entry["outputs"].values():
        for item in output.get("images", []) + output.get("videos", []) + output.get("animated", []):
            if isinstance(item, dict) and item.get("filename", "").endswith(".mp4"):
                return server.output_dir / item.get("subfolder", "") / item["filename"]
    raise AssertionError(f"no video among the outputs: {entry['outputs']}")


@pytest.mark.parametrize("name", sorted(p.stem for p in WORKFLOWS.glob("*.json")))
def test_shipped_workflow_runs_at_real_size(server, name):
    tier, running = server
    workflow = small(json.loads((WORKFLOWS / f"{name}.json").read_text()), f"real_size/{tier}/{name}")
    entry = run_prompt(running, workflow, timeout=3000)
    assert succeeded(entry), f"{name} ({tier}): {error_message(entry)}\n{running.log()}"
    # success means ComfyUI ran every output node and everything they depend on: that is every node here
    outputs = {n for n, node in workflow.items() if node["class_type"] in ("PreviewImage", "SaveVideo")}
    assert outputs <= set(entry["outputs"]) and ancestors(workflow, outputs) == set(workflow)
    video = saved_video(running, entry)
    with av.open(str(video)) as container:
        frames = [frame for frame in container.decode(video=0)]
    assert len(frames) == FRAMES and (frames[0].width, frames[0].height) == (WIDTH, HEIGHT)
