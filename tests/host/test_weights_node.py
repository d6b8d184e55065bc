"""X-Dyna Check Weights in a real ComfyUI graph, and the weights command against a real ComfyUI checkout.

Model folders are added the way extra_model_paths.yaml adds them (as defaults, so downloads land in this test's
temporary folders, never in the checkout). No network here: huggingface_hub's download is replaced, and the
endpoint the pack asks before each download is a loopback server (tests/fixtures/hub.py): one that answers,
or one that never does.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.hub import answering_endpoint, silent_endpoint
from tests.host.comfy_host import PACK_ROOT, PromptError
from tests.host.conftest import COMFYUI_PATH
from xdyna_core.downloads import PROBE_TIMEOUT_S
from xdyna_core.weights_manifest import WEIGHTS

hub = pytest.importorskip("huggingface_hub")
constants = pytest.importorskip("huggingface_hub.constants")

FOLDERS = ("xdyna", "xdyna_dwpose", "controlnet", "clip_vision", "ipadapter", "checkpoints")


def sparse(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)
    return path


@pytest.fixture
def models(comfy_host, tmp_path):
    """A fresh default folder of every kind, registered with ComfyUI's folder_paths (first in each list)."""
    root = tmp_path / "models"
    for name in FOLDERS:
        comfy_host.folder_paths.add_model_folder_path(name, str(root / name), is_default=True)
    yield root
    for name in FOLDERS:  # leave the session's ComfyUI as it was for the tests that follow
        paths = comfy_host.folder_paths.folder_names_and_paths[name][0]
        if str(root / name) in paths:
            paths.remove(str(root / name))


def check_graph(download: bool) -> dict:
    return {"check": {"class_type": "XDyna_CheckWeights", "inputs": {"download_missing": download}}}


def test_the_node_reports_each_file_where_comfyui_looks_for_it(comfy_host, models):
    assert "XDyna_CheckWeights" in comfy_host.pack_node_ids
    sparse(models / "xdyna" / "unet-checkpoint-epoch-5.ckpt", 5_290_000_000)
    sparse(models / "controlnet" / "controlnet-checkpoint-epoch-5.ckpt", 10_000)
    sparse(models / "xdyna_dwpose" / "yolox_l.onnx", 216_746_733)
    run = comfy_host.run(check_graph(False))
    report = run.outputs("check")[0]
    assert run.ui["check"]["text"] == [report] or run.ui["check"]["text"] == (report,)
    assert f"ok           unet-checkpoint-epoch-5.ckpt (5.29 GB, MIT): {models / 'xdyna'}" in report
    assert f"ok           yolox_l.onnx (217 MB, Apache-2.0): {models / 'xdyna_dwpose' / 'yolox_l.onnx'}" in report
    assert "PARTIAL      controlnet-checkpoint-epoch-5.ckpt" in report
    assert f"into {models / 'ipadapter'}" in report  # a missing file is told where it goes


def test_the_node_downloads_missing_files_into_comfyuis_model_folders(comfy_host, models, monkeypatch):
    fetched = []

    def hf_hub_download(repo_id, filename, local_dir, **kwargs):
        fetched.append((repo_id, filename))
        size = next(w.size for w in WEIGHTS if (w.repo_id, w.repo_path) == (repo_id, filename))
        return str(sparse(Path(local_dir) / filename, size))

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hub, "hf_hub_download", hf_hub_download)
    with answering_endpoint() as (url, asked):
        monkeypatch.setattr(constants, "ENDPOINT", url)
        report = comfy_host.run(check_graph(True)).outputs("check")[0]
    assert "/h94/IP-Adapter/resolve/main/models/ip-adapter-plus_sd15.bin" in asked and len(asked) == 8
    assert ("h94/IP-Adapter", "models/ip-adapter-plus_sd15.bin") in fetched and len(fetched) == 8
    assert (models / "ipadapter" / "ip-adapter-plus_sd15.bin").stat().st_size == 158_033_179
    assert f"ok           ip-adapter-plus_sd15.bin (158 MB, Apache-2.0): {models / 'ipadapter'}" in report
    assert not any("custom_nodes" in str(p) for p in models.rglob("*"))


