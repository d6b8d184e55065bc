"""The fixture toolkit describes the released files exactly and writes them faithfully.

Real SD1.5 sizes are checked by shape only (nothing of 1.3 G parameters is allocated); tiny sizes are
materialised. The SD1.5 numbers were cross-checked once against diffusers' UNet2DConditionModel /
ControlNetModel (cross_attention_dim=768) and ComfyUI's own SD1.5 UNetModel.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from tests.fixtures.official_layout import (
    SD15_RESAMPLER,
    SD15_UNET,
    SECTIONS,
    TINY_UNET,
    TINY_UNET_ALL_KEYS,
    UNetLayout,
    controlnet_key_shapes,
    image_proj_key_shapes,
    ip_adapter_key_shapes,
    ip_adapter_processor_prefixes,
    motion_modules,
    parameter_count,
    spatial_transformers,
    unet_key_groups,
    unet_key_section,
    unet_key_shapes,
)
from tests.fixtures.weights import (
    OFFICIAL_FILE_NAMES,
    ZERO_INITIALISED_PATTERNS,
    controlnet_state_dict,
    ip_adapter_plus_state_dict,
    is_zero_initialised,
    make_state_dict,
    save_bin,
    save_ckpt,
    save_safetensors,
    write_official_files,
    xdyna_unet_state_dict,
)

SD15_UNET_PARAMS = 1_321_465_924  # 5.29 GB in fp32, the size of unet-checkpoint-epoch-5.ckpt
SD15_PLAIN_UNET_PARAMS = 859_520_964  # the well-known SD1.5 UNet size
SD15_MOTION_PARAMS = 417_982_400  # AnimateDiff mm_sd_v14 (1.67 GB fp32)
SD15_CONTROLNET_PARAMS = 361_279_120  # diffusers ControlNetModel, SD1.5 widths, 3-channel hint


@pytest.fixture(scope="module")
def tiny_unet() -> dict[str, torch.Tensor]:
    return xdyna_unet_state_dict(TINY_UNET, seed=0)


@pytest.fixture(scope="module")
def tiny_controlnets() -> dict[int, dict[str, torch.Tensor]]:
    return {hint: controlnet_state_dict(TINY_UNET, hint, seed=0) for hint in (3, 6)}


def test_sd15_unet_key_and_section_counts():
    groups = unet_key_groups(SD15_UNET)
    assert {name: len(keys) for name, keys in groups.items()} == {"unet": 686, "adapter": 48, "ip": 32, "motion": 560}
    shapes = unet_key_shapes(SD15_UNET)
    assert len(shapes) == 1326  # the groups do not overlap
    assert all(unet_key_section(key) == name for name, keys in groups.items() for key in keys)
    assert len(spatial_transformers(SD15_UNET)) == 16
    assert len(motion_modules(SD15_UNET)) == 20
    for prefix, _ in motion_modules(SD15_UNET):
        assert sum(k.startswith(prefix + ".") for k in shapes) == 28


def test_sd15_unet_parameter_count():
    groups = unet_key_groups(SD15_UNET)
    total = parameter_count(unet_key_shapes(SD15_UNET))
    assert total == SD15_UNET_PARAMS
    assert 1.31e9 < total < 1.33e9
    assert parameter_count(groups["unet"]) == SD15_PLAIN_UNET_PARAMS
    assert parameter_count(groups["motion"]) == SD15_MOTION_PARAMS


@pytest.mark.parametrize(
    ("key", "shape"),
    [
        ("conv_in.weight", (320, 4, 3, 3)),
        ("time_embedding.linear_1.weight", (1280, 320)),
        ("down_blocks.0.attentions.0.proj_in.weight", (320, 320, 1, 1)),
        ("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight", (320, 768)),
        ("down_blocks.1.resnets.0.conv_shortcut.weight", (640, 320, 1, 1)),
        ("down_blocks.2.attentions.1.transformer_blocks.0.ff.net.0.proj.weight", (10240, 1280)),
        ("up_blocks.0.resnets.2.conv1.weight", (1280, 2560, 3, 3)),
        ("up_blocks.1.resnets.2.conv_shortcut.weight", (1280, 1920, 1, 1)),
        ("up_blocks.3.resnets.0.norm1.weight", (960,)),
        ("mid_block.attentions.0.transformer_blocks.0.attn1.to_q_ff.weight", (1280, 1280)),
        ("up_blocks.2.attentions.0.transformer_blocks.0.attn1.to_out_ff.bias", (640,)),
        ("up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_v_ip.weight", (320, 768)),
        (
            "up_blocks.3.motion_modules.2.temporal_transformer.transformer_blocks.0.attention_blocks.0.pos_encoder.pe",
            (1, 24, 320),
        ),
        (
            "down_blocks.3.motion_modules.1.temporal_transformer.transformer_blocks.0.ff.net.0.proj.weight",
            (10240, 1280),
        ),
        ("up_blocks.0.motion_modules.0.temporal_transformer.proj_in.weight", (1280, 1280)),
        ("conv_out.weight", (4, 320, 3, 3)),
    ],
)
def test_sd15_known_shapes(key, shape):
    assert unet_key_shapes(SD15_UNET)[key] == shape


def test_no_motion_module_in_mid_block_and_no_attention_where_sd15_has_none():
    keys = unet_key_shapes(SD15_UNET)
    assert not any(k.startswith("mid_block.motion_modules") for k in keys)
    assert not any(k.startswith(("down_blocks.3.attentions", "up_blocks.0.attentions")) for k in keys)
    assert "up_blocks.3.upsamplers.0.conv.weight" not in keys and "down_blocks.3.downsamplers.0.conv.weight" not in keys


def test_tiny_layouts():
    tiny = unet_key_groups(TINY_UNET)
    # 64 -> 64 at down_blocks.2 needs no conv_shortcut, so this layout lacks two plain-UNet keys.
    assert {name: len(keys) for name, keys in tiny.items()} == {"unet": 684, "adapter": 48, "ip": 32, "motion": 560}
    assert "down_blocks.2.resnets.0.conv_shortcut.weight" not in tiny["unet"]
    assert unet_key_shapes(TINY_UNET_ALL_KEYS).keys() == unet_key_shapes(SD15_UNET).keys()
    assert unet_key_shapes(TINY_UNET)["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k_ip.weight"] == (
        32,
        32,
    )


@pytest.mark.parametrize("widths", [(32, 64, 48, 64), (320,), (0, 32)])
def test_layout_rejects_bad_widths(widths):
    with pytest.raises(ValueError):
        UNetLayout(block_out_channels=widths)


def test_sd15_controlnet_layout():
    pose, face = controlnet_key_shapes(SD15_UNET, 3), controlnet_key_shapes(SD15_UNET, 6)
    assert len(pose) == len(face) == 340  # as diffusers' ControlNetModel at SD1.5 sizes
    assert parameter_count(pose) == SD15_CONTROLNET_PARAMS
    assert pose["controlnet_cond_embedding.conv_in.weight"] == (16, 3, 3, 3)
    assert face["controlnet_cond_embedding.conv_in.weight"] == (16, 6, 3, 3)
    assert {k: s for k, s in pose.items() if k != "controlnet_cond_embedding.conv_in.weight"} == {
        k: s for k, s in face.items() if k != "controlnet_cond_embedding.conv_in.weight"
    }
    zero_convs = [pose[f"controlnet_down_blocks.{i}.weight"][0] for i in range(12)]
    # One per down-path feature: conv_in + 2 resnets + downsampler at level 0, then 3, 3 and 2 (no downsampler).
    assert zero_convs == [320] * 4 + [640] * 3 + [1280] * 3 + [1280] * 2
    assert f"controlnet_down_blocks.{12}.weight" not in pose
    assert pose["controlnet_mid_block.weight"] == (1280, 1280, 1, 1)
    # Its backbone is the UNet's stem, down path and mid block, with the UNet's shapes.
    unet = unet_key_groups(SD15_UNET)["unet"]
    backbone = {k: s for k, s in pose.items() if not k.startswith("controlnet_")}
    assert len(backbone) == 2 + 4 + 246 + 46
    assert all(unet[k] == s for k, s in backbone.items())


def test_controlnet_hint_encoder_widths_are_fixed_for_tiny_models():
    cn = controlnet_key_shapes(TINY_UNET, 6)
    blocks = [cn[f"controlnet_cond_embedding.blocks.{i}.weight"][:2] for i in range(6)]
    assert blocks == [(16, 16), (32, 16), (32, 32), (96, 32), (96, 96), (256, 96)]
    assert cn["controlnet_cond_embedding.conv_out.weight"] == (32, 256, 3, 3)


def test_sd15_ip_adapter_plus_layout():
    proj = image_proj_key_shapes(SD15_RESAMPLER)
    assert len(proj) == 7 + 4 * 11
    assert proj["latents"] == (1, 16, 768)
    assert proj["proj_in.weight"] == (768, 1280)
    assert proj["proj_out.weight"] == (768, 768)
    assert proj["norm_out.bias"] == (768,)
    assert proj["layers.3.0.to_q.weight"] == (768, 768)
    assert proj["layers.3.0.to_kv.weight"] == (1536, 768)
    assert proj["layers.0.0.to_out.weight"] == (768, 768)
    assert proj["layers.2.1.0.weight"] == (768,)
    assert proj["layers.2.1.1.weight"] == (3072, 768)
    assert proj["layers.2.1.3.weight"] == (768, 3072)
    assert "layers.0.0.to_q.bias" not in proj and "layers.0.1.1.bias" not in proj
    ip = ip_adapter_key_shapes(SD15_UNET)
    assert len(ip) == 32
    assert parameter_count(proj) + parameter_count(ip) == 49_087_488  # x2 bytes: the 98 MB fp16 .bin
    prefixes = ip_adapter_processor_prefixes(SD15_UNET)
    assert sorted(prefixes) == list(range(1, 32, 2))  # attn_processors order: down, up, then mid
    assert prefixes[1] == "down_blocks.0.attentions.0.transformer_blocks.0.attn2"
    assert prefixes[13] == "up_blocks.1.attentions.0.transformer_blocks.0.attn2"
    assert prefixes[31] == "mid_block.attentions.0.transformer_blocks.0.attn2"
    assert ip["1.to_k_ip.weight"] == (320, 768) and ip["31.to_v_ip.weight"] == (1280, 768)


def test_tiny_state_dicts_are_deterministic_and_seed_dependent(tiny_unet):
    again = xdyna_unet_state_dict(TINY_UNET, seed=0)
    other = xdyna_unet_state_dict(TINY_UNET, seed=1)
    assert list(again) == list(tiny_unet) == list(unet_key_shapes(TINY_UNET))
    assert all(torch.equal(tiny_unet[k], again[k]) for k in tiny_unet)
    assert not any(torch.equal(tiny_unet[k], other[k]) for k in tiny_unet)
    # Per-key seeding: a subset of keys gets the very same tensors.
    subset = dict(list(unet_key_shapes(TINY_UNET).items())[::7])
    part = make_state_dict(subset, 0, namespace="xdyna-unet")
    assert all(torch.equal(part[k], tiny_unet[k]) for k in subset)
    assert make_state_dict(subset, 0, torch.float16, namespace="xdyna-unet")["conv_in.weight"].dtype == torch.float16


def test_pose_and_face_controlnets_differ(tiny_controlnets):
    pose, face = tiny_controlnets[3], tiny_controlnets[6]
    assert pose["controlnet_cond_embedding.conv_in.weight"].shape[1] == 3
    assert face["controlnet_cond_embedding.conv_in.weight"].shape[1] == 6
    assert not torch.equal(pose["controlnet_mid_block.weight"], face["controlnet_mid_block.weight"])


def test_nothing_is_zero_and_zero_initialised_layers_are_live(tiny_unet, tiny_controlnets):
    ip = ip_adapter_plus_state_dict(TINY_UNET)
    all_dicts = [tiny_unet, *tiny_controlnets.values(), *ip.values()]
    for sd in all_dicts:
        for key, t in sd.items():
            assert torch.isfinite(t).all(), key
            assert t.count_nonzero() == t.numel(), key  # no zero tensor, not even a zero entry
    keys = [k for sd in all_dicts for k in sd]
    for pattern in ZERO_INITIALISED_PATTERNS:
        assert any(re.search(pattern, k) for k in keys), pattern
    for sd in [tiny_unet, *tiny_controlnets.values()]:
        for key, t in sd.items():
            if not is_zero_initialised(key):
                continue
            if key.endswith(".weight"):  # unit gain: std ~ 1/sqrt(fan_in)
                assert 0.5 < t.std().item() * math.sqrt(t[0].numel()) < 2.0, key
            else:
                assert t.norm().item() > 0.01 * math.sqrt(t.numel()), key


def test_tiny_ip_adapter_matches_unet_context(tiny_unet):
    ip = ip_adapter_plus_state_dict(TINY_UNET, seed=0)
    assert ip["image_proj"]["latents"].shape == (1, 16, 32)
    assert ip["image_proj"]["norm_out.weight"].shape == (TINY_UNET.cross_attention_dim,)
    assert {k: tuple(v.shape) for k, v in ip["ip_adapter"].items()} == ip_adapter_key_shapes(TINY_UNET)
    custom = ip_adapter_plus_state_dict(TINY_UNET, replace(SD15_RESAMPLER, depth=1, dim=32, output_dim=32))
    assert custom["image_proj"]["proj_in.weight"].shape == (32, 1280)


@pytest.mark.parametrize(("wrap", "prefix"), [(False, False), (True, False), (False, True), (True, True)])
def test_ckpt_round_trip(tmp_path, tiny_controlnets, wrap, prefix):
    sd = tiny_controlnets[6]
    path = save_ckpt(sd, tmp_path / "cn.ckpt", wrap_state_dict=wrap, module_prefix=prefix)
    loaded = torch.load(path, weights_only=True)
    if wrap:
        assert set(loaded) == {"state_dict"}
        loaded = loaded["state_dict"]
    assert isinstance(loaded, OrderedDict)
    expected = [("module." if prefix else "") + k for k in sd]
    assert list(loaded) == expected
    assert all(torch.equal(loaded[e], sd[k]) for e, k in zip(expected, sd, strict=True))


def test_safetensors_and_bin_round_trip(tmp_path, tiny_unet):
    path = save_safetensors(tiny_unet, tmp_path / "unet.safetensors")
    loaded = load_file(path)
    assert loaded.keys() == tiny_unet.keys()
    assert all(torch.equal(loaded[k], tiny_unet[k]) for k in tiny_unet)
    half = load_file(save_safetensors(tiny_unet, tmp_path / "half.safetensors", dtype=torch.float16))
    assert half["conv_in.weight"].dtype == torch.float16
    ip = ip_adapter_plus_state_dict(TINY_UNET, seed=3)
    back = torch.load(save_bin(ip, tmp_path / "ip.bin"), weights_only=True)
    assert back.keys() == {"image_proj", "ip_adapter"}
    assert all(torch.equal(back[g][k], ip[g][k]) for g in ip for k in ip[g])


def test_write_official_files(tmp_path):
    paths = write_official_files(tmp_path / "models", TINY_UNET, seed=5)
    assert set(paths) == set(OFFICIAL_FILE_NAMES) | {
        f"{r}_safetensors" for r in ("unet", "controlnet", "controlnet_face")
    }
    assert paths["unet"].name == "unet-checkpoint-epoch-5.ckpt"
    assert paths["controlnet_face_safetensors"].name == "controlnet-face-checkpoint-epoch-2.safetensors"
    unet = torch.load(paths["unet"], weights_only=True)
    assert len(unet) == sum(len(g) for g in unet_key_groups(TINY_UNET).values())
    assert {unet_key_section(k) for k in unet} == set(SECTIONS)
    face = load_file(paths["controlnet_face_safetensors"])
    assert face["controlnet_cond_embedding.conv_in.weight"].shape == (16, 6, 3, 3)
    assert torch.equal(
        face["controlnet_mid_block.weight"], controlnet_state_dict(TINY_UNET, 6, 5)["controlnet_mid_block.weight"]
    )
    ip = torch.load(paths["ip_adapter"], weights_only=True)
    assert ip.keys() == {"image_proj", "ip_adapter"}
