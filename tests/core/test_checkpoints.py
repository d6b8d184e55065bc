"""Reading the released X-Dyna UNet checkpoint safely, splitting it, converting it, and refusing wrong files."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from tests.conftest import REPO_ROOT
from tests.fixtures.official_layout import TINY_UNET, TINY_UNET_ALL_KEYS, unet_key_section
from tests.fixtures.weights import (
    controlnet_state_dict,
    ip_adapter_plus_state_dict,
    save_bin,
    save_ckpt,
    save_safetensors,
    xdyna_unet_state_dict,
)
from xdyna_core.checkpoints import (
    XDynaCheckpointError,
    XDynaLayoutError,
    load_state_dict_file,
    load_xdyna_unet,
    split_xdyna_unet,
)
from xdyna_core.convert import convert_to_safetensors, main
from xdyna_core.motion_module import MotionModule

SIDE_EFFECTS: list[str] = []


def _record_side_effect(marker: str) -> None:
    """What a malicious pickle would run on load; it must never be called."""
    SIDE_EFFECTS.append(marker)
    Path(marker).write_text("ran")


class Booby:
    """Pickles as a call to `_record_side_effect`: unpickling it runs code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_record_side_effect, (self.marker,))


@pytest.fixture(scope="module")
def tiny() -> dict[str, torch.Tensor]:
    return xdyna_unet_state_dict(TINY_UNET, seed=0)


