"""The AnimateDiff-v1 motion module against a plain-torch statement of the released maths.

The reference below is written from the release (bytedance/X-Dyna `animatediff/models/motion_module.py`,
diffusers' GEGLU) with einsum and an explicit softmax; it shares no code with `xdyna_core`.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import xdyna_core.motion_module as mm
from tests.fixtures.official_layout import SD15_UNET, TINY_UNET, unet_key_groups
from tests.fixtures.weights import make_state_dict
from xdyna_core.attention import sdpa_attention
from xdyna_core.motion_module import MotionModule

HEADS = 8


def official_module_state_dict(prefix: str, layout=TINY_UNET, seed: int = 0) -> dict[str, torch.Tensor]:
    """One motion module's tensors in the checkpoint layout, keys relative to `prefix.` (nothing is zero)."""
    shapes = {k: s for k, s in unet_key_groups(layout)["motion"].items() if k.startswith(prefix + ".")}
    sd = make_state_dict(shapes, seed, namespace="motion-test")
    return {k.removeprefix(prefix + "."): v for k, v in sd.items()}


def reference_motion_module(sd: dict[str, torch.Tensor], x: torch.Tensor, frames: int) -> torch.Tensor:
    """The released VanillaTemporalModule (one transformer block, two Temporal_Self attentions, 8 heads)."""
    t = "temporal_transformer."
    blk = t + "transformer_blocks.0."
    bf, c, hh, ww = x.shape
    b = bf // frames
    h = F.group_norm(x, 32, sd[t + "norm.weight"], sd[t + "norm.bias"], eps=1e-6)
    h = h.permute(0, 2, 3, 1).reshape(bf, hh * ww, c)
    h = h @ sd[t + "proj_in.weight"].T + sd[t + "proj_in.bias"]
    h = h.reshape(b, frames, hh * ww, c).permute(0, 2, 1, 3)  # [b, location, frame, c]
    dh = c // HEADS
    for i in range(2):
        a = f"{blk}attention_blocks.{i}."
        n = F.layer_norm(h, (c,), sd[f"{blk}norms.{i}.weight"], sd[f"{blk}norms.{i}.bias"], eps=1e-5)
        n = n + sd[a + "pos_encoder.pe"][0, :frames]
        q, k, v = ((n @ sd[a + f"to_{p}.weight"].T).reshape(*n.shape[:3], HEADS, dh) for p in "qkv")
        scores = torch.einsum("bdfhe,bdghe->bdhfg", q, k) / math.sqrt(dh)
        weights = scores.exp() / scores.exp().sum(-1, keepdim=True)
        o = torch.einsum("bdhfg,bdghe->bdfhe", weights, v).reshape(h.shape)
        h = h + o @ sd[a + "to_out.0.weight"].T + sd[a + "to_out.0.bias"]
    n = F.layer_norm(h, (c,), sd[blk + "ff_norm.weight"], sd[blk + "ff_norm.bias"], eps=1e-5)
    proj = n @ sd[blk + "ff.net.0.proj.weight"].T + sd[blk + "ff.net.0.proj.bias"]
    inner = proj.shape[-1] // 2
    value, gate = proj[..., :inner], proj[..., inner:]
    gelu = 0.5 * gate * (1 + torch.erf(gate / math.sqrt(2)))
    h = h + (value * gelu) @ sd[blk + "ff.net.2.weight"].T + sd[blk + "ff.net.2.bias"]
    h = h @ sd[t + "proj_out.weight"].T + sd[t + "proj_out.bias"]
    h = h.permute(0, 2, 1, 3).reshape(bf, hh, ww, c).permute(0, 3, 1, 2)
    return h + x


@pytest.fixture(scope="module")
def sd32() -> dict[str, torch.Tensor]:
    return official_module_state_dict("down_blocks.0.motion_modules.0")


@pytest.fixture(scope="module")
def module32(sd32) -> MotionModule:
    return MotionModule.from_state_dict(sd32).eval()


