"""IP-Adapter-plus image projection: the Perceiver `Resampler` that turns CLIP features into image tokens.

X-Dyna conditions every `attn2` on 16 image tokens made by this module from the reference image's CLIP
ViT-H/14 penultimate hidden states (257 x 1280). Its weights are `ip-adapter-plus_sd15.bin["image_proj"]`,
unchanged; the matching k/v projections live in the X-Dyna UNet checkpoint (fine-tuned there), so only the
projection is taken from the IP-Adapter file. Keys here are exactly those of the release.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .checkpoints import XDynaCheckpointError, read_weights_file

StateDict = dict[str, torch.Tensor]
PLUS_FILE_HINT = "ip-adapter-plus_sd15.bin from Hugging Face h94/IP-Adapter (models/)"


class IPAdapterFormatError(XDynaCheckpointError):
    """An IP-Adapter file that is not IP-Adapter-plus (or not an IP-Adapter at all)."""


class PerceiverAttention(nn.Module):
    """Latent queries attend to [image features; latents], as in IP-Adapter's resampler.

    Args:
        dim: width of latents and projected image features.
        dim_head: width of one head.
        heads: number of heads.
    """

    def __init__(self, dim: int, dim_head: int = 64, heads: int = 8) -> None:
        super().__init__()
        self.dim_head = dim_head
        self.heads = heads
        inner = dim_head * heads
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], t.shape[1], self.heads, self.dim_head).transpose(1, 2)

    def forward(self, features: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        features = self.norm1(features)
        latents = self.norm2(latents)
        q = self._split_heads(self.to_q(latents))
        # Keys/values see the image features followed by the latents themselves (Flamingo's perceiver).
        k, v = (self._split_heads(t) for t in self.to_kv(torch.cat([features, latents], dim=1)).chunk(2, dim=-1))
        # As released: dim_head^-1/4 on q and on k separately (steadier in fp16 than scaling the product),
        # softmax in fp32. We keep this rather than a fused kernel so fp16 results match the release.
        scale = 1.0 / math.sqrt(math.sqrt(self.dim_head))
        weights = (q * scale) @ (k * scale).transpose(-2, -1)
        weights = torch.softmax(weights.float(), dim=-1).to(weights.dtype)
        out = (weights @ v).transpose(1, 2).reshape(latents.shape[0], latents.shape[1], -1)
        return self.to_out(out)


def _feed_forward(dim: int, mult: int) -> nn.Sequential:
    """LayerNorm, Linear, GELU, Linear without biases: indices 0..3 are the released key names."""
    return nn.Sequential(
        nn.LayerNorm(dim), nn.Linear(dim, dim * mult, bias=False), nn.GELU(), nn.Linear(dim * mult, dim, bias=False)
    )


class Resampler(nn.Module):
    """IP-Adapter-plus' Perceiver resampler: `num_queries` learnt latents read the image features.

    Defaults are X-Dyna's (`ip-adapter-plus_sd15.bin`): 16 tokens of width 768 from 1280-wide CLIP features.

    Args:
        dim: internal width.
        depth: (attention, feed-forward) layers.
        dim_head: width of one attention head.
        heads: attention heads.
        num_queries: output tokens.
        embedding_dim: width of the image features in (CLIP ViT-H/14 hidden size).
        output_dim: width of the tokens out (the UNet's cross-attention width).
        ff_mult: feed-forward expansion.
    """

    def __init__(
        self,
        dim: int = 768,
        depth: int = 4,
        dim_head: int = 64,
        heads: int = 12,
        num_queries: int = 16,
        embedding_dim: int = 1280,
        output_dim: int = 768,
        ff_mult: int = 4,
    ) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(1, num_queries, dim) / dim**0.5)
        self.proj_in = nn.Linear(embedding_dim, dim)
        self.proj_out = nn.Linear(dim, output_dim)
        self.norm_out = nn.LayerNorm(output_dim)
        self.layers = nn.ModuleList(
            [
                nn.ModuleList([PerceiverAttention(dim, dim_head, heads), _feed_forward(dim, ff_mult)])
                for _ in range(depth)
            ]
        )

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor], dim_head: int = 64) -> Resampler:
        """A Resampler sized from `sd` (the `image_proj` tensors) with them loaded strictly.

        `dim_head` is not recorded in the weights (only heads x dim_head is); 64 is IP-Adapter-plus's value.
        """
        try:
            _, num_queries, dim = sd["latents"].shape
            embedding_dim = sd["proj_in.weight"].shape[1]
            output_dim = sd["proj_out.weight"].shape[0]
            inner = sd["layers.0.0.to_q.weight"].shape[0]
            ff_inner = sd["layers.0.1.1.weight"].shape[0]
        except (KeyError, ValueError) as e:
            raise ValueError(f"not an IP-Adapter-plus Resampler state dict (cannot read {e})") from None
        depth = len({m[1] for k in sd if (m := re.match(r"^layers\.(\d+)\.0\.to_q\.weight$", k))})
        if inner % dim_head or ff_inner % dim:
            raise ValueError(
                f"Resampler widths do not fit: attention width {inner} vs dim_head {dim_head}, feed-forward {ff_inner} vs dim {dim}"
            )
        with torch.device(sd["latents"].device):  # built where the tensors are: meta tensors give a meta module
            module = cls(
                dim, depth, dim_head, inner // dim_head, num_queries, embedding_dim, output_dim, ff_inner // dim
            )
        module.to(dtype=sd["latents"].dtype)
        module.load_state_dict(sd, strict=True)
        return module

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        """`[batch, tokens, embedding_dim]` CLIP hidden states → `[batch, num_queries, output_dim]` image tokens."""
        latents = self.latents.expand(image_features.shape[0], -1, -1)
        x = self.proj_in(image_features)
        for attention, ff in self.layers:
            latents = attention(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))


def image_proj_state_dict(obj: Mapping[str, object], source: str = "<state dict>") -> StateDict:
    """The `image_proj` tensors from a `.bin` bundle `{"image_proj", "ip_adapter"}` or a flat dict with
    `image_proj.`-prefixed keys (the usual `.safetensors` conversion)."""
    if isinstance(obj.get("image_proj"), Mapping):
        proj = dict(obj["image_proj"])
    else:
        proj = {k.removeprefix("image_proj."): v for k, v in obj.items() if k.startswith("image_proj.")}
    if not proj:
        raise IPAdapterFormatError(
            source,
            f"no 'image_proj' weights found (keys look like {list(obj)[:3]}): this is not an IP-Adapter file. Use {PLUS_FILE_HINT}.",
        )
    if "latents" not in proj:
        if "proj.weight" in proj or "proj.0.weight" in proj:
            raise IPAdapterFormatError(
                source,
                "this is a base IP-Adapter (a linear/MLP image projection, 4 image tokens), not IP-Adapter-plus: "
                f"X-Dyna was trained with the plus Resampler (16 tokens). Use {PLUS_FILE_HINT}.",
            )
        raise IPAdapterFormatError(
            source, f"'image_proj' is not a Resampler (keys {sorted(proj)[:4]}). Use {PLUS_FILE_HINT}."
        )
    unsupported = [k for k in proj if k.startswith(("pos_emb.", "to_latents_from_mean_pooled_seq."))]
    if unsupported:
        raise IPAdapterFormatError(
            source, f"this Resampler variant ({unsupported[0]!r}) is not IP-Adapter-plus SD1.5's. Use {PLUS_FILE_HINT}."
        )
    bad = [k for k, v in proj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise IPAdapterFormatError(source, f"'image_proj' entry {bad[0]!r} is not a tensor")
    return proj


def load_ip_adapter_plus(
    obj: Mapping[str, object] | str | os.PathLike, dim_head: int = 64, source: str | None = None
) -> Resampler:
    """The IP-Adapter-plus Resampler from a weight file or its loaded contents, in eval mode, in float32.

    The released `ip-adapter-plus_sd15.bin` is stored in fp16; the Resampler runs once per reference, on the
    CPU, so it computes in float32 whatever the file holds.

    Args:
        obj: a path (`.bin` or `.safetensors`), the `.bin`'s `{"image_proj": ..., "ip_adapter": ...}` dict, or a
            flat dict with `image_proj.` keys.
        dim_head: head width (64 for IP-Adapter-plus; not recorded in the weights).
        source: the file's name for error messages (defaults to the path when `obj` is one).
    """
    if isinstance(obj, (str, os.PathLike)):
        source = source or str(obj)
        obj = read_weights_file(Path(obj))
    source = source or "<state dict>"
    if not isinstance(obj, Mapping):
        raise IPAdapterFormatError(source, f"expected a dict of weights, found {type(obj).__name__}")
    proj = image_proj_state_dict(obj, source)
    try:
        return Resampler.from_state_dict(proj, dim_head=dim_head).float().eval()
    except (ValueError, RuntimeError) as e:  # RuntimeError: load_state_dict's missing/unexpected keys
        raise IPAdapterFormatError(source, f"the Resampler weights are incomplete or inconsistent: {e}") from None
