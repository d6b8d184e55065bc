"""Feed-forwards run a block of tokens at a time (`xdyna_core.feed_forward`): the whole-input result, with the
widest activation of a block within the byte budget, counted tensor by tensor."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import xdyna_core.feed_forward as ff
from tests.core.test_motion_module import official_module_state_dict, reference_motion_module
from xdyna_core.motion_module import FeedForward, MotionModule

PROFILE = Path(__file__).resolve().parents[2] / "benchmarks" / "memory_profile.py"


def geglu(x: torch.Tensor, w_in, b_in, w_out, b_out) -> torch.Tensor:
    """Plain-torch GEGLU feed-forward: value * gelu(gate), then the output projection."""
    proj = x @ w_in.T + b_in
    value, gate = proj.split(proj.shape[-1] // 2, dim=-1)
    return (value * (0.5 * gate * (1 + torch.erf(gate / math.sqrt(2))))) @ w_out.T + b_out


@pytest.fixture()
def weights():
    gen = torch.Generator().manual_seed(3)
    return [torch.randn(s, generator=gen, dtype=torch.float64) * 0.2 for s in ((64, 8), (64,), (8, 32), (8,))]


def test_rows_per_chunk():
    assert ff.rows_per_chunk(10, 4, 100) == 2  # 40 bytes a row
    assert ff.rows_per_chunk(10, 4, 119) == 2
    assert ff.rows_per_chunk(10, 4, 120) == 3
    assert ff.rows_per_chunk(10, 2, 100) == 5  # half precision: twice the rows
    assert ff.rows_per_chunk(10, 4, 1) == 1  # never fewer than one row
    with pytest.raises(ValueError, match="positive width"):
        ff.rows_per_chunk(0, 4, 100)


@pytest.mark.parametrize("budget", [1, 64 * 8 * 7, 64 * 8 * 50, 64 * 8 * 59, 64 * 8 * 60, 10**9])
def test_blocks_give_the_whole_result(weights, budget):
    x = torch.randn(3, 20, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)  # 60 tokens
    seen = []

    def layer(rows):
        seen.append(rows.shape)
        return geglu(rows, *weights)

    out = ff.chunked_rows(layer, x, width=64, budget=budget)
    torch.testing.assert_close(out, geglu(x, *weights), rtol=1e-12, atol=1e-12)
    assert out.shape == (3, 20, 8)
    step = max(1, budget // (64 * 8))
    if step >= 60:
        assert seen == [x.shape]  # one block: the input as it is
    else:
        assert [s[0] for s in seen] == [min(step, 60 - start) for start in range(0, 60, step)]
        assert all(len(s) == 2 and s[1] == 8 for s in seen)


def test_default_budget_is_read_when_called(weights, monkeypatch):
    x = torch.randn(40, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    calls = []

    def layer(rows):
        calls.append(rows.shape[0])
        return geglu(rows, *weights)

    ff.chunked_rows(layer, x, width=64)
    assert calls == [40]
    monkeypatch.setattr(ff, "FEED_FORWARD_CHUNK_BYTES", 64 * 8 * 16)  # 16 float64 rows of 64
    calls.clear()
    ff.chunked_rows(layer, x, width=64)
    assert calls == [16, 16, 8]


def test_peak_memory_stays_within_the_budget():
    """Counted storage by storage: whole, the GEGLU holds its projection, gate and product (4 MiB here); in
    blocks, the output plus at most twice the budget (a block's projection, its gelu and product)."""
    spec = importlib.util.spec_from_file_location("xdyna_memory_profile", PROFILE)
    profile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(profile)
    gen = torch.Generator().manual_seed(6)
    layer = FeedForward(32, 128).eval()  # projection 256 wide
    x = torch.randn(4096, 32, generator=gen)
    out_bytes = 4096 * 32 * 4
    budget = 256 * 4 * 256  # 256 rows a block
    with torch.no_grad():
        whole = profile.LiveTensorBytes()
        with whole:
            expected = layer._tokens(x)
        chunked = profile.LiveTensorBytes()
        with chunked:
            out = ff.chunked_rows(layer._tokens, x, 256, budget)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    assert whole.peak >= 4096 * 256 * 4 * 2  # the projection and its product at once
    assert chunked.peak <= out_bytes + 2 * budget + 256 * 32 * 4
    assert chunked.peak < whole.peak / 3


def test_motion_module_feed_forward_in_blocks(monkeypatch):
    sd = official_module_state_dict("down_blocks.0.motion_modules.0")
    module = MotionModule.from_state_dict(sd).eval()
    x = torch.randn(2 * 16, 32, 3, 3, generator=torch.Generator().manual_seed(7))
    proj = module.temporal_transformer.transformer_blocks[0].ff.net[0].proj
    blocks = []
    proj.register_forward_hook(lambda mod, args, out: blocks.append(args[0].numel() // args[0].shape[-1]))
    with torch.no_grad():
        whole = module(x, 16)
        assert blocks == [2 * 16 * 9]  # 9 locations of 2 clips x 16 frames, in one block by default
        expected = reference_motion_module(sd, x, 16)
        monkeypatch.setattr(ff, "FEED_FORWARD_CHUNK_BYTES", proj.out_features * 4 * 50)  # 50 tokens a block
        blocks.clear()
        chunked = module(x, 16)
    assert blocks == [50] * 5 + [38]
    torch.testing.assert_close(chunked, whole, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(chunked, expected, rtol=1e-4, atol=1e-4)


def test_half_precision_blocks_count_in_the_input_dtype(weights):
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(8)).to(torch.bfloat16)
    w = [t.to(torch.bfloat16) for t in weights]
    calls = []

    def layer(rows):
        calls.append(rows.shape[0])
        proj = F.linear(rows, w[0], w[1])
        value, gate = proj.chunk(2, dim=-1)
        return F.linear(value * F.gelu(gate), w[2], w[3])

    out = ff.chunked_rows(layer, x, width=64, budget=64 * 2 * 16)  # 16 bf16 rows of 64
    assert calls == [16, 16, 16, 16]
    assert out.dtype == torch.bfloat16
    calls.clear()
    torch.testing.assert_close(out, layer(x), rtol=1.6e-2, atol=1e-2)
