"""AnimateDiff-v1 motion module (X-Dyna's temporal layers), in the released checkpoint's key layout.

X-Dyna keeps AnimateDiff's "Vanilla" motion module unchanged: 20 of them sit after the ResNet/transformer
pairs of the UNet's down and up blocks. Each one attends over frames only: every spatial location of a
feature map is a separate sequence of F tokens. `MotionModule.state_dict()` has exactly the keys that follow
`down_blocks.i.motion_modules.j.` in `unet-checkpoint-epoch-5.ckpt`, so the official tensors load strictly.

X-Dyna runs the modules on the F window frames only and passes the reference frame 0 through unchanged
(the release's `cross_id`); that slicing belongs to the caller, this module sees the frames it should mix.

Layers are made from an `operations` namespace (`Linear`, `LayerNorm`, `GroupNorm`), `torch.nn` by default,
as ComfyUI's own models are: the ComfyUI glue passes layers that cast their weights to the input's dtype and
device per call, so the modules compute in whatever precision the UNet computes in and run with their
weights left on the offload device (lowvram). The buffers (`pos_encoder.pe`) follow the input likewise.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .attention import AttentionFn, sdpa_attention
from .feed_forward import chunked_rows

Operations = Any  # a namespace with Linear, LayerNorm and GroupNorm classes: torch.nn, or comfy.ops.*

# Some attention kernels put batch * heads on a CUDA grid axis limited to 65535 blocks. A motion module's
# batch is every spatial location of every clip (a 896x512 window at the first level: 2 x 112 x 64 = 14336
# sequences x 8 heads), which crashes there; the release needs "chunk it" on some stacks. Splitting the
# independent sequences changes nothing numerically.
CUDA_GRID_LIMIT = 65535

_ATTN_KEY = re.compile(r"^temporal_transformer\.transformer_blocks\.(\d+)\.attention_blocks\.(\d+)\.to_q\.weight$")


def sinusoidal_position_encoding(length: int, channels: int) -> torch.Tensor:
    """The `[1, length, channels]` sine/cosine table AnimateDiff initialises `pos_encoder.pe` with.

    The released checkpoints store this table, and loading replaces it; it only matters for a fresh module.
    """
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, channels, 2, dtype=torch.float32) * (-math.log(10000.0) / channels))
    pe = torch.zeros(1, length, channels)
    pe[0, :, 0::2] = torch.sin(position * freq)
    pe[0, :, 1::2] = torch.cos(position * freq[: channels // 2])
    return pe


class PositionalEncoding(nn.Module):
    """Holds the `pe` table; a module of its own so the key reads `pos_encoder.pe` as released."""

    def __init__(self, channels: int, max_len: int = 24) -> None:
        super().__init__()
        self.register_buffer("pe", sinusoidal_position_encoding(max_len, channels))

    @property
    def max_len(self) -> int:
        return self.pe.shape[1]


class TemporalSelfAttention(nn.Module):
    """One temporal self-attention ("Temporal_Self"): positions added, then attention across frames.

    Args:
        dim: token width.
        heads: number of attention heads (8 in AnimateDiff and X-Dyna; not recorded in the weights).
        pe_length: rows of the position table, the longest window the module accepts (24 as released).
        operations: where the layers come from (`torch.nn` or a ComfyUI ops namespace).
    """

    def __init__(self, dim: int, heads: int = 8, pe_length: int = 24, operations: Operations = nn) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"motion module width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.to_q = operations.Linear(dim, dim, bias=False)
        self.to_k = operations.Linear(dim, dim, bias=False)
        self.to_v = operations.Linear(dim, dim, bias=False)
        self.to_out = nn.ModuleList([operations.Linear(dim, dim)])  # diffusers' to_out.0 (to_out.1 is a dropout)
        self.pos_encoder = PositionalEncoding(dim, pe_length)

    def forward(
        self, x: torch.Tensor, num_frames: int, attention: AttentionFn, chunk_size: int | None = None
    ) -> torch.Tensor:
        """`x` is the normed `[(b f), tokens, dim]`; returns the attention output in the same layout."""
        bf, tokens, dim = x.shape
        seqs = x.reshape(bf // num_frames, num_frames, tokens, dim).transpose(1, 2).reshape(-1, num_frames, dim)
        # As released, the position is added to the normed input itself, so q, k and v all carry it.
        seqs = seqs + self.pos_encoder.pe[:, :num_frames].to(device=seqs.device, dtype=seqs.dtype)
        q, k, v = self.to_q(seqs), self.to_k(seqs), self.to_v(seqs)
        chunk = chunk_size or max(1, CUDA_GRID_LIMIT // self.heads)
        if chunk >= q.shape[0]:
            out = attention(q, k, v, self.heads)
        else:
            out = torch.cat(
                [
                    attention(q[i : i + chunk], k[i : i + chunk], v[i : i + chunk], self.heads)
                    for i in range(0, q.shape[0], chunk)
                ]
            )
        out = self.to_out[0](out)
        return out.reshape(bf // num_frames, tokens, num_frames, dim).transpose(1, 2).reshape(bf, tokens, dim)


class GEGLU(nn.Module):
    """Gated GELU projection as in diffusers: the first half of `proj`'s output is the value, the second the gate."""

    def __init__(self, dim: int, inner_dim: int, operations: Operations = nn) -> None:
        super().__init__()
        self.proj = operations.Linear(dim, 2 * inner_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)  # exact (erf) GELU, as diffusers uses


