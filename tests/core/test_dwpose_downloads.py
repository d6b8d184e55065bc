"""DWPose model files: found where they are, downloaded into the model folder, or a clear error offline."""

from __future__ import annotations

import pytest

import xdyna_core.downloads as downloads
from xdyna_core.downloads import ModelFilesMissingError, RemoteFile, ensure_model_files
from xdyna_core.pose.dwpose import DWPOSE_FILES, locate_model_files


@pytest.fixture
def offline(monkeypatch):
    """huggingface_hub offline, as with HF_HUB_OFFLINE=1 (it reads the variable once, at import)."""
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True, raising=False)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(file, target_dir):
        raise AssertionError(f"tried to download {file.filename}")

    monkeypatch.setattr(downloads, "_download", refuse)


def test_offline_error_names_each_file_its_source_and_the_folder(tmp_path, offline):
    target = tmp_path / "models" / "xdyna" / "dwpose"
    with pytest.raises(ModelFilesMissingError) as err:
        ensure_model_files(DWPOSE_FILES, target)
    message = str(err.value)
    for name in ("yolox_l.onnx", "dw-ll_ucoco_384.onnx"):
        assert name in message
    assert "yzd-v/DWPose" in message and "https://huggingface.co/yzd-v/DWPose/resolve/main/yolox_l.onnx" in message
    assert f"put them in {target}" in message and "HF_HUB_OFFLINE" in message
    assert err.value.missing == DWPOSE_FILES and isinstance(err.value, FileNotFoundError)
    assert not target.exists()  # nothing is created when nothing can be fetched


def test_files_already_present_are_used_without_the_network(tmp_path, offline, no_network):
    extra, target = tmp_path / "extra", tmp_path / "target"
    extra.mkdir(), target.mkdir()
    (extra / "yolox_l.onnx").write_bytes(b"det")
    (target / "dw-ll_ucoco_384.onnx").write_bytes(b"pose")
    paths = ensure_model_files(DWPOSE_FILES, target, [extra])
    assert paths == [extra / "yolox_l.onnx", target / "dw-ll_ucoco_384.onnx"]


def test_only_the_missing_file_is_reported(tmp_path, offline):
    (tmp_path / "yolox_l.onnx").write_bytes(b"det")
    (tmp_path / "dw-ll_ucoco_384.onnx").write_bytes(b"")  # an empty file (an interrupted copy) does not count
    with pytest.raises(ModelFilesMissingError) as err:
        ensure_model_files(DWPOSE_FILES, tmp_path)
    assert [f.filename for f in err.value.missing] == ["dw-ll_ucoco_384.onnx"]
    assert "1 model file(s) missing" in str(err.value) and "yolox_l.onnx" not in str(err.value)


def test_missing_files_are_downloaded_into_the_target_folder(tmp_path, monkeypatch):
    calls = []

    def fake_download(file: RemoteFile, target_dir):
        calls.append((file.repo_id, file.filename, target_dir))
        target_dir.mkdir(parents=True, exist_ok=True)
        (target_dir / file.filename).write_bytes(b"onnx")
        return target_dir / file.filename

    monkeypatch.setattr(downloads, "hub_offline", lambda: False)
    monkeypatch.setattr(downloads, "_download", fake_download)
    target = tmp_path / "models" / "xdyna" / "dwpose"
    paths = ensure_model_files(DWPOSE_FILES, target)
    assert paths == [target / "yolox_l.onnx", target / "dw-ll_ucoco_384.onnx"]
    assert calls == [("yzd-v/DWPose", "yolox_l.onnx", target), ("yzd-v/DWPose", "dw-ll_ucoco_384.onnx", target)]


def test_a_failing_download_becomes_the_same_advice(tmp_path, monkeypatch):
    def broken(file, target_dir):
        raise ConnectionError("Name or service not known\nlong traceback text")

    monkeypatch.setattr(downloads, "hub_offline", lambda: False)
    monkeypatch.setattr(downloads, "_download", broken)
    with pytest.raises(
        ModelFilesMissingError, match=r"download failed; yolox_l\.onnx: ConnectionError: Name or service"
    ):
        ensure_model_files(DWPOSE_FILES[:1], tmp_path / "t")
    with pytest.raises(ModelFilesMissingError, match="downloads are turned off"):
        ensure_model_files(DWPOSE_FILES[:1], tmp_path / "t", download=False)


def test_other_model_names_must_be_in_a_folder(tmp_path, offline, no_network):
    (tmp_path / "yolox_l.onnx").write_bytes(b"det")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "rtmw-x.onnx").write_bytes(b"pose")
    assert locate_model_files("yolox_l.onnx", "sub/rtmw-x.onnx", [tmp_path]) == (
        tmp_path / "yolox_l.onnx",
        tmp_path / "sub" / "rtmw-x.onnx",
    )
    with pytest.raises(FileNotFoundError, match="nothere.onnx is in none of the DWPose model folders"):
        locate_model_files("yolox_l.onnx", "nothere.onnx", [tmp_path])
