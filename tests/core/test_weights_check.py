"""The weights list and `check`: files found in ComfyUI's folders (extra ones included), missing, or incomplete."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from tests.fixtures.weights import OFFICIAL_FILE_NAMES
from xdyna_core.weights_check import (
    ALTERNATIVE,
    MISSING,
    OK,
    PARTIAL,
    SIZE_DIFFERS,
    ComfyFolders,
    PlainFolders,
    check,
    format_report,
)
from xdyna_core.weights_manifest import FOLDER_DEFAULTS, WEIGHTS, WeightsError, human_size, select
from xdyna_tools import weights

BY_KEY = {w.key: w for w in WEIGHTS}


def sparse(path, size: int):
    """A file of `size` bytes that takes no disk space (the real weights are gigabytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def test_every_file_the_pack_needs_is_listed_with_source_size_licence_and_folder():
    assert set(BY_KEY) == {
        "unet", "pose_controlnet", "face_controlnet", "ip_adapter", "clip_vision",
        "dwpose_detector", "dwpose_estimator", "sd15",
    }  # fmt: skip
    for w in WEIGHTS:
        assert w.repo_id.count("/") == 1 and w.repo_path and w.local_name and w.licence and w.used_by
        assert w.folder in FOLDER_DEFAULTS and w.size > 10**8
    # the same names as the release (the test fixtures) and as the DWPose loader downloads
    assert BY_KEY["unet"].local_name == OFFICIAL_FILE_NAMES["unet"]
    assert BY_KEY["pose_controlnet"].local_name == OFFICIAL_FILE_NAMES["controlnet"]
    assert BY_KEY["face_controlnet"].local_name == OFFICIAL_FILE_NAMES["controlnet_face"]
    assert BY_KEY["ip_adapter"].local_name == OFFICIAL_FILE_NAMES["ip_adapter"]
    dwpose = pytest.importorskip("xdyna_core.pose.dwpose")
    assert {(f.repo_id, f.filename) for f in dwpose.DWPOSE_FILES} == {
        (w.repo_id, w.repo_path) for w in WEIGHTS if w.folder == "xdyna_dwpose"
    }


def test_download_links_are_the_files_themselves():
    """`resolve/main/` serves the file; `blob/main/` would be its HTML page. huggingface_hub's own URL agrees."""
    hub = pytest.importorskip("huggingface_hub")
    for w in WEIGHTS:
        assert w.remote.url == f"https://huggingface.co/{w.repo_id}/resolve/main/{w.repo_path}"
        assert w.remote.url == hub.hf_hub_url(w.repo_id, w.repo_path, endpoint="https://huggingface.co")


@pytest.mark.parametrize(
    ("size", "shown"),
    [(5_290_000_000, "5.29 GB"), (158_033_179, "158 MB"), (1_000_000, "1 MB"), (10_000, "10 kB"), (7, "7 bytes")],
)
def test_sizes_are_shown_in_units_that_fit(size, shown):
    assert human_size(size) == shown


def test_a_small_partial_file_shows_its_size_not_zero_megabytes(tmp_path):
    sparse(tmp_path / "controlnet" / "controlnet-checkpoint-epoch-5.ckpt", 10_000)
    report = format_report(check(PlainFolders(tmp_path), select(["pose_controlnet"])))
    assert "has only 10 kB (an interrupted download?)" in report and "0 MB" not in report


def test_present_missing_partial_and_differently_sized_files(tmp_path):
    models = tmp_path / "models"
    sparse(models / "xdyna" / "unet-checkpoint-epoch-5.ckpt", 5_290_123_456)  # within the stated 5.29 GB
    sparse(models / "controlnet" / "controlnet-checkpoint-epoch-5.ckpt", 400_000_000)  # cut short
    sparse(models / "ipadapter" / "ip-adapter-plus_sd15.bin", 158_033_179)  # exact LFS size
    sparse(models / "clip_vision" / "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors", 1_264_219_396)  # an fp16 copy
    sparse(models / "xdyna" / "dwpose" / "yolox_l.onnx", 216_746_733)
    sparse(models / "xdyna" / "dwpose" / "dw-ll_ucoco_384.onnx", 134_399_115)  # one byte short
    statuses = {s.weight.key: s for s in check(PlainFolders(models))}
    assert statuses["unet"].state == OK and statuses["unet"].path == models / "xdyna" / "unet-checkpoint-epoch-5.ckpt"
    assert statuses["pose_controlnet"].state == PARTIAL
    assert statuses["face_controlnet"].state == MISSING and statuses["face_controlnet"].path is None
    assert statuses["face_controlnet"].target == models / "controlnet"
    assert statuses["ip_adapter"].state == OK and statuses["dwpose_detector"].state == OK
    assert statuses["clip_vision"].state == PARTIAL  # smaller than the release's: flagged, fetch again
    assert statuses["dwpose_estimator"].state == PARTIAL
    assert statuses["sd15"].state == MISSING

    report = format_report(list(statuses.values()))
    assert report.splitlines()[0] == "X-Dyna weights: 3 of 8 present, 5 to fetch"
    assert "PARTIAL      controlnet-checkpoint-epoch-5.ckpt (1.45 GB, MIT)" in report
    assert "has only 400 MB (an interrupted download?)" in report
    assert f"from Boese0601/X-Dyna controlnet-face-checkpoint-epoch-2.ckpt into {models / 'controlnet'}" in report
    assert "(any SD1.5 checkpoint serves; the example workflows name this one)" in report
    assert "python -m xdyna_tools.weights download" in report


def test_alternative_names_subfolders_and_bigger_files_count_as_present(tmp_path):
    models = tmp_path / "models"
    sparse(models / "xdyna" / "unet-checkpoint-epoch-5.safetensors", 2_600_000_000)  # the fp16 conversion
    sparse(models / "checkpoints" / "SD1.5" / "v1-5-pruned-emaonly-fp16.safetensors", 2_132_625_000)
    sparse(models / "controlnet" / "x-dyna" / "controlnet-checkpoint-epoch-5.ckpt", 1_450_000_000)
    sparse(models / "ipadapter" / "ip-adapter-plus_sd15.bin", 158_033_180)
    statuses = {
        s.weight.key: s for s in check(PlainFolders(models), select(["unet", "sd15", "pose_controlnet", "ip_adapter"]))
    }
    assert statuses["unet"].state == ALTERNATIVE and statuses["sd15"].state == ALTERNATIVE
    assert statuses["pose_controlnet"].state == OK
    assert statuses["ip_adapter"].state == SIZE_DIFFERS and statuses["ip_adapter"].present
    assert "kept as is" in format_report(list(statuses.values()))


def test_extra_folders_are_searched_and_the_first_folder_receives_downloads(tmp_path):
    shared = tmp_path / "shared" / "controlnet"
    sparse(shared / "controlnet-face-checkpoint-epoch-2.ckpt", 1_450_000_000)
    folders = PlainFolders(tmp_path / "models", {"controlnet": [shared]})
    (pose, face) = check(folders, select(["face_controlnet", "pose_controlnet"]))
    assert face.state == OK and face.path.parent == shared
    assert pose.state == MISSING and pose.target == shared


def fake_folder_paths(models_dir, configured: dict[str, list[str]]):
    """The parts of ComfyUI's folder_paths module the checker uses, over a fake tree."""
    table = {name: (list(paths), {".ckpt"}) for name, paths in configured.items()}

    def add_model_folder_path(name, path, is_default=False):
        paths = table.setdefault(name, ([], set()))[0]
        if path not in paths:
            paths.insert(0, path) if is_default else paths.append(path)

    return SimpleNamespace(
        models_dir=str(models_dir),
        folder_names_and_paths=table,
        add_model_folder_path=add_model_folder_path,
        get_folder_paths=lambda name: table[name][0],
    )


def test_comfyui_folder_paths_are_honoured_and_the_pack_folders_added(tmp_path):
    models, extra = tmp_path / "models", tmp_path / "nas" / "xdyna"
    fp = fake_folder_paths(models, {"xdyna": [str(extra)], "controlnet": [str(models / "controlnet")]})
    folders = ComfyFolders(fp)
    assert folders.paths("xdyna") == [extra, models / "xdyna"]  # extra_model_paths first, as the pack registers
    assert folders.paths("xdyna_dwpose") == [models / "xdyna" / "dwpose"]
    assert "xdyna_dwpose" in fp.folder_names_and_paths
    sparse(extra / "unet-checkpoint-epoch-5.ckpt", 5_290_000_000)
    (unet,) = check(folders, select(["unet"]))
    assert unet.state == OK and unet.path.parent == extra


def test_selection_by_key():
    assert [w.key for w in select(["sd15", "unet"])] == ["unet", "sd15"]
    assert "sd15" not in [w.key for w in select(skip=["sd15"])]
    with pytest.raises(WeightsError, match="unknown weight key\\(s\\) nope"):
        select(["nope"])


def test_the_command_reports_and_exits_non_zero_when_files_are_missing(tmp_path, capsys):
    sparse(tmp_path / "models" / "xdyna" / "dwpose" / "yolox_l.onnx", 216_746_733)
    code = weights.main(["check", "--models-dir", str(tmp_path / "models"), "--only", "dwpose_detector"])
    assert code == 0 and "1 of 1 present" in capsys.readouterr().out
    code = weights.main(["check", "--models-dir", str(tmp_path / "models")])
    assert code == 1 and "7 to fetch" in capsys.readouterr().out
    assert weights.main(["list"]) == 0
    listing = capsys.readouterr().out
    assert "h94/IP-Adapter/models/image_encoder/model.safetensors" in listing and "CreativeML OpenRAIL-M" in listing


def test_without_a_comfyui_the_command_says_what_to_pass(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    monkeypatch.setattr(weights, "default_comfyui", lambda: None)
    assert weights.main(["check"]) == 2
    assert "pass --comfyui PATH" in capsys.readouterr().err
    assert weights.main(["check", "--comfyui", str(tmp_path)]) == 2
    assert "is not a ComfyUI folder" in capsys.readouterr().err
    assert os.environ.get("COMFYUI_PATH") is None
