"""The batch tool against real ComfyUI servers on loopback, run as its users run it (`python -m xdyna_tools.batch`).

The graph is a small X-Dyna API-format workflow on tiny official-layout weights: the driving video's frames,
cropped by XDyna_CropResize, serve directly as pose images (no MediaPipe or DWPose needed on a fresh machine)
and the face branch is left out. The server's own history shows how many prompts each run queued.
"""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest
from PIL import Image, ImageOps

from tests.fixtures.official_layout import TINY_UNET
from tests.fixtures.weights import (
    controlnet_state_dict,
    ip_adapter_plus_state_dict,
    save_bin,
    save_safetensors,
    xdyna_unet_state_dict,
)
from tests.host.comfy_host import PACK_ROOT, widget_defaults
from tests.host.comfy_server import ComfyServer
from tests.host.conftest import COMFYUI_PATH
from tests.host.prompts import tiny_workflow_nodes
from tests.host.test_model_graph import TINY_IP_RESAMPLER
from tests.host.test_preprocess_graph import write_clip

pytest.importorskip("aiohttp", reason="the batch tool talks to ComfyUI with aiohttp")

WIDTH, HEIGHT, FRAMES = 48, 64, 3
MANIFEST = "xdyna-batch.json"


def write_tiny_models(models: Path) -> None:
    """Tiny X-Dyna UNet, IP-Adapter-plus and pose ControlNet files in a server's model folders."""
    for folder in ("xdyna", "ipadapter", "controlnet"):
        (models / folder).mkdir(parents=True, exist_ok=True)
    save_safetensors(xdyna_unet_state_dict(TINY_UNET, seed=5), models / "xdyna" / "tiny-xdyna.safetensors")
    save_bin(
        ip_adapter_plus_state_dict(TINY_UNET, TINY_IP_RESAMPLER, seed=6), models / "ipadapter" / "tiny-ip-plus.bin"
    )
    save_safetensors(controlnet_state_dict(TINY_UNET, 3, seed=8), models / "controlnet" / "tiny-pose-cn.safetensors")


def batch_workflow(info: dict) -> dict:
    """An API-format X-Dyna workflow: reference + driving video → pose ControlNet → X-Dyna → video file."""

    def n(class_type: str, title: str | None = None, **inputs) -> dict:
        defaults = widget_defaults(info[class_type]["input"].get("required", {}))
        node = {"class_type": class_type, "inputs": {**defaults, **inputs}}
        if title:
            node["_meta"] = {"title": title}
        return node

    return {
        "ref": n("LoadImage", "Reference image", image="placeholder.png"),
        "drv_file": n("LoadVideo", "Driving video", file="placeholder.mp4"),
        "drv": n("GetVideoComponents", video=["drv_file", 0]),
        "drv_frames": n("ImageFromBatch", image=["drv", 0], batch_index=0, length=16),
        "pose": n("XDyna_CropResize", image=["drv_frames", 0], width=WIDTH, height=HEIGHT, crop="top_biased"),
        **tiny_workflow_nodes(
            n,
            reference_image=("ref", 0),
            pose_images=("pose", 0),
            size=(WIDTH, HEIGHT),
            seed=0,
            steps=1,
            fps=8.0,
            filename_prefix="xdyna/batch",
        ),
    }


def history_ids(server: ComfyServer) -> set[str]:
    return set(server.get_json("/history"))


def batch_command(*args) -> list[str]:
    return [sys.executable, "-m", "xdyna_tools.batch", *map(str, args)]