def test_offline_the_node_fails_naming_every_file_and_folder(comfy_host, models, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True, raising=False)
    with pytest.raises(PromptError) as err:
        comfy_host.run(check_graph(True))
    message = str(err.value)
    assert "8 model file(s) missing and not downloaded" in message and "HF_HUB_OFFLINE" in message
    assert "controlnet-face-checkpoint-epoch-2.ckpt from Hugging Face Boese0601/X-Dyna" in message
    assert f"into {models / 'controlnet'}" in message


def test_without_network_the_download_fails_within_the_stated_time(comfy_host, models, monkeypatch):
    """#14: with download_missing on and a network that swallows requests, the node used to run for minutes
    (huggingface_hub retries every file). It must fail within PROBE_TIMEOUT_S, naming file, address, folder."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with silent_endpoint() as url:
        monkeypatch.setattr(constants, "ENDPOINT", url)
        started = time.monotonic()
        with pytest.raises(PromptError) as err:
            comfy_host.run(check_graph(True))
        took = time.monotonic() - started
    assert took < PROBE_TIMEOUT_S + 10, f"took {took:.0f} s"
    message = str(err.value)
    assert f"{url} did not answer within {PROBE_TIMEOUT_S:g} s" in message and "no network?" in message
    for w in WEIGHTS:
        assert f"{w.local_name} from Hugging Face {w.repo_id} ({w.remote.url}) into " in message
    assert f"into {models / 'controlnet'}" in message and f"into {models / 'xdyna_dwpose'}" in message
    assert not list(models.rglob("*.ckpt")), "nothing was downloaded"


def weights_command(*args) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "xdyna_tools.weights", *map(str, args)]
    result = subprocess.run(command, cwd=PACK_ROOT, capture_output=True, text=True, timeout=60)
    print(result.stdout, result.stderr)  # shown by pytest when a test fails
    return result


@pytest.mark.parametrize(
    ("content", "found"),
    [
        (None, "no such file"),
        ("nas: [unclosed\n", "is not a usable extra_model_paths.yaml (YAML syntax error at line 2"),
        ("- just\n- a list\n", "is not a usable extra_model_paths.yaml (TypeError"),
        ("nas: base_path\n", "is not a usable extra_model_paths.yaml ("),
    ],
    ids=["missing", "yaml-syntax", "a-list", "a-string"],
)
def test_the_command_names_a_bad_extra_model_paths_file_without_a_traceback(tmp_path, content, found):
    config = tmp_path / "extra_model_paths.yaml"
    if content is not None:
        config.write_text(content)
    result = weights_command("check", "--comfyui", COMFYUI_PATH, "--extra-model-paths", config)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert result.stderr.startswith("xdyna-weights: ") and str(config) in result.stderr and found in result.stderr
    assert "extra_model_paths.yaml.example" in result.stderr  # what the file should look like


def test_the_command_reads_a_comfyui_checkout_with_its_extra_model_paths(tmp_path):
    shared = tmp_path / "nas"
    sparse(shared / "xdyna" / "unet-checkpoint-epoch-5.ckpt", 5_290_000_000)
    sparse(shared / "controlnet" / "controlnet-face-checkpoint-epoch-2.ckpt", 1_450_000_000)
    config = tmp_path / "extra_model_paths.yaml"
    config.write_text(f"nas:\n  base_path: {shared}\n  xdyna: xdyna\n  controlnet: controlnet\n")
    result = weights_command("check", "--comfyui", COMFYUI_PATH, "--extra-model-paths", config)
    assert result.returncode in (0, 1)
    assert f"ok           unet-checkpoint-epoch-5.ckpt (5.29 GB, MIT): {shared / 'xdyna'}" in result.stdout
    assert (
        f"ok           controlnet-face-checkpoint-epoch-2.ckpt (1.45 GB, MIT): {shared / 'controlnet'}" in result.stdout
    )
    assert f"into {COMFYUI_PATH / 'models' / 'clip_vision'}" in result.stdout or "ok           CLIP" in result.stdout
