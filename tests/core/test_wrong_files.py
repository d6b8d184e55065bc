"""Files that sit where a model should but are something else are recognised and named, before any loader chokes.

The host tier runs the same files through the loader nodes (tests/host/test_bad_inputs.py); here the readers
themselves are pinned down.
"""

from __future__ import annotations

import struct
from dataclasses import replace

import pytest
import torch

from tests.fixtures.official_layout import TINY_UNET
from tests.fixtures.tiny_onnx import dwpose_folder
from tests.fixtures.weights import save_ckpt, save_safetensors, xdyna_unet_state_dict
from xdyna_core.checkpoints import XDynaCheckpointError, XDynaLayoutError, load_state_dict_file, split_xdyna_unet
from xdyna_core.file_kinds import git_lfs_pointer_size
from xdyna_core.pose.onnx_runtime import CPU_PROVIDER, OnnxFileError, OnnxModel

LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize 5288933977\n".format("0" * 64)


@pytest.mark.parametrize("name", ["unet-checkpoint-epoch-5.ckpt", "model.safetensors", "ip-adapter-plus_sd15.bin"])
def test_git_lfs_pointers_are_named_as_such(tmp_path, name):
    path = tmp_path / name
    path.write_text(LFS_POINTER)
    assert git_lfs_pointer_size(path) == 5288933977
    with pytest.raises(XDynaCheckpointError) as err:
        load_state_dict_file(path)
    message = str(err.value)
    assert str(path) in message and "this is a Git LFS pointer, not the model" in message
    assert "5.29 GB" in message and "git lfs pull" in message


def test_a_random_bin_is_not_unpickled_into_a_memory_error(tmp_path):
    """Pickle opcodes with absurd lengths (as random bytes give) would make the reader allocate exabytes."""
    path = tmp_path / "random.bin"
    path.write_bytes(b"\x80\x04\x8e" + struct.pack("<Q", 2**62) + bytes(range(256)) * 40)
    with pytest.raises(XDynaCheckpointError) as err:
        load_state_dict_file(path)
    assert str(path) in str(err.value) and "not a PyTorch weight file" in str(err.value)
    assert "Download the model file again" in str(err.value)


def test_real_legacy_and_zip_checkpoints_still_load(tmp_path):
    weights = {"w": torch.arange(6.0)}
    for legacy in (False, True):
        path = tmp_path / f"w{legacy}.ckpt"
        torch.save(weights, path, _use_new_zipfile_serialization=not legacy)
        assert torch.equal(load_state_dict_file(path)["w"], weights["w"])


def test_an_inpainting_x_dyna_unet_is_refused_at_load():
    sd = xdyna_unet_state_dict(replace(TINY_UNET, in_channels=9), seed=0)
    with pytest.raises(XDynaLayoutError) as err:
        split_xdyna_unet(sd, "inpaint-unet.ckpt")
    message = str(err.value)
    assert message.startswith("inpaint-unet.ckpt: this is an inpainting UNet")
    assert "unet-checkpoint-epoch-5.ckpt" in message


def test_a_unet_missing_one_tensor_names_the_file_and_the_tensor(tmp_path):
    sd = xdyna_unet_state_dict(TINY_UNET, seed=0)
    del sd["time_embedding.linear_1.weight"]
    path = save_safetensors(sd, tmp_path / "cut.safetensors")
    with pytest.raises(XDynaLayoutError) as err:
        split_xdyna_unet(load_state_dict_file(path), path)
    assert str(path) in str(err.value) and "'time_embedding.linear_1.weight'" in str(err.value)
    assert "re-download" in str(err.value)


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    folder = dwpose_folder(tmp_path_factory.mktemp("dwpose"))
    good = (folder / "yolox_l.onnx").read_bytes()
    broken = tmp_path_factory.mktemp("broken")
    (broken / "truncated.onnx").write_bytes(good[: len(good) // 2])
    (broken / "garbage.onnx").write_bytes(b"<html>404 Not Found</html>" * 8)
    (broken / "pointer.onnx").write_text(LFS_POINTER.replace("5288933977", "216746733"))
    return folder, broken


@pytest.mark.parametrize(
    ("name", "found"),
    [
        ("truncated.onnx", "cannot read this ONNX model (InvalidProtobuf"),
        ("garbage.onnx", "cannot read this ONNX model"),
        ("pointer.onnx", "this is a Git LFS pointer, not the model"),
    ],
)
def test_broken_onnx_files_are_named(onnx_files, name, found):
    _, broken = onnx_files
    with pytest.raises(OnnxFileError) as err:
        OnnxModel.load(broken / name, [CPU_PROVIDER])
    assert str(broken / name) in str(err.value) and found in str(err.value)
    assert "download" in str(err.value)


def test_a_good_onnx_file_still_opens(onnx_files):
    folder, _ = onnx_files
    assert OnnxModel.load(folder / "yolox_l.onnx", [CPU_PROVIDER]).input_shape[1] == 3


def test_ckpt_of_another_kind_is_named(tmp_path):
    path = save_ckpt({"w": torch.ones(2)}, tmp_path / "other.ckpt")
    with pytest.raises(XDynaLayoutError, match="other.ckpt: no UNet weights found"):
        split_xdyna_unet(load_state_dict_file(path), path)