def run_batch(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run(batch_command(*args), cwd=PACK_ROOT, capture_output=True, text=True, timeout=timeout)
    print(result.stdout, result.stderr)  # shown by pytest when a test fails
    return result


def read_manifest(out: Path) -> dict:
    return json.loads((out / MANIFEST).read_text())


def check_video(path: Path) -> None:
    with av.open(str(path)) as video:
        stream = video.streams.video[0]
        frames = list(video.decode(video=0))
    assert (stream.width, stream.height, len(frames)) == (WIDTH, HEIGHT, FRAMES)


@pytest.fixture(scope="module")
def server(comfy_server):
    write_tiny_models(comfy_server.models)
    return comfy_server


@pytest.fixture(scope="module")
def workflow(server, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("workflow") / "xdyna_batch_api.json"
    path.write_text(json.dumps(batch_workflow(server.get_json("/object_info")), indent=1))
    return path


@pytest.fixture(scope="module")
def pairs(shared_data, tmp_path_factory) -> Path:
    """A folder of two pairs matched by stem: alice.png + alice.mp4, bob.png + bob.mp4."""
    folder = tmp_path_factory.mktemp("pairs")
    shutil.copy(shared_data / "reference_1.png", folder / "alice.png")
    ImageOps.mirror(Image.open(shared_data / "reference_1.png").convert("RGB")).save(folder / "bob.png")
    write_clip(shared_data / "driving_1.mp4", folder / "alice.mp4", frames=FRAMES + 2)
    shutil.copy(folder / "alice.mp4", folder / "bob.mp4")
    (folder / "notes.txt").write_text("not an input")
    return folder


def test_two_jobs_run_end_to_end_and_a_rerun_skips_them(server, workflow, pairs, tmp_path):
    out = tmp_path / "out"
    before = history_ids(server)
    result = run_batch(pairs, "--out", out, "--workflow", workflow, "--server", server.url, "--frames", FRAMES)
    assert result.returncode == 0, server.log()
    assert "2 done, 0 skipped" in result.stdout
    assert "queued on" in result.stderr and "node sampler: 1/1" in result.stderr  # progress over the websocket

    manifest = read_manifest(out)
    for name in ("alice", "bob"):
        record = manifest["jobs"][name]
        assert record["status"] == "done" and record["server"] == server.url
        (output,) = record["outputs"]
        assert output["file"].startswith(f"{name}/") and output["file"].endswith(".mp4")
        check_video(out / output["file"])
    assert manifest["jobs"]["alice"]["seed"] != manifest["jobs"]["bob"]["seed"]  # per-job seeds
    queued = history_ids(server) - before
    assert len(queued) == 2
    prompts = [server.get_json(f"/history/{pid}")[pid]["prompt"][2] for pid in queued]
    for prompt in prompts:  # the tool rewrote loaders, frame counts and prefixes by class type
        assert prompt["ref"]["inputs"]["image"].startswith("xdyna_batch/")
        assert prompt["drv_file"]["inputs"]["file"].endswith(".mp4")
        assert prompt["drv_frames"]["inputs"]["length"] == FRAMES
        assert prompt["save"]["inputs"]["filename_prefix"].startswith("xdyna_batch/")

    again = run_batch(pairs, "--out", out, "--workflow", workflow, "--server", server.url, "--frames", FRAMES)
    assert again.returncode == 0
    assert "0 done, 2 skipped" in again.stdout and "skipping alice" in again.stderr
    assert history_ids(server) - before == queued, "a re-run queued finished jobs again"


def test_an_interrupted_run_resumes_without_redoing_finished_jobs(server, workflow, pairs, tmp_path):
    jobs = tmp_path / "jobs.csv"
    with open(jobs, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "reference", "driving", "seed", "XDyna_TemporalSampler.steps"])
        writer.writerow(["quick", pairs / "alice.png", pairs / "alice.mp4", 21, 1])
        writer.writerow(["slow", pairs / "bob.png", pairs / "bob.mp4", 22, 10])  # long enough to be cut short
    out = tmp_path / "out"
    before = history_ids(server)
    args = [jobs, "--out", out, "--workflow", workflow, "--server", server.url, "--frames", FRAMES]
    process = subprocess.Popen(
        batch_command(*args), cwd=PACK_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if (out / MANIFEST).exists():
                state = read_manifest(out)["jobs"]
                if state.get("quick", {}).get("status") == "done":
                    break
            assert process.poll() is None, process.stdout.read()
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    print(output)
    assert process.returncode == 130 and "interrupted" in output

    state = read_manifest(out)["jobs"]  # valid JSON after the interruption
    assert state["quick"]["status"] == "done" and state["slow"]["status"] != "done"
    assert not list(out.rglob("*.part")) and not (out / "xdyna-batch.lock").exists()

    resumed = run_batch(*args)
    assert resumed.returncode == 0
    assert "skipping quick" in resumed.stderr and "1 done, 1 skipped" in resumed.stdout
    state = read_manifest(out)["jobs"]
    assert state["slow"]["status"] == "done"
    check_video(out / state["slow"]["outputs"][0]["file"])
    # one prompt per job on the server: neither the finished job nor the interrupted one was queued again
    assert len(history_ids(server) - before) == 2


def test_a_failing_job_is_reported_with_the_servers_error(server, workflow, pairs, tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    (folder / "carol.png").write_bytes(b"this is not an image")
    shutil.copy(pairs / "alice.mp4", folder / "carol.mp4")
    shutil.copy(pairs / "alice.png", folder / "dave.png")
    shutil.copy(pairs / "alice.mp4", folder / "dave.mp4")
    out = tmp_path / "out"
    before = history_ids(server)
    args = [folder, "--out", out, "--workflow", workflow, "--server", server.url, "--frames", FRAMES]
    result = run_batch(*args, "--attempts", 2, "--backoff", 0.2, "--seed", 31)
    assert result.returncode == 1
    assert "1 done, 0 skipped (finished before), 1 failed" in result.stdout
    (line,) = [ln for ln in result.stdout.splitlines() if "FAILED" in ln]
    assert "carol after 2 attempt(s)" in line and "node ref (LoadImage) raised" in line
    assert "UnidentifiedImageError" in line and "cannot identify image file" in line
    record = read_manifest(out)["jobs"]["carol"]
    assert record["status"] == "failed" and record["failures"] == 2 and len(record["errors"]) == 2
    assert len(history_ids(server) - before) == 3  # dave once, carol twice (retried)

    # a workflow naming a model file the server does not have is rejected at queue time, named precisely
    rejected = run_batch(*args, "--attempts", 1, "--set", "XDyna_LoadModel.ckpt_name=missing.safetensors")
    assert rejected.returncode == 1
    assert "prompt rejected" in rejected.stdout and "node model (XDyna_LoadModel)" in rejected.stdout
    assert "missing.safetensors" in rejected.stdout


@pytest.fixture(scope="module")
def second_server(tmp_path_factory):
    other = ComfyServer(COMFYUI_PATH, tmp_path_factory.mktemp("comfyui-server-b"))
    write_tiny_models(other.models)
    other.start()
    yield other
    other.stop()


def test_two_servers_share_the_jobs(server, second_server, workflow, pairs, tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    for i in range(4):
        shutil.copy(pairs / ("alice.png" if i % 2 else "bob.png"), folder / f"p{i}.png")
        shutil.copy(pairs / "alice.mp4", folder / f"p{i}.mp4")
    out = tmp_path / "out"
    before = {s.url: history_ids(s) for s in (server, second_server)}
    result = run_batch(
        folder, "--out", out, "--workflow", workflow, "--server", server.url, "--server", second_server.url,
        "--frames", FRAMES, "--seed", 41,
    )  # fmt: skip
    assert result.returncode == 0, second_server.log()
    assert "4 done" in result.stdout
    ran = {s.url: len(history_ids(s) - before[s.url]) for s in (server, second_server)}
    assert sum(ran.values()) == 4 and all(count >= 1 for count in ran.values()), ran
    jobs = read_manifest(out)["jobs"]
    assert {jobs[f"p{i}"]["server"] for i in range(4)} == set(ran)
    for i in range(4):
        check_video(out / jobs[f"p{i}"]["outputs"][0]["file"])


def test_bad_input_stops_before_anything_is_queued(server, workflow, pairs, tmp_path):
    before = history_ids(server)
    result = run_batch(
        pairs, "--out", tmp_path / "out", "--workflow", workflow, "--server", server.url, "--set", "sampler.nosuch=1"
    )
    assert result.returncode == 2 and "has no input 'nosuch'" in result.stderr
    assert history_ids(server) == before
    assert not (tmp_path / "out" / MANIFEST).exists()


def test_a_prompt_the_server_accepts_only_in_part_fails_with_its_validation_errors(server, workflow, pairs, tmp_path):
    """ComfyUI answers 200 with node_errors and runs the outputs that validate (here a preview of the pose
    frames, which needs no model): the job must fail with those errors, not succeed with the preview."""
    with_preview = json.loads(workflow.read_text())
    with_preview["pose_preview"] = {"class_type": "PreviewImage", "inputs": {"images": ["pose", 0]}}
    partial = tmp_path / "with_preview.json"
    partial.write_text(json.dumps(with_preview))
    folder = tmp_path / "inputs"
    folder.mkdir()
    shutil.copy(pairs / "alice.png", folder / "erin.png")
    shutil.copy(pairs / "alice.mp4", folder / "erin.mp4")
    out = tmp_path / "out"
    before = history_ids(server)
    result = run_batch(
        folder, "--out", out, "--workflow", partial, "--server", server.url, "--frames", FRAMES, "--attempts", 1,
        "--include-temp", "--set", "XDyna_LoadModel.ckpt_name=missing.safetensors",
    )  # fmt: skip
    assert result.returncode == 1
    (line,) = [ln for ln in result.stdout.splitlines() if "FAILED" in ln]
    assert "prompt rejected: some outputs failed validation" in line
    assert "node model (XDyna_LoadModel)" in line and "missing.safetensors" in line
    assert read_manifest(out)["jobs"]["erin"]["status"] == "failed"
    assert not (out / "erin").exists(), "the preview of a partly run prompt was taken for the job's result"
    deadline = time.monotonic() + 30  # taken off the queue (or interrupted): it leaves nothing queued behind
    while server.get_json("/queue")["queue_running"] + server.get_json("/queue")["queue_pending"]:
        assert time.monotonic() < deadline, server.get_json("/queue")
        time.sleep(0.2)
    ran = [server.get_json(f"/history/{pid}")[pid] for pid in history_ids(server) - before]
    assert all(not entry.get("outputs") for entry in ran), "the partly valid prompt ran its preview"
