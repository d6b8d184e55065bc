"""`download`: files fetched with huggingface_hub into their ComfyUI folder under their ComfyUI name; offline errors.

No network here: huggingface_hub's `hf_hub_download` is replaced by a stand-in that writes what it would.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.fixtures.hub import answering_endpoint, silent_endpoint
from xdyna_core import downloads
from xdyna_core import weights_manifest as weights
from xdyna_core.downloads import ModelFilesMissingError
from xdyna_core.weights_check import OK, STAGING, PlainFolders, WeightsMissingError, download
from xdyna_core.weights_manifest import WeightsError, select
from xdyna_tools import weights as command

hub = pytest.importorskip("huggingface_hub")
constants = pytest.importorskip("huggingface_hub.constants")


@pytest.fixture
def offline(monkeypatch):
    """huggingface_hub offline, as with HF_HUB_OFFLINE=1 (it reads the variable once, at import)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True, raising=False)


@pytest.fixture
def fake_hub(monkeypatch):
    """`hf_hub_download` writing files of the released size (sparse) where it would: local_dir/repo_path."""
    calls = []

    def hf_hub_download(repo_id, filename, local_dir, **kwargs):
        size = next(w.size for w in weights.WEIGHTS if (w.repo_id, w.repo_path) == (repo_id, filename))
        path = Path(local_dir) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.truncate(size)
        calls.append((repo_id, filename, Path(local_dir)))
        return str(path)

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False, raising=False)
    monkeypatch.setattr(hub, "hf_hub_download", hf_hub_download)
    with answering_endpoint() as (url, _):  # the reachability check before each download asks it
        monkeypatch.setattr(constants, "ENDPOINT", url)
        yield calls


def test_offline_the_error_names_every_file_its_source_and_its_folder(tmp_path, offline):
    models = tmp_path / "models"
    with pytest.raises(WeightsMissingError) as err:
        download(PlainFolders(models))
    message = str(err.value)
    assert message.startswith(
        "8 model file(s) missing and not downloaded (Hugging Face downloads are off: HF_HUB_OFFLINE"
    )
    for w in weights.WEIGHTS:
        assert (
            f"{w.local_name} from Hugging Face {w.repo_id} ({w.remote.url}) into {models / weights.FOLDER_DEFAULTS[w.folder]}"
            in message
        )
    assert isinstance(err.value, ModelFilesMissingError) and isinstance(err.value, FileNotFoundError)
    assert not models.exists(), "nothing is created when nothing can be fetched"


def test_offline_command_exits_non_zero_with_the_error(tmp_path, offline, capsys):
    code = command.main(["download", "--models-dir", str(tmp_path), "--only", "ip_adapter"])
    assert code == 1
    err = capsys.readouterr().err
    assert "ip-adapter-plus_sd15.bin from Hugging Face h94/IP-Adapter" in err and str(tmp_path / "ipadapter") in err


def test_missing_and_partial_files_are_downloaded_under_their_comfyui_names(tmp_path, fake_hub):
    models = tmp_path / "models"
    (models / "xdyna" / "dwpose").mkdir(parents=True)
    (models / "xdyna" / "dwpose" / "yolox_l.onnx").write_bytes(b"partial")  # an interrupted copy
    done = []
    statuses = download(
        PlainFolders(models),
        select(["clip_vision", "ip_adapter", "dwpose_detector"]),
        on_file=lambda i, n: done.append((i, n)),
    )
    assert [s.state for s in statuses] == [OK, OK, OK]
    assert (models / "clip_vision" / "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors").stat().st_size == 2_528_373_448
    assert (models / "ipadapter" / "ip-adapter-plus_sd15.bin").stat().st_size == 158_033_179
    assert (models / "xdyna" / "dwpose" / "yolox_l.onnx").stat().st_size == 216_746_733
    assert [(r, f) for r, f, _ in fake_hub] == [
        ("h94/IP-Adapter", "models/ip-adapter-plus_sd15.bin"),
        ("h94/IP-Adapter", "models/image_encoder/model.safetensors"),
        ("yzd-v/DWPose", "yolox_l.onnx"),
    ]
    assert all(
        local == models / weights.FOLDER_DEFAULTS[w] / STAGING
        for (_, _, local), w in zip(fake_hub, ["ipadapter", "clip_vision", "xdyna_dwpose"])
    )
    assert not list(models.rglob(STAGING)) and not (models / "ipadapter" / "models").exists()
    assert done == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert download(PlainFolders(models), select(["ip_adapter"])) and len(fake_hub) == 3  # present: not fetched again


def test_a_failed_download_is_reported_after_trying_the_others(tmp_path, fake_hub, monkeypatch):
    real = hub.hf_hub_download

    def flaky(repo_id, filename, local_dir, **kwargs):
        if filename == "yolox_l.onnx":
            raise ConnectionError("Name or service not known\ntraceback text")
        return real(repo_id=repo_id, filename=filename, local_dir=local_dir)

    monkeypatch.setattr(hub, "hf_hub_download", flaky)
    with pytest.raises(WeightsMissingError) as err:
        download(PlainFolders(tmp_path), select(["dwpose_detector", "dwpose_estimator"]))
    assert "download failed; yolox_l.onnx: ConnectionError: Name or service not known" in str(err.value)
    assert "traceback text" not in str(err.value)
    assert (tmp_path / "xdyna" / "dwpose" / "dw-ll_ucoco_384.onnx").is_file()  # the other one arrived
    assert not (tmp_path / "xdyna" / "dwpose" / "yolox_l.onnx").exists()


def test_a_download_of_the_wrong_size_is_not_kept(tmp_path):
    def short(weight, staging):
        staging.mkdir(parents=True)
        (staging / "x").write_bytes(b"truncated")
        return staging / "x"

    with pytest.raises(WeightsMissingError, match="ip-adapter-plus_sd15.bin: OSError: got 9 bytes, expected 158033179"):
        download(PlainFolders(tmp_path), select(["ip_adapter"]), downloader=short)
    assert not (tmp_path / "ipadapter" / "ip-adapter-plus_sd15.bin").exists()


def test_never_into_custom_nodes(tmp_path):
    folders = PlainFolders(tmp_path / "ComfyUI" / "custom_nodes" / "comfyui-xdyna" / "models")
    with pytest.raises(WeightsError, match="not custom_nodes"):
        download(folders, select(["ip_adapter"]), downloader=lambda w, s: pytest.fail("downloaded"))


def test_without_an_answering_endpoint_the_download_stops_within_the_stated_time(tmp_path, fake_hub, monkeypatch):
    """A network that swallows requests: one check, not huggingface_hub's minutes of retries per file."""
    monkeypatch.setattr(downloads, "PROBE_TIMEOUT_S", 1.0)
    with silent_endpoint() as url:
        monkeypatch.setattr(constants, "ENDPOINT", url)
        started = time.monotonic()
        with pytest.raises(WeightsMissingError) as err:
            download(PlainFolders(tmp_path))
        took = time.monotonic() - started
    assert took < 5, f"took {took:.1f} s"
    assert fake_hub == [], "nothing is downloaded when the endpoint does not answer"
    message = str(err.value)
    assert message.startswith(f"8 model file(s) missing and not downloaded ({url} did not answer within 1 s")
    for w in weights.WEIGHTS:
        folder = tmp_path / weights.FOLDER_DEFAULTS[w.folder]
        assert f"{w.local_name} from Hugging Face {w.repo_id} ({w.remote.url}) into {folder}" in message
