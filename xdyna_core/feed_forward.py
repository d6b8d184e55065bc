"""Feed-forward layers run a block of tokens at a time: the same result in a bounded part of the memory.

A transformer's feed-forward acts on every token by itself, so its tokens can be taken in blocks and the
results written side by side. Taken whole it is the largest activation of an X-Dyna UNet call: at 512×896
(a 64×112 latent) with both CFG branches batched (34 frames) a full-resolution block's GEGLU projects
243,712 tokens to 2,560 values (1.2 GB in fp16) and holds its gated half and their product besides, some
2.3 GiB at once; in the temporal transformers of the motion modules it is the same. Run in blocks whose
widest activation stays within `FEED_FORWARD_CHUNK_BYTES`, the layer needs a fraction of that plus its output.

Every output row is computed from its input row by the same layers, so the result is the unchunked one up to
the matrix library's choice of kernel for the block's row count (rounding only).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# The widest activation of one block of tokens (the GEGLU projection) is kept within this many bytes.
FEED_FORWARD_CHUNK_BYTES = 256 * 2**20


def rows_per_chunk(width: int, element_size: int, budget: int) -> int:
    """How many tokens a block may hold so that `width` values of `element_size` bytes each fit in `budget`."""
    if width < 1 or element_size < 1:
        raise ValueError(f"a feed-forward needs a positive width and element size, got {width} and {element_size}")
    return max(1, budget // (width * element_size))


def chunked_rows(
    layer: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, width: int, budget: int | None = None
) -> torch.Tensor:
    """`layer(x)` for a token-wise `layer` (each row of the last dimension mapped by itself), a block of rows at
    a time so that its widest activation (`width` values a row, in `x`'s dtype) stays within `budget` bytes
    (`FEED_FORWARD_CHUNK_BYTES` when None). Inputs that fit in one block are passed through whole."""
    budget = FEED_FORWARD_CHUNK_BYTES if budget is None else budget
    step = rows_per_chunk(width, x.element_size(), budget)
    rows = x.reshape(-1, x.shape[-1])
    if rows.shape[0] <= step:
        return layer(x)
    out = None
    for start in range(0, rows.shape[0], step):
        part = layer(rows[start : start + step])
        if out is None:
            out = part.new_empty((rows.shape[0], part.shape[-1]))
        out[start : start + step] = part
        del part
    return out.reshape(*x.shape[:-1], out.shape[-1])
