"""The UNet's transformer feed-forwards on an X-Dyna MODEL, run a block of tokens at a time (xdyna_core/feed_forward.py).

ComfyUI's transformer block calls `ff(norm3(x))` on every token of the call at once, which at full resolution
is the largest activation of an X-Dyna UNet call. The X-Dyna patch replaces each `ff` (an object patch) with a
`ChunkedFeedForward` that holds the same `net` under the same name, so `ff.net.0.proj.weight` still names the
same layer: ComfyUI's weight patches (LoRAs), dtype casting and lowvram offloading act on it as before.
"""

from __future__ import annotations

import comfy.ldm.modules.attention as comfy_attention
import torch
from torch import nn

from ..xdyna_core.feed_forward import chunked_rows


class ChunkedFeedForward(nn.Module):
    """A feed-forward (`net`: its layers, under the original name) evaluated in blocks of tokens."""

    def __init__(self, original: nn.Module) -> None:
        super().__init__()
        self.net = original.net
        widths = [m.out_features for m in self.net.modules() if isinstance(m, nn.Linear)]
        if not widths:
            raise ValueError(f"a feed-forward without linear layers cannot be chunked: {type(original).__name__}")
        self.width = max(widths)  # the GEGLU projection: the widest activation of one token
        self.train(original.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return chunked_rows(self.net, x, self.width)


def chunked_feed_forward(original: nn.Module) -> ChunkedFeedForward:
    """`original` in blocks of tokens (an already chunked one as it is, so re-patching never nests)."""
    return original if isinstance(original, ChunkedFeedForward) else ChunkedFeedForward(original)


def feed_forward_keys(unet: nn.Module) -> list[str]:
    """ModelPatcher keys of the UNet's transformer feed-forwards (chunked ones included)."""
    kinds = (comfy_attention.FeedForward, ChunkedFeedForward)
    return [f"diffusion_model.{name}" for name, module in list(unet.named_modules()) if isinstance(module, kinds)]
