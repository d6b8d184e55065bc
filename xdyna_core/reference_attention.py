"""The two attention terms X-Dyna adds to SD1.5's transformer blocks (docs/xdyna_model.md §3.1–3.2).

Dynamics-Adapter (every `attn1`): each frame's normed tokens `h_f` also attend to the reference frame's
normed tokens `h_0` of the same CFG branch, through the block's own frozen `to_k`/`to_v` and the adapter's
`to_q_ff`, and the result goes through the adapter's `to_out_ff`:

    attn1_out_f += to_out_ff(Attn(to_q_ff h_f, to_k h_0, to_v h_0))

IP-Adapter (every `attn2`): the same queries as the text cross-attention attend to the branch's 16 image
tokens through `to_k_ip`/`to_v_ip`, and the result is added before `to_out`.

Both terms attend to one key set per branch, so the frames of a branch are folded into one long query
sequence instead of repeating the keys per frame: the same maths, without copying K/V F+1 times.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .attention import AttentionFn, sdpa_attention

Projection = Callable[[torch.Tensor], torch.Tensor]


def _per_branch(queries: torch.Tensor, branches: int) -> torch.Tensor:
    total, tokens, width = queries.shape
    if total % branches:
        raise ValueError(f"{total} frames cannot be split into {branches} CFG branches")
    return queries.reshape(branches, (total // branches) * tokens, width)


def dynamics_adapter_term(
    hidden: torch.Tensor,
    frames_per_branch: int,
    to_q_ff: Projection,
    to_k: Projection,
    to_v: Projection,
    to_out_ff: Projection,
    heads: int,
    attention: AttentionFn = sdpa_attention,
) -> torch.Tensor:
    """The Dynamics-Adapter output for every frame, reference included.

    Args:
        hidden: `norm1` output `[branches * frames_per_branch, tokens, C]`, frames of a branch contiguous,
            the reference first in each branch.
        frames_per_branch: F + 1 (the reference plus the window's frames).
        to_q_ff, to_out_ff: the adapter's projections for this block.
        to_k, to_v: the block's own self-attention key/value projections (frozen SD1.5 weights).
        heads: attention heads of the block (8 in SD1.5).
        attention: `attention(q, k, v, heads)` backend.
    Returns:
        `[branches * frames_per_branch, tokens, C]`, to be added to the block's self-attention output.
    """
    total, tokens, _ = hidden.shape
    if frames_per_branch < 1 or total % frames_per_branch:
        raise ValueError(f"{total} frames are not whole branches of {frames_per_branch} frames")
    branches = total // frames_per_branch
    reference = hidden.reshape(branches, frames_per_branch, tokens, -1)[:, 0]
    queries = _per_branch(to_q_ff(hidden), branches)
    out = attention(queries, to_k(reference), to_v(reference), heads)
    return to_out_ff(out.reshape(total, tokens, -1))


def image_prompt_attention(
    queries: torch.Tensor,
    image_tokens: torch.Tensor,
    to_k_ip: Projection,
    to_v_ip: Projection,
    heads: int,
    attention: AttentionFn = sdpa_attention,
) -> torch.Tensor:
    """`Attn(q, to_k_ip img, to_v_ip img)` for every frame, before the block's `to_out`.

    Args:
        queries: the cross-attention queries `to_q(norm2 x)`, `[branches * frames, tokens, C]`.
        image_tokens: each branch's IP-Adapter tokens `[branches, 16, D]` (conditional: the reference's
            Resampler tokens; unconditional: those of a zero image).
        to_k_ip, to_v_ip: the block's IP-Adapter projections `D → C`.
    """
    branches = image_tokens.shape[0]
    total, tokens, _ = queries.shape
    out = attention(_per_branch(queries, branches), to_k_ip(image_tokens), to_v_ip(image_tokens), heads)
    return out.reshape(total, tokens, -1)