@pytest.fixture(scope="module")
def files(tiny, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("unet")
    return {
        "ckpt": save_ckpt(tiny, d / "unet-checkpoint-epoch-5.ckpt"),
        "wrapped": save_ckpt(tiny, d / "wrapped.ckpt", wrap_state_dict=True),
        "module": save_ckpt(tiny, d / "ddp.pth", module_prefix=True),
        "both": save_ckpt(tiny, d / "both.pt", wrap_state_dict=True, module_prefix=True),
        "safetensors": save_safetensors(tiny, d / "unet.safetensors"),
    }


@pytest.mark.parametrize("kind", ["ckpt", "wrapped", "module", "both", "safetensors"])
def test_every_file_form_splits_the_same(tiny, files, kind):
    parts = load_xdyna_unet(files[kind])
    assert parts.source == str(files[kind])
    assert len(parts.unet) == 684  # TINY_UNET has no conv_shortcut in down_blocks.2 (see official_layout)
    assert len(parts.dynamics_adapter) == 16 and sum(map(len, parts.dynamics_adapter.values())) == 48
    assert len(parts.ip_adapter) == 16 and sum(map(len, parts.ip_adapter.values())) == 32
    assert len(parts.motion_modules) == 20 and sum(map(len, parts.motion_modules.values())) == 560
    assert not parts.extra
    block = "down_blocks.0.attentions.0.transformer_blocks.0"
    assert set(parts.dynamics_adapter[f"{block}.attn1"]) == {"to_q_ff.weight", "to_out_ff.weight", "to_out_ff.bias"}
    assert set(parts.ip_adapter[f"{block}.attn2"]) == {"to_k_ip.weight", "to_v_ip.weight"}
    assert "mid_block.attentions.0.transformer_blocks.0.attn1" in parts.dynamics_adapter
    assert {p.split(".")[0] for p in parts.motion_modules} == {"down_blocks", "up_blocks"}
    torch.testing.assert_close(
        parts.motion_modules["up_blocks.3.motion_modules.2"]["temporal_transformer.proj_out.weight"],
        tiny["up_blocks.3.motion_modules.2.temporal_transformer.proj_out.weight"],
        atol=0,
        rtol=0,
    )
    for key in ("conv_in.weight", f"{block}.attn1.to_q.weight"):
        assert torch.equal(parts.unet[key], tiny[key])

    c = parts.config
    assert c.block_out_channels == (32, 64, 64, 64)
    assert (c.in_channels, c.out_channels, c.cross_attention_dim) == (4, 4, 32)
    assert (c.layers_per_block, c.transformer_layers_per_block, c.attention_heads) == (2, 1, 8)
    assert c.down_block_has_attention == (True, True, True, False)
    assert (c.time_embed_dim, c.motion_pe_length) == (128, 24)


def test_sections_agree_with_the_fixture_layout(tiny):
    parts = split_xdyna_unet(tiny, source="tiny")
    assert set(parts.unet) == {k for k in tiny if unet_key_section(k) == "unet"}
    sd15_like = split_xdyna_unet(xdyna_unet_state_dict(TINY_UNET_ALL_KEYS, seed=1), source="all-keys")
    assert len(sd15_like.unet) == 686 and sd15_like.config.block_out_channels == (32, 64, 128, 128)


def test_split_motion_modules_load_strictly(tiny):
    parts = split_xdyna_unet(tiny)
    for prefix in ("down_blocks.0.motion_modules.0", "down_blocks.3.motion_modules.1", "up_blocks.0.motion_modules.2"):
        module = MotionModule.from_state_dict(parts.motion_modules[prefix])
        assert module.pe_length == parts.config.motion_pe_length


@pytest.mark.parametrize(
    ("name", "dtype"), [("fp16", torch.float16), ("bf16", torch.bfloat16), ("fp32", torch.float32)]
)
def test_converter_round_trip(tiny, files, tmp_path, name, dtype):
    dst = convert_to_safetensors(files["both"], tmp_path / f"unet-{name}.safetensors", dtype=dtype)
    assert not list(tmp_path.glob("*.partial"))
    with safe_open(str(dst), "pt") as f:
        assert list(f.keys()) == sorted(tiny)  # safetensors lists keys sorted; the names are the official ones
        assert f.metadata()["converted_from"] == "both.pt"
    back = load_state_dict_file(dst)
    assert set(back) == set(tiny)
    for key, value in tiny.items():
        assert back[key].dtype == dtype
        assert torch.equal(back[key], value.to(dtype)), key  # fp32: bit-exact; fp16/bf16: exactly the cast
    assert len(load_xdyna_unet(dst).motion_modules) == 20


def test_converter_cli(files, tmp_path, caplog):
    dst = tmp_path / "cli.safetensors"
    assert main([str(files["ckpt"]), str(dst), "--dtype", "fp32"]) == 0
    assert torch.equal(
        load_state_dict_file(dst)["conv_in.weight"], load_state_dict_file(files["ckpt"])["conv_in.weight"]
    )
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(files["ckpt"].read_bytes()[:1000])
    with caplog.at_level(logging.ERROR, logger="xdyna"):
        assert main([str(bad), str(tmp_path / "bad.safetensors")]) == 1
    assert "bad.ckpt" in caplog.text and "damaged" in caplog.text
    assert not (tmp_path / "bad.safetensors").exists()
    run = subprocess.run(
        [sys.executable, "-m", "xdyna_core.convert", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0 and "--dtype" in run.stdout


# --- wrong files -------------------------------------------------------------------------------------------


def _without(sd, *sections):
    return {k: v for k, v in sd.items() if unet_key_section(k) not in sections}


def test_sdxl_and_ldm_checkpoints_are_named(tmp_path):
    def t():
        return torch.ones(2)

    cases = {
        "sdxl_diffusers.safetensors": (
            {"conv_in.weight": t(), "add_embedding.linear_1.weight": t()},
            "SDXL UNet in diffusers",
        ),
        "sdxl.safetensors": (
            {"model.diffusion_model.input_blocks.0.0.weight": t(), "model.diffusion_model.label_emb.0.0.weight": t()},
            "SDXL checkpoint in ComfyUI/ldm format",
        ),
        "v1-5-pruned.safetensors": (
            {"model.diffusion_model.input_blocks.0.0.weight": t(), "first_stage_model.decoder.conv_in.weight": t()},
            "a Stable Diffusion checkpoint",
        ),
        "unet_ldm.ckpt": ({"input_blocks.0.0.weight": t(), "out.2.weight": t()}, "a Stable Diffusion checkpoint"),
    }
    for name, (sd, expected) in cases.items():
        path = save_ckpt(sd, tmp_path / name) if name.endswith(".ckpt") else save_safetensors(sd, tmp_path / name)
        with pytest.raises(XDynaLayoutError, match=expected) as info:
            load_xdyna_unet(path)
        assert str(path) in str(info.value) and "unet-checkpoint-epoch-5.ckpt" in str(info.value)


def test_plain_sd15_unet_and_partial_files(tiny, tmp_path):
    path = save_safetensors(_without(tiny, "adapter", "ip", "motion"), tmp_path / "sd15_unet.safetensors")
    with pytest.raises(
        XDynaLayoutError,
        match=r"sd15_unet\.safetensors.*has no Dynamics-Adapter weights.*, no IP-Adapter k/v.*, no motion modules\. It is a plain SD1\.5 UNet",
    ):
        load_xdyna_unet(path)
    with pytest.raises(XDynaLayoutError, match=r"has no IP-Adapter k/v \(attn2\.to_k_ip / to_v_ip\)\. Load") as info:
        split_xdyna_unet(_without(tiny, "ip"), source="no_ip.ckpt")
    assert "Dynamics-Adapter" not in str(info.value) and "no_ip.ckpt" in str(info.value)
    with pytest.raises(XDynaLayoutError, match="has no motion modules"):
        split_xdyna_unet(_without(tiny, "motion"), source="x")


def test_motion_module_file_alone(tiny, tmp_path):
    path = save_ckpt({k: v for k, v in tiny.items() if ".motion_modules." in k}, tmp_path / "mm_sd_v14.ckpt")
    with pytest.raises(XDynaLayoutError, match=r"mm_sd_v14\.ckpt.*only motion modules \(20 AnimateDiff"):
        load_xdyna_unet(path)


def test_controlnet_given_as_unet(tmp_path):
    path = save_ckpt(controlnet_state_dict(TINY_UNET), tmp_path / "controlnet-checkpoint-epoch-5.ckpt")
    with pytest.raises(XDynaLayoutError, match=r"controlnet-checkpoint-epoch-5\.ckpt.*is a ControlNet"):
        load_xdyna_unet(path)


def test_counts_that_disagree_with_the_layout(tiny):
    block = "up_blocks.2.attentions.1.transformer_blocks.0"
    no_block = {k: v for k, v in tiny.items() if not k.startswith(f"{block}.attn1.to_") or "_ff." not in k}
    with pytest.raises(
        XDynaLayoutError, match=r"f\.ckpt.*found 15 Dynamics-Adapter blocks \(45 keys\), expected 16 \(48 keys\)"
    ):
        split_xdyna_unet(no_block, source="f.ckpt")
    no_module = {k: v for k, v in tiny.items() if not k.startswith("down_blocks.3.motion_modules.1.")}
    with pytest.raises(XDynaLayoutError, match=r"found 19 motion modules \(532 keys\), expected 20 \(560 keys\)"):
        split_xdyna_unet(no_module, source="f.ckpt")
    extra_module = dict(tiny) | {
        f"mid_block.motion_modules.0.{k.split('motion_modules.0.')[1]}": v
        for k, v in tiny.items()
        if k.startswith("down_blocks.3.motion_modules.0.")
    }
    with pytest.raises(XDynaLayoutError, match=r"found 21 motion modules.*unexpected at \['mid_block"):
        split_xdyna_unet(extra_module, source="f.ckpt")
    one_key = {k: v for k, v in tiny.items() if k != f"{block}.attn2.to_v_ip.weight"}
    with pytest.raises(XDynaLayoutError, match=r"IP-Adapter k/v at .*attn2 has \['to_k_ip.weight'\]"):
        split_xdyna_unet(one_key, source="f.ckpt")
    partial_module = {
        k: v for k, v in tiny.items() if k != "up_blocks.1.motion_modules.0.temporal_transformer.norm.bias"
    }
    with pytest.raises(XDynaLayoutError, match=r"motion module up_blocks\.1\.motion_modules\.0 does not have"):
        split_xdyna_unet(partial_module, source="f.ckpt")


def test_unknown_keys_warn_but_load(tiny, caplog):
    odd = {
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k_ff.weight": torch.ones(32, 32),
        "some_head.weight": torch.ones(3),
    }
    with caplog.at_level(logging.WARNING, logger="xdyna"):
        parts = split_xdyna_unet(dict(tiny) | odd, source="odd.ckpt")
    assert set(parts.extra) == set(odd) and len(parts.unet) == 684
    assert "odd.ckpt: ignoring 2 keys" in caplog.text


# --- unreadable files ---------------------------------------------------------------------------------------


def test_truncated_files(files, tmp_path):
    for kind in ("ckpt", "safetensors"):
        data = files[kind].read_bytes()
        cut = tmp_path / f"cut{files[kind].suffix}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(XDynaCheckpointError, match=r"damaged or incomplete.*download it again") as info:
            load_state_dict_file(cut)
        assert str(cut) in str(info.value) and not isinstance(info.value, XDynaLayoutError)
    legacy = tmp_path / "legacy.ckpt"
    torch.save({"w": torch.ones(64, 64)}, legacy, _use_new_zipfile_serialization=False)
    assert torch.equal(load_state_dict_file(legacy)["w"], torch.ones(64, 64))
    legacy.write_bytes(legacy.read_bytes()[:300])
    with pytest.raises(XDynaCheckpointError, match="damaged or incomplete"):
        load_state_dict_file(legacy)


def test_pickles_with_objects_are_never_run(tmp_path):
    marker = tmp_path / "side_effect.txt"
    for name, legacy in (("booby.ckpt", False), ("booby_legacy.pt", True)):
        path = tmp_path / name
        torch.save({"w": torch.ones(2), "x": Booby(str(marker))}, path, _use_new_zipfile_serialization=not legacy)
        with pytest.raises(XDynaCheckpointError, match=r"non-tensor Python objects.*will not be unpickled") as info:
            load_state_dict_file(path)
        assert str(path) in str(info.value) and "_record_side_effect" in str(info.value)
        assert "xdyna_core.convert" in str(info.value)
    assert not marker.exists() and not SIDE_EFFECTS


def test_not_a_dict_of_tensors(tmp_path):
    for name, obj, expected in (
        ("list.ckpt", [torch.ones(2)], "expected a dict of tensors, found list"),
        ("mixed.ckpt", {"w": torch.ones(2), "epoch": 5}, r"1 entries are not tensors \(e\.g\. 'epoch': int\)"),
        ("empty.ckpt", {}, "empty dict"),
    ):
        path = tmp_path / name
        torch.save(obj, path)
        with pytest.raises(XDynaCheckpointError, match=expected) as info:
            load_state_dict_file(path)
        assert name in str(info.value)
    bundle = save_bin(ip_adapter_plus_state_dict(TINY_UNET), tmp_path / "ip-adapter-plus_sd15.bin")
    with pytest.raises(XDynaCheckpointError, match=r"nested dicts \['image_proj', 'ip_adapter'\]"):
        load_state_dict_file(bundle)
    # A training checkpoint keeps counters beside "state_dict": those are dropped, not refused.
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 5}, tmp_path / "train.ckpt")
    assert list(load_state_dict_file(tmp_path / "train.ckpt")) == ["w"]


def test_unsupported_or_missing_files(tmp_path):
    other = tmp_path / "model.gguf"
    other.write_bytes(b"GGUF")
    with pytest.raises(XDynaCheckpointError, match=r"model\.gguf: unsupported file type"):
        load_state_dict_file(other)
    with pytest.raises(FileNotFoundError, match="nothing.ckpt"):
        load_state_dict_file(tmp_path / "nothing.ckpt")
