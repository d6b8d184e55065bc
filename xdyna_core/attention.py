"""The attention seam: every X-Dyna attention goes through a function with ComfyUI's calling convention.

`attention(q, k, v, heads) -> out` takes and returns `[batch, tokens, heads * dim_head]` tensors, exactly like
`comfy.ldm.modules.attention.optimized_attention`, so the ComfyUI glue can hand in the backend the user chose
(xformers, sage, flash, split) while core code and its tests run on plain PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head softmax attention with scale `dim_head ** -0.5`, via `F.scaled_dot_product_attention`.

    Args:
        q: queries `[batch, q_tokens, heads * dim_head]`.
        k, v: keys and values `[batch, kv_tokens, heads * dim_head]`.
        heads: number of heads the last dimension is split into.
    """
    batch, q_tokens, inner = q.shape
    if inner % heads:
        raise ValueError(f"attention width {inner} is not divisible by {heads} heads")
    if k.shape[-1] != inner or v.shape[-1] != inner or k.shape[:2] != v.shape[:2] or k.shape[0] != batch:
        raise ValueError(f"attention shapes do not match: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    dim_head = inner // heads
    q, k, v = (t.reshape(batch, t.shape[1], heads, dim_head).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)  # default scale is dim_head ** -0.5
    return out.transpose(1, 2).reshape(batch, q_tokens, inner)