def _input(batch: int, frames: int, channels: int = 32, h: int = 2, w: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch * frames, channels, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("frames", [1, 5, 16, 24])
def test_matches_released_maths(sd32, module32, frames):
    assert sd32["temporal_transformer.proj_out.weight"].abs().min() > 0  # not an identity module
    x = _input(2, frames)
    with torch.no_grad():
        out = module32(x, frames)
    expected = reference_motion_module(sd32, x, frames)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert (out - x).abs().max() > 1e-2


def test_other_width_and_up_block_module():
    prefix = "up_blocks.1.motion_modules.2"
    sd = official_module_state_dict(prefix, seed=3)
    module = MotionModule.from_state_dict(sd)
    x = _input(1, 7, channels=64, h=3, w=2)
    with torch.no_grad():
        torch.testing.assert_close(module(x, 7), reference_motion_module(sd, x, 7), atol=1e-5, rtol=1e-5)


def test_state_dict_keys_are_the_official_ones(sd32):
    module = MotionModule(32)
    assert set(module.state_dict()) == set(sd32)
    assert len(sd32) == 28
    module.load_state_dict(sd32, strict=True)


def test_real_size_shapes_without_allocating():
    motion = unet_key_groups(SD15_UNET)["motion"]
    for prefix, channels in (("down_blocks.0.motion_modules.1", 320), ("up_blocks.0.motion_modules.2", 1280)):
        official = {k.removeprefix(prefix + "."): s for k, s in motion.items() if k.startswith(prefix + ".")}
        with torch.device("meta"):
            module = MotionModule(channels)
        assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == official


def test_from_state_dict_reads_the_sizes(module32):
    assert module32.pe_length == 24
    tt = module32.temporal_transformer
    assert tt.norm.eps == 1e-6 and tt.norm.num_groups == 32
    assert len(tt.transformer_blocks) == 1 and len(tt.transformer_blocks[0].attention_blocks) == 2
    short = {k: (v[:, :12] if k.endswith("pe") else v) for k, v in module32.state_dict().items()}
    assert MotionModule.from_state_dict(short).pe_length == 12


def test_chunked_equals_unchunked(module32, monkeypatch):
    x = _input(2, 16, h=3, w=3)  # 18 sequences of 16 frames
    calls = []

    def counting(q, k, v, heads):
        calls.append(q.shape[0])
        return sdpa_attention(q, k, v, heads)

    with torch.no_grad():
        whole = module32(x, 16)
        for chunk in (1, 5, 18, 100):
            torch.testing.assert_close(module32(x, 16, chunk_size=chunk), whole, atol=0, rtol=0)
        calls.clear()
        module32(x, 16, attention=counting, chunk_size=5)
        assert calls == [5, 5, 5, 3] * 2
        # The default keeps sequences x heads within the CUDA grid limit.
        monkeypatch.setattr(mm, "CUDA_GRID_LIMIT", 8 * 4)
        calls.clear()
        torch.testing.assert_close(module32(x, 16, attention=counting), whole, atol=0, rtol=0)
        assert max(calls) == 4


def test_frames_mix_but_locations_and_clips_do_not(module32):
    frames = 6
    x = _input(2, frames, h=3, w=3)
    with torch.no_grad():
        base = module32(x, frames)
        changed = x.clone()
        changed[3] += torch.randn(changed[3].shape, generator=torch.Generator().manual_seed(9))
        out = module32(changed, frames)
        assert (out[0] - base[0]).abs().max() > 1e-3  # frame 0 sees frame 3
        torch.testing.assert_close(out[frames:], base[frames:], atol=0, rtol=0)  # the other clip does not

        # GroupNorm statistics ignore where a value sits, so a spatial permutation (the same for all frames)
        # must come out permuted if attention never mixes locations.
        perm = torch.randperm(9, generator=torch.Generator().manual_seed(4))
        shuffled = x.flatten(2)[:, :, perm].reshape(x.shape)
        torch.testing.assert_close(module32(shuffled, frames), base.flatten(2)[:, :, perm].reshape(x.shape))


def test_injected_attention_is_used(module32):
    x = _input(1, 4)
    with torch.no_grad():
        zero = module32(x, 4, attention=lambda q, k, v, heads: torch.zeros_like(q))
        assert not torch.allclose(zero, module32(x, 4))


def test_errors(module32):
    with pytest.raises(ValueError, match="at most 24 frames"):
        module32(_input(1, 25), 25)
    with pytest.raises(ValueError, match="not a whole number of clips"):
        module32(_input(1, 5), 4)
    with pytest.raises(ValueError, match="chunk_size"):
        module32(_input(1, 4), 4, chunk_size=0)
    with pytest.raises(ValueError, match="missing"):
        MotionModule.from_state_dict({"temporal_transformer.proj_in.weight": torch.ones(32, 32)})
