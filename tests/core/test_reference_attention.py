"""Dynamics-Adapter and IP-Adapter attention terms and joint GroupNorm, against explicit per-frame maths."""

from __future__ import annotations

import pytest
import torch

from xdyna_core.reference_attention import dynamics_adapter_term, image_prompt_attention

HEADS = 4


def explicit_attention(q, k, v, heads):
    """softmax(q kᵀ / sqrt(d)) v per head, written out with einsum."""
    b, n, c = q.shape
    d = c // heads
    qh, kh, vh = (t.reshape(t.shape[0], t.shape[1], heads, d) for t in (q, k, v))
    weights = torch.einsum("bnhd,bmhd->bhnm", qh, kh).mul(d**-0.5).softmax(-1)
    return torch.einsum("bhnm,bmhd->bnhd", weights, vh).reshape(b, n, c)


def linear(gen, c_out, c_in, bias=True):
    layer = torch.nn.Linear(c_in, c_out, bias=bias)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(c_out, c_in, generator=gen) / c_in**0.5)
        if bias:
            layer.bias.copy_(torch.randn(c_out, generator=gen) * 0.1)
    return layer


@pytest.mark.parametrize("frames", [1, 2, 6, 17])
def test_dynamics_adapter_is_attention_to_the_branch_reference(frames):
    gen = torch.Generator().manual_seed(frames)
    branches, tokens, c = 2, 12, 32
    hidden = torch.randn(branches * frames, tokens, c, generator=gen)
    q_ff, k, v, out_ff = (linear(gen, c, c, bias=b) for b in (False, False, False, True))
    got = dynamics_adapter_term(hidden, frames, q_ff, k, v, out_ff, HEADS)
    for b in range(branches):
        ref = hidden[b * frames]
        for f in range(frames):
            h = hidden[b * frames + f]
            expected = out_ff(explicit_attention(q_ff(h)[None], k(ref)[None], v(ref)[None], HEADS))[0]
            torch.testing.assert_close(got[b * frames + f], expected, atol=1e-5, rtol=1e-5)


def test_dynamics_adapter_uses_only_its_own_branch_reference():
    gen = torch.Generator().manual_seed(0)
    frames, tokens, c = 3, 5, 16
    hidden = torch.randn(2 * frames, tokens, c, generator=gen)
    layers = [linear(gen, c, c) for _ in range(4)]
    base = dynamics_adapter_term(hidden, frames, *layers, heads=2)
    changed = hidden.clone()
    changed[frames] += 1.0  # the second branch's reference
    out = dynamics_adapter_term(changed, frames, *layers, heads=2)
    assert torch.equal(out[:frames], base[:frames])
    assert not torch.allclose(out[frames:], base[frames:])


def test_image_prompt_attention_uses_each_branch_tokens():
    gen = torch.Generator().manual_seed(1)
    branches, frames, tokens, c, d = 2, 4, 6, 32, 24
    queries = torch.randn(branches * frames, tokens, c, generator=gen)
    image_tokens = torch.randn(branches, 16, d, generator=gen)
    k_ip, v_ip = linear(gen, c, d, bias=False), linear(gen, c, d, bias=False)
    got = image_prompt_attention(queries, image_tokens, k_ip, v_ip, HEADS)
    for i in range(branches * frames):
        img = image_tokens[i // frames]
        expected = explicit_attention(queries[i][None], k_ip(img)[None], v_ip(img)[None], HEADS)[0]
        torch.testing.assert_close(got[i], expected, atol=1e-5, rtol=1e-5)


def test_bad_frame_counts_are_named():
    with pytest.raises(ValueError, match="not whole branches"):
        dynamics_adapter_term(torch.zeros(5, 2, 8), 2, *(torch.nn.Identity() for _ in range(4)), heads=2)
