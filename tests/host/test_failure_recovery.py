"""A failed run never poisons the next one, through a real ComfyUI server over HTTP.

A dedicated server runs with a thread that forces garbage collections at random moments (so a dead patched
copy's finalizer can run anywhere: during the next run's patching, sampling, or module-tree walks). Each
failure class fails mid-sampling, after ComfyUI has loaded and patched the model, and is followed at once by a
good prompt. After every failure the cached MODEL (X-Dyna Load Model's output, reused by the next prompt)
holds no X-Dyna module, and every good run is bit-identical to the fresh server's first run.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
import uuid

import pytest

from tests.fixtures.official_layout import TINY_UNET, TINY_UNET_ALL_KEYS
from tests.fixtures.weights import (
    controlnet_state_dict,
    ip_adapter_plus_state_dict,
    save_bin,
    save_safetensors,
    xdyna_unet_state_dict,
)
from tests.host.comfy_server import ComfyServer
from tests.host.conftest import COMFYUI_PATH
from tests.host.prompts import tiny_xdyna_prompt
from tests.host.support_nodes import GC_STRESS_ENV
from tests.host.test_model_graph import TINY_IP_RESAMPLER

WIDTH, HEIGHT, FRAMES = 48, 64, 5
REPEATS = 20


@pytest.fixture(scope="module")
def server(tmp_path_factory, shared_data, monkeypatch_module):
    base = tmp_path_factory.mktemp("comfyui-gc-stress")
    models = base / "models"
    for folder in ("xdyna", "ipadapter", "controlnet"):
        (models / folder).mkdir(parents=True)
    save_safetensors(xdyna_unet_state_dict(TINY_UNET, seed=5), models / "xdyna" / "tiny-xdyna.safetensors")
    save_bin(
        ip_adapter_plus_state_dict(TINY_UNET, TINY_IP_RESAMPLER, seed=6), models / "ipadapter" / "tiny-ip-plus.bin"
    )
    save_safetensors(controlnet_state_dict(TINY_UNET, 3, seed=8), models / "controlnet" / "tiny-pose.safetensors")
    wide = controlnet_state_dict(TINY_UNET_ALL_KEYS, 3, seed=9)
    save_safetensors(wide, models / "controlnet" / "wide-pose.safetensors")
    (base / "input").mkdir()
    shutil.copy(shared_data / "reference_1.png", base / "input" / "reference_1.png")
    monkeypatch_module.setenv(GC_STRESS_ENV, "1234")
    running = ComfyServer(COMFYUI_PATH, base).start()
    monkeypatch_module.delenv(GC_STRESS_ENV)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def run_prompt(server: ComfyServer, prompt: dict, timeout: float = 300.0) -> dict:
    """Queue `prompt` over HTTP and wait for its history entry (status and the outputs' UI values)."""
    prompt_id = str(uuid.uuid4())
    body = json.dumps({"prompt": prompt, "prompt_id": prompt_id, "client_id": "xdyna-tests"}).encode()
    request = urllib.request.Request(server.url + "/prompt", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise AssertionError(f"prompt refused: {error.read().decode()}") from None
    assert not answer.get("node_errors"), answer
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = server.get_json(f"/history/{prompt_id}").get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None and entry["status"]["status_str"]:
            return entry
        time.sleep(0.05)
    raise AssertionError(f"prompt {prompt_id} did not finish within {timeout:.0f} s:\n{server.log()}")


def succeeded(entry: dict) -> bool:
    return entry["status"]["status_str"] == "success"


def error_message(entry: dict) -> str:
    for event, data in entry["status"].get("messages", []):
        if event == "execution_error":
            return f"{data['exception_type']}: {data['exception_message']}"
    return ""


def ui(entry: dict, node: str, key: str):
    return entry["outputs"][node][key][0]


def graph(
    reference_size=(WIDTH, HEIGHT),
    control="tiny-pose.safetensors",
    frames=FRAMES,
    pose_frames=FRAMES,
    fail_at=None,
    seed=7,
    second_copy=False,
) -> dict:
    """X-Dyna on tiny weights: Load Model → (inspect) → Apply Dynamics-Adapter → ControlNets → Temporal Sampler."""
    model_out = ["inspect", 0]
    prompt = tiny_xdyna_prompt(
        ckpt="tiny-xdyna.safetensors",
        ip_adapter="tiny-ip-plus.bin",
        pose_controlnet=control,
        reference_image=("image", 0),
        pose_images=("pose", 0),
        size=reference_size,
        frames=frames,
        seed=seed,
        model=("inspect", 0),
    )
    prompt["inspect"] = {"class_type": "XDynaTest_InspectModel", "inputs": {"model": ["model", 0]}}
    prompt["image"] = {"class_type": "LoadImage", "inputs": {"image": "reference_1.png"}}
    prompt["fitted"] = {
        "class_type": "XDyna_CropResize",
        "inputs": {"image": ["image", 0], "width": WIDTH, "height": HEIGHT, "crop": "center", "resize": "bilinear"},
    }
    prompt["pose"] = {"class_type": "RepeatImageBatch", "inputs": {"image": ["fitted", 0], "amount": pose_frames}}
    prompt["digest"] = {"class_type": "XDynaTest_LatentDigest", "inputs": {"samples": ["sampler", 0]}}
    if fail_at:
        prompt["failing"] = {
            "class_type": "XDynaTest_FailDuringSampling",
            "inputs": {"model": ["patched", 0], "call": fail_at},
        }
        prompt["sampler"]["inputs"]["model"] = ["failing", 0]
    if second_copy:
        # A second patched copy of the same cached MODEL, with a reference of another size, sampled after the
        # first copy's digest is recorded (its latent input comes through the digest node): it fails.
        prompt["reference_b"] = {
            "class_type": "XDyna_LoadReference",
            "inputs": {**prompt["reference"]["inputs"], "width": WIDTH + 16},
        }
        prompt["patched_b"] = {
            "class_type": "XDyna_ApplyDynamicsAdapter",
            "inputs": {"model": model_out, "xdyna": ["model", 1], "reference": ["reference_b", 0], "strength": 1.0},
        }
        prompt["sampler_b"] = {
            "class_type": "KSampler",
            "inputs": {
                "model": ["patched_b", 0],
                "seed": seed,
                "steps": 2,
                "cfg": 7.5,
                "sampler_name": "ddim",
                "scheduler": "ddim_uniform",
                "positive": ["text", 0],
                "negative": ["text", 0],
                "latent_image": ["digest", 0],
                "denoise": 1.0,
            },
        }
        prompt["digest_b"] = {"class_type": "XDynaTest_LatentDigest", "inputs": {"samples": ["sampler_b", 0]}}
    return prompt


FAILURES = {
    "controlnet of another width": (dict(control="wide-pose.safetensors"), "ControlNet"),
    "frame-count mismatch": (dict(pose_frames=FRAMES - 1), "frames"),
    "reference of another size": (dict(reference_size=(WIDTH + 16, HEIGHT)), "pixels"),
    "out of memory at the first UNet call": (dict(fail_at=1), "out of memory"),
    "out of memory mid-run": (dict(fail_at=2), "out of memory"),
}


@pytest.fixture(scope="module")
def fresh(server):
    """The good prompt's result on the freshly started server, before anything failed."""
    entry = run_prompt(server, graph())
    assert succeeded(entry), error_message(entry) + server.log()
    assert ui(entry, "inspect", "xdyna_modules") == 0
    return ui(entry, "digest", "sha256")


@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_failure_followed_by_a_good_run(server, fresh, failure):
    inputs, words = FAILURES[failure]
    for attempt in range(REPEATS):
        bad = run_prompt(server, graph(**inputs))
        assert not succeeded(bad), f"{failure}: the failing prompt succeeded (attempt {attempt})"
        assert words.lower() in error_message(bad).lower(), error_message(bad)
        good = run_prompt(server, graph())
        assert succeeded(good), f"{failure}, attempt {attempt}: {error_message(good)}\n{server.log()}"
        # the inspect node ran before this prompt patched anything: what the failure left behind
        assert ui(good, "inspect", "xdyna_modules") == 0, f"{failure}, attempt {attempt}: X-Dyna modules left"
        assert ui(good, "digest", "sha256") == fresh, f"{failure}, attempt {attempt}: the good run changed"


def test_two_patched_copies_in_one_graph_one_failing(server, fresh):
    entry = run_prompt(server, graph(second_copy=True))
    assert not succeeded(entry) and "reference latent" in error_message(entry).lower(), error_message(entry)
    assert ui(entry, "digest", "sha256") == fresh  # the first copy's run, unchanged by the second copy
    good = run_prompt(server, graph())
    assert succeeded(good) and ui(good, "inspect", "xdyna_modules") == 0
    assert ui(good, "digest", "sha256") == fresh