class FeedForward(nn.Module):
    """GEGLU feed-forward; `net` mirrors diffusers' (GEGLU, Dropout, Linear) so keys read `net.0.proj`, `net.2`."""

    def __init__(self, dim: int, inner_dim: int, operations: Operations = nn) -> None:
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, inner_dim, operations), nn.Identity(), operations.Linear(inner_dim, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # token-wise: run in blocks of tokens whose GEGLU projection stays within the feed-forward budget
        return chunked_rows(self._tokens, x, self.net[0].proj.out_features)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class TemporalTransformerBlock(nn.Module):
    """Pre-norm residual temporal attentions, then a pre-norm residual GEGLU feed-forward.

    Args:
        dim: token width.
        heads: attention heads.
        num_attention_blocks: temporal self-attentions in sequence (2 as released).
        pe_length: rows of each attention's position table.
        ff_inner_dim: hidden width of the feed-forward (4 x dim as released).
        operations: where the layers come from.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        num_attention_blocks: int,
        pe_length: int,
        ff_inner_dim: int,
        operations: Operations = nn,
    ) -> None:
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            [TemporalSelfAttention(dim, heads, pe_length, operations) for _ in range(num_attention_blocks)]
        )
        self.norms = nn.ModuleList([operations.LayerNorm(dim) for _ in range(num_attention_blocks)])
        self.ff = FeedForward(dim, ff_inner_dim, operations)
        self.ff_norm = operations.LayerNorm(dim)

    def forward(
        self, x: torch.Tensor, num_frames: int, attention: AttentionFn, chunk_size: int | None = None
    ) -> torch.Tensor:
        for block, norm in zip(self.attention_blocks, self.norms):
            x = block(norm(x), num_frames, attention, chunk_size) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer3DModel(nn.Module):
    """GroupNorm, linear in, temporal transformer blocks, linear out, plus the input (a residual module).

    Args:
        channels: feature channels of the UNet level.
        heads: attention heads.
        num_transformer_blocks: blocks in sequence (X-Dyna's config: 1).
        num_attention_blocks: temporal self-attentions per block (2).
        pe_length: position table rows (24).
        ff_inner_dim: feed-forward hidden width (4 x channels).
        norm_groups: GroupNorm groups (32).
        operations: where the layers come from.
    """

    def __init__(
        self,
        channels: int,
        heads: int = 8,
        num_transformer_blocks: int = 1,
        num_attention_blocks: int = 2,
        pe_length: int = 24,
        ff_inner_dim: int | None = None,
        norm_groups: int = 32,
        operations: Operations = nn,
    ) -> None:
        super().__init__()
        if channels % norm_groups:
            raise ValueError(f"motion module width {channels} is not divisible into {norm_groups} GroupNorm groups")
        # eps 1e-6 as released (the LayerNorms keep PyTorch's default 1e-5).
        self.norm = operations.GroupNorm(norm_groups, channels, eps=1e-6, affine=True)
        self.proj_in = operations.Linear(channels, channels)
        inner = ff_inner_dim or 4 * channels
        self.transformer_blocks = nn.ModuleList(
            [
                TemporalTransformerBlock(channels, heads, num_attention_blocks, pe_length, inner, operations)
                for _ in range(num_transformer_blocks)
            ]
        )
        self.proj_out = operations.Linear(channels, channels)

    def forward(
        self, x: torch.Tensor, num_frames: int, attention: AttentionFn, chunk_size: int | None = None
    ) -> torch.Tensor:
        bf, channels, height, width = x.shape
        # GroupNorm per frame: the frames are separate samples of the (b f) batch, as in the release.
        h = self.norm(x).permute(0, 2, 3, 1).reshape(bf, height * width, channels)
        h = self.proj_in(h)
        for block in self.transformer_blocks:
            h = block(h, num_frames, attention, chunk_size)
        h = self.proj_out(h)
        return h.reshape(bf, height, width, channels).permute(0, 3, 1, 2) + x


class MotionModule(nn.Module):
    """AnimateDiff-v1 "VanillaTemporalModule": mixes features across the frames of each clip.

    Build it from a checkpoint's tensors with `MotionModule.from_state_dict(sd)`, where `sd` holds the keys
    after `down_blocks.i.motion_modules.j.`; widths, block counts and the position table length come from
    the tensors.

    Args:
        channels: feature channels of the UNet level it sits in.
        heads: attention heads (8 in the release; the weights do not record it).
        num_transformer_blocks: temporal transformer blocks (1 in X-Dyna's config).
        num_attention_blocks: temporal self-attentions per block (2).
        pe_length: the longest window, in frames, the module can position-encode (24).
        ff_inner_dim: feed-forward hidden width (4 x channels).
        norm_groups: GroupNorm groups (32).
        operations: where the layers come from (`torch.nn`, or ComfyUI ops that cast per layer).
    """

    def __init__(
        self,
        channels: int,
        heads: int = 8,
        num_transformer_blocks: int = 1,
        num_attention_blocks: int = 2,
        pe_length: int = 24,
        ff_inner_dim: int | None = None,
        norm_groups: int = 32,
        operations: Operations = nn,
    ) -> None:
        super().__init__()
        self.temporal_transformer = TemporalTransformer3DModel(
            channels,
            heads,
            num_transformer_blocks,
            num_attention_blocks,
            pe_length,
            ff_inner_dim,
            norm_groups,
            operations,
        )

    @classmethod
    def from_state_dict(
        cls,
        sd: Mapping[str, torch.Tensor],
        heads: int = 8,
        norm_groups: int = 32,
        operations: Operations = nn,
    ) -> MotionModule:
        """A module shaped after `sd` (one motion module's keys) holding those tensors, loaded strictly.

        The module's parameters are `sd`'s tensors themselves (assigned, not copied), in their dtype.
        """
        try:
            channels = sd["temporal_transformer.norm.weight"].shape[0]
            prefix = "temporal_transformer.transformer_blocks.0"
            pe_length = sd[f"{prefix}.attention_blocks.0.pos_encoder.pe"].shape[1]
            ff_inner_dim = sd[f"{prefix}.ff.net.2.weight"].shape[1]
        except KeyError as e:
            raise ValueError(f"not an AnimateDiff-v1 motion module state dict: key {e.args[0]!r} is missing") from None
        blocks: dict[int, set[int]] = {}
        for key in sd:
            if m := _ATTN_KEY.match(key):
                blocks.setdefault(int(m[1]), set()).add(int(m[2]))
        num_blocks = len(blocks)
        num_attn = len(blocks[0])
        if sorted(blocks) != list(range(num_blocks)) or any(v != set(range(num_attn)) for v in blocks.values()):
            raise ValueError(f"motion module attention blocks are not numbered consistently: {sorted(blocks.items())}")
        with torch.device("meta"):  # no memory for weights that the checkpoint's tensors replace
            module = cls(channels, heads, num_blocks, num_attn, pe_length, ff_inner_dim, norm_groups, operations)
        module.load_state_dict(sd, strict=True, assign=True)
        return module

    @property
    def pe_length(self) -> int:
        return self.temporal_transformer.transformer_blocks[0].attention_blocks[0].pos_encoder.max_len

    def forward(
        self,
        x: torch.Tensor,
        num_frames: int,
        attention: AttentionFn | None = None,
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        """Mix `x` `[batch * frames, C, H, W]` (frames contiguous per clip) across frames; same shape out.

        Args:
            x: features of `batch` clips of `num_frames` frames each, in (b f) order.
            num_frames: frames per clip; at most the position table length (24).
            attention: `attention(q, k, v, heads)`; plain SDPA when None.
            chunk_size: at most this many spatial-location sequences per attention call; by default enough
                to keep `sequences x heads` within the CUDA grid limit. The result does not depend on it.
        """
        if x.ndim != 4:
            raise ValueError(f"motion module input must be [batch*frames, C, H, W], got shape {tuple(x.shape)}")
        if num_frames < 1 or num_frames > self.pe_length:
            raise ValueError(
                f"the motion module encodes at most {self.pe_length} frames (its position table length), "
                f"got a window of {num_frames}; use shorter context windows"
            )
        if x.shape[0] % num_frames:
            raise ValueError(f"batch {x.shape[0]} is not a whole number of clips of {num_frames} frames")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        return self.temporal_transformer(x, num_frames, attention or sdpa_attention, chunk_size)
