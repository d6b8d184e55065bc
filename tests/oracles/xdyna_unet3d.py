"""One X-Dyna UNet3D evaluation, re-stated functionally from docs/xdyna_model.md §3 and the SD1.5 UNet.

This is a test oracle. It works directly on the official diffusers-key state dict (the 686 SD1.5 UNet keys plus
the Dynamics-Adapter, IP-Adapter k/v and AnimateDiff-v1 motion-module keys) with plain ``torch.nn.functional``
calls and an explicit softmax attention. It imports nothing from the pack or from ComfyUI, so it can judge the
pack's implementation, which patches ComfyUI's UNet instead.

Features are kept in "frame batch" layout ``[B * T, C, H, W]``: B CFG branches, T frames per branch, branch
major. For X-Dyna, T = F + 1 and frame 0 of each branch is the clean reference latent. Sizes (widths, number of
blocks, layers per block) are read from the tensors, never assumed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

StateDict = Mapping[str, Tensor]

GROUPS = 32  # every GroupNorm of the SD1.5 UNet and of the motion modules has 32 groups
RESNET_NORM_EPS = 1e-5  # ResNet norm1/norm2 and conv_norm_out (diffusers SD1.5 config: norm_eps 1e-5)
TRANSFORMER_NORM_EPS = 1e-6  # spatial transformer input GroupNorm (Transformer2DModel: eps 1e-6)
MOTION_NORM_EPS = 1e-6  # AnimateDiff-v1 TemporalTransformer3DModel input GroupNorm (eps 1e-6)
LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default, used by every LayerNorm here


@dataclass(frozen=True)
class _Switches:
    """Which X-Dyna components take part in the evaluation (all False: plain per-frame SD1.5)."""

    adapter: bool = False
    ip: bool = False
    motion: bool = False
    joint_group_norm: bool = False
    adapter_scale: float = 1.0
    ip_scale: float = 1.0
    heads: int = 8


@dataclass(frozen=True)
class _Conditioning:
    """Everything a block needs besides its input features, one row per item of the frame batch."""

    frames: int  # T: frames per branch; the frame batch is [B * T, ...], branch major
    temb: Tensor  # [B * T, D] time embedding (the same within a branch)
    text: Tensor  # [B * T, 77, D] text context
    image: Tensor | None  # [B * T, 16, D] IP-Adapter image tokens (None when IP is off)
    switches: _Switches


# --------------------------------------------------------------------------------------------------- primitives


def linear(sd: StateDict, prefix: str, x: Tensor) -> Tensor:
    """nn.Linear: ``x @ W^T + b``; the bias is optional (to_q/to_k/to_v and the adapter/IP projections have none)."""
    return F.linear(x, sd[f"{prefix}.weight"], sd.get(f"{prefix}.bias"))


def conv(sd: StateDict, prefix: str, x: Tensor, stride: int = 1) -> Tensor:
    """nn.Conv2d with 'same' padding (k // 2): the UNet's 3x3 convs use padding 1, its 1x1 convs padding 0."""
    weight = sd[f"{prefix}.weight"]
    return F.conv2d(x, weight, sd[f"{prefix}.bias"], stride=stride, padding=weight.shape[-1] // 2)


def layer_norm(sd: StateDict, prefix: str, x: Tensor) -> Tensor:
    """nn.LayerNorm over the channel (last) dimension, eps 1e-5, with affine weight and bias."""
    weight = sd[f"{prefix}.weight"]
    return F.layer_norm(x, weight.shape, weight, sd[f"{prefix}.bias"], LAYER_NORM_EPS)


def group_norm(sd: StateDict, prefix: str, x: Tensor, frames: int, joint: bool, eps: float) -> Tensor:
    """GroupNorm(32) of frame-batch features ``[B * T, C, H, W]``.

    Per frame (``joint=False``, plain SD1.5): statistics over (channels in the group, H, W) of each frame.
    Joint (``joint=True``, X-Dyna's ResNet norms and conv_norm_out): statistics over (channels in the group, all
    T frames of the branch, H, W), i.e. torch's GroupNorm applied to the 5-D ``[B, C, T, H, W]`` video tensor.
    """
    weight, bias = sd[f"{prefix}.weight"], sd[f"{prefix}.bias"]
    if not joint:
        return F.group_norm(x, GROUPS, weight, bias, eps)
    bt, c, h, w = x.shape
    video = x.reshape(bt // frames, frames, c, h, w).transpose(1, 2)  # [B, C, T, H, W]
    video = F.group_norm(video, GROUPS, weight, bias, eps)
    return video.transpose(1, 2).reshape(bt, c, h, w)


def attention(q: Tensor, k: Tensor, v: Tensor, heads: int) -> Tensor:
    """Multi-head scaled dot-product attention: ``softmax(q k^T / sqrt(d)) v`` per head, d = C / heads.

    ``q``: [N, Lq, C]; ``k``, ``v``: [N, Lk, C]. Channels are split into ``heads`` contiguous groups of d
    (diffusers' head_to_batch_dim), and the heads' outputs are concatenated back in the same order.
    """
    n, lq, c = q.shape
    d = c // heads

    def split(t: Tensor) -> Tensor:
        return t.reshape(n, t.shape[1], heads, d).transpose(1, 2)  # [N, heads, L, d]

    scores = split(q) @ split(k).transpose(-1, -2) * d**-0.5
    out = scores.softmax(dim=-1) @ split(v)
    return out.transpose(1, 2).reshape(n, lq, c)


def geglu_feed_forward(sd: StateDict, prefix: str, x: Tensor) -> Tensor:
    """diffusers FeedForward with GEGLU: ``net.0.proj`` makes 2 * inner channels, split into (hidden, gate) in
    that order (first half hidden, second half gate); ``hidden * gelu(gate)`` (exact erf GELU) -> ``net.2``."""
    hidden, gate = linear(sd, f"{prefix}.net.0.proj", x).chunk(2, dim=-1)
    return linear(sd, f"{prefix}.net.2", hidden * F.gelu(gate))


def timestep_embedding(timesteps: Tensor, dim: int) -> Tensor:
    """SD1.5's sinusoidal timestep features (diffusers ``Timesteps(dim, flip_sin_to_cos=True, shift=0)``).

    Frequencies ``exp(-ln(10000) * i / (dim / 2))`` for i < dim / 2; the features are ``[cos(t f), sin(t f)]``
    (cosines first). Computed in float32, as diffusers does.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    angles = timesteps.to(torch.float32)[:, None] * freqs[None, :].to(timesteps.device)
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    return F.pad(emb, (0, dim % 2))


def time_embedding(sd: StateDict, timesteps: Tensor, dtype: torch.dtype) -> Tensor:
    """``time_embedding.linear_2(SiLU(time_embedding.linear_1(sinusoid(t))))``; sinusoid width = conv_in width."""
    width = sd["time_embedding.linear_1.weight"].shape[1]
    features = timestep_embedding(timesteps, width).to(dtype)
    return linear(sd, "time_embedding.linear_2", F.silu(linear(sd, "time_embedding.linear_1", features)))


# --------------------------------------------------------------------------------------------------------- blocks


def resnet(sd: StateDict, prefix: str, x: Tensor, cond: _Conditioning) -> Tensor:
    """SD1.5 ResnetBlock2D (output scale factor 1, no dropout at inference):

    ``h = conv1(SiLU(norm1(x))) + time_emb_proj(SiLU(temb))`` (broadcast over H, W);
    ``h = conv2(SiLU(norm2(h)))``; output ``shortcut(x) + h`` with a 1x1 ``conv_shortcut`` when the width changes.
    Both GroupNorms use eps 1e-5; in X-Dyna they are joint over the branch's frames.
    """
    joint = cond.switches.joint_group_norm
    h = F.silu(group_norm(sd, f"{prefix}.norm1", x, cond.frames, joint, RESNET_NORM_EPS))
    h = conv(sd, f"{prefix}.conv1", h)
    h = h + linear(sd, f"{prefix}.time_emb_proj", F.silu(cond.temb))[:, :, None, None]
    h = F.silu(group_norm(sd, f"{prefix}.norm2", h, cond.frames, joint, RESNET_NORM_EPS))
    h = conv(sd, f"{prefix}.conv2", h)
    shortcut = conv(sd, f"{prefix}.conv_shortcut", x) if f"{prefix}.conv_shortcut.weight" in sd else x
    return shortcut + h


def self_attention(sd: StateDict, prefix: str, h: Tensor, cond: _Conditioning) -> Tensor:
    """``attn1`` on the LayerNormed tokens ``h`` [B * T, L, C], with X-Dyna's Dynamics-Adapter (docs/xdyna_model.md §3.1):

    ``to_out(Attn(to_q h_f, to_k h_f, to_v h_f)) + scale * to_out_ff(Attn(to_q_ff h_f, to_k h_0, to_v h_0))``,
    where ``h_0`` is the reference frame's (frame 0 of the same branch) normed tokens and to_k / to_v are the
    block's own. The second attention is separate and its output added; frame 0 gets the term too.
    """
    sw = cond.switches
    own = attention(
        linear(sd, f"{prefix}.to_q", h), linear(sd, f"{prefix}.to_k", h), linear(sd, f"{prefix}.to_v", h), sw.heads
    )
    out = linear(sd, f"{prefix}.to_out.0", own)
    if sw.adapter:
        bt, length, c = h.shape
        first = h.reshape(bt // cond.frames, cond.frames, length, c)[:, :1]  # [B, 1, L, C]
        h0 = first.expand(-1, cond.frames, -1, -1).reshape(bt, length, c)  # each frame sees its branch's frame 0
        ref = attention(
            linear(sd, f"{prefix}.to_q_ff", h),
            linear(sd, f"{prefix}.to_k", h0),
            linear(sd, f"{prefix}.to_v", h0),
            sw.heads,
        )
        out = out + sw.adapter_scale * linear(sd, f"{prefix}.to_out_ff", ref)
    return out


def cross_attention(sd: StateDict, prefix: str, h: Tensor, cond: _Conditioning) -> Tensor:
    """``attn2`` on the LayerNormed tokens ``h``, with IP-Adapter (docs/xdyna_model.md §3.2): the text attention and the image
    attention share the query and are summed before ``to_out``:
    ``to_out(Attn(q, to_k text, to_v text) + scale * Attn(q, to_k_ip img, to_v_ip img))``."""
    heads = cond.switches.heads
    q = linear(sd, f"{prefix}.to_q", h)
    mixed = attention(q, linear(sd, f"{prefix}.to_k", cond.text), linear(sd, f"{prefix}.to_v", cond.text), heads)
    if cond.switches.ip:
        k_ip, v_ip = linear(sd, f"{prefix}.to_k_ip", cond.image), linear(sd, f"{prefix}.to_v_ip", cond.image)
        mixed = mixed + cond.switches.ip_scale * attention(q, k_ip, v_ip, heads)
    return linear(sd, f"{prefix}.to_out.0", mixed)


def spatial_transformer(sd: StateDict, prefix: str, x: Tensor, cond: _Conditioning) -> Tensor:
    """SD1.5 Transformer2DModel with one BasicTransformerBlock, per frame:

    GroupNorm(32, eps 1e-6) -> 1x1 conv ``proj_in`` -> tokens [H * W, C] ->
    ``t += attn1(norm1 t)``; ``t += attn2(norm2 t, context)``; ``t += ff(norm3 t)`` (GEGLU) ->
    1x1 conv ``proj_out`` -> ``+ x``.
    """
    bt, c, height, width = x.shape
    h = group_norm(sd, f"{prefix}.norm", x, cond.frames, joint=False, eps=TRANSFORMER_NORM_EPS)
    h = conv(sd, f"{prefix}.proj_in", h)
    tokens = h.permute(0, 2, 3, 1).reshape(bt, height * width, c)
    block = f"{prefix}.transformer_blocks.0"
    tokens = tokens + self_attention(sd, f"{block}.attn1", layer_norm(sd, f"{block}.norm1", tokens), cond)
    tokens = tokens + cross_attention(sd, f"{block}.attn2", layer_norm(sd, f"{block}.norm2", tokens), cond)
    tokens = tokens + geglu_feed_forward(sd, f"{block}.ff", layer_norm(sd, f"{block}.norm3", tokens))
    h = tokens.reshape(bt, height, width, c).permute(0, 3, 1, 2)
    return conv(sd, f"{prefix}.proj_out", h) + x


def temporal_self_attention(sd: StateDict, prefix: str, tokens: Tensor, heads: int) -> Tensor:
    """AnimateDiff-v1 VersatileAttention ("Temporal_Self") on already LayerNormed ``tokens`` [N, F, C], where N
    runs over (branch, spatial position) and F over frames: add ``pos_encoder.pe[:, :F]``, then multi-head
    self-attention across frames (q, k and v all from the position-encoded tokens), then ``to_out``."""
    frames = tokens.shape[1]
    x = tokens + sd[f"{prefix}.pos_encoder.pe"][:, :frames]
    out = attention(
        linear(sd, f"{prefix}.to_q", x), linear(sd, f"{prefix}.to_k", x), linear(sd, f"{prefix}.to_v", x), heads
    )
    return linear(sd, f"{prefix}.to_out.0", out)


def motion_module(sd: StateDict, prefix: str, x: Tensor, cond: _Conditioning) -> Tensor:
    """AnimateDiff-v1 motion module (X-Dyna config: ``cross_id`` True, one block of two temporal attentions).

    Frame 0 (the reference) passes through unchanged; the other F = T - 1 frames of each branch go through:
    per-frame GroupNorm(32, eps 1e-6) -> Linear ``proj_in`` -> for each of the two attention blocks
    ``t += temporal_attn(norms.i(t))`` -> ``t += ff(ff_norm(t))`` (GEGLU) -> Linear ``proj_out`` -> ``+ input``.
    """
    bt, c, height, width = x.shape
    branches, frames = bt // cond.frames, cond.frames - 1
    if frames == 0:
        return x
    video = x.reshape(branches, cond.frames, c, height, width)
    reference, window = video[:, :1], video[:, 1:]
    t = f"{prefix}.temporal_transformer"
    flat = window.reshape(branches * frames, c, height, width)
    h = group_norm(sd, f"{t}.norm", flat, frames, joint=False, eps=MOTION_NORM_EPS)
    # tokens [B * H * W, F, C]: one temporal sequence per branch and spatial position
    h = h.reshape(branches, frames, c, height * width).permute(0, 3, 1, 2).reshape(-1, frames, c)
    h = linear(sd, f"{t}.proj_in", h)
    block = f"{t}.transformer_blocks.0"
    for i in range(2):
        normed = layer_norm(sd, f"{block}.norms.{i}", h)
        h = h + temporal_self_attention(sd, f"{block}.attention_blocks.{i}", normed, cond.switches.heads)
    h = h + geglu_feed_forward(sd, f"{block}.ff", layer_norm(sd, f"{block}.ff_norm", h))
    h = linear(sd, f"{t}.proj_out", h)
    h = h.reshape(branches, height, width, frames, c).permute(0, 3, 4, 1, 2)  # [B, F, C, H, W]
    return torch.cat([reference, window + h], dim=1).reshape(bt, c, height, width)


def downsample(sd: StateDict, prefix: str, x: Tensor) -> Tensor:
    """Downsample2D: 3x3 conv with stride 2 and padding 1."""
    return conv(sd, f"{prefix}.conv", x, stride=2)


def upsample(sd: StateDict, prefix: str, x: Tensor, size: tuple[int, int]) -> Tensor:
    """Upsample2D: nearest-neighbour resize (x2, or to the next skip feature's size when that is not x2) -> 3x3
    conv."""
    return conv(sd, f"{prefix}.conv", F.interpolate(x, size=size, mode="nearest"))


# ---------------------------------------------------------------------------------------------------------- UNet


def _count(sd: StateDict, prefix: str) -> int:
    """Number of numbered children ``{prefix}.{i}.…`` present in the state dict."""
    head = prefix + "."
    indices = {int(k[len(head) :].split(".", 1)[0]) for k in sd if k.startswith(head)}
    return max(indices) + 1 if indices else 0


def _has(sd: StateDict, prefix: str) -> bool:
    return any(k.startswith(prefix + ".") for k in sd)


def _unet(sd: StateDict, x: Tensor, cond: _Conditioning, control: dict | None) -> Tensor:
    """The UNet on frame-batch latents ``[B * T, 4, h, w]``; ``control`` (frame-batch layout) adds ControlNet
    residuals to the saved skip features (``down``) and to the mid-block output (``mid``), as SD1.5 does.

    Block order (diffusers / official unet_blocks.py): in a down block each layer is resnet -> attention (if any)
    -> motion module, and its output is saved as a skip feature; then the downsampler, whose output is saved too.
    The mid block is resnet -> attention -> resnet, without a motion module. An up block's layers each concatenate
    the last unused skip feature on channels ([features, skip]) -> resnet -> attention (if any) -> motion module;
    then the upsampler.
    """
    motion = cond.switches.motion
    h = conv(sd, "conv_in", x)
    skips = [h]
    for i in range(_count(sd, "down_blocks")):
        block = f"down_blocks.{i}"
        for j in range(_count(sd, f"{block}.resnets")):
            h = resnet(sd, f"{block}.resnets.{j}", h, cond)
            if _has(sd, f"{block}.attentions.{j}"):
                h = spatial_transformer(sd, f"{block}.attentions.{j}", h, cond)
            if motion:
                h = motion_module(sd, f"{block}.motion_modules.{j}", h, cond)
            skips.append(h)
        if _has(sd, f"{block}.downsamplers.0"):
            h = downsample(sd, f"{block}.downsamplers.0", h)
            skips.append(h)

    if control is not None:
        if len(control["down"]) != len(skips):
            raise ValueError(f"expected {len(skips)} down residuals, got {len(control['down'])}")
        skips = [s + r for s, r in zip(skips, control["down"])]

    h = resnet(sd, "mid_block.resnets.0", h, cond)
    h = spatial_transformer(sd, "mid_block.attentions.0", h, cond)
    h = resnet(sd, "mid_block.resnets.1", h, cond)
    if control is not None:
        h = h + control["mid"]

    for i in range(_count(sd, "up_blocks")):
        block = f"up_blocks.{i}"
        for j in range(_count(sd, f"{block}.resnets")):
            h = torch.cat([h, skips.pop()], dim=1)
            h = resnet(sd, f"{block}.resnets.{j}", h, cond)
            if _has(sd, f"{block}.attentions.{j}"):
                h = spatial_transformer(sd, f"{block}.attentions.{j}", h, cond)
            if motion:
                h = motion_module(sd, f"{block}.motion_modules.{j}", h, cond)
        if _has(sd, f"{block}.upsamplers.0"):
            h = upsample(sd, f"{block}.upsamplers.0", h, tuple(skips[-1].shape[-2:]))

    h = F.silu(group_norm(sd, "conv_norm_out", h, cond.frames, cond.switches.joint_group_norm, RESNET_NORM_EPS))
    return conv(sd, "conv_out", h)


def _cast(sd: StateDict, dtype: torch.dtype, device: torch.device) -> StateDict:
    """The state dict in the input's dtype and device (computation follows the input: fp32 in, fp32 math)."""
    if all(v.dtype == dtype and v.device == device for v in sd.values()):
        return sd
    return {k: v.to(device=device, dtype=dtype) for k, v in sd.items()}


def _timesteps(timestep: Tensor | float | int, count: int, device: torch.device) -> Tensor:
    """A scalar or per-item timestep as a 1-D tensor of ``count`` entries."""
    t = torch.as_tensor(timestep, device=device).reshape(-1)
    if t.numel() not in (1, count):
        raise ValueError(f"expected a scalar timestep or {count} of them, got {t.numel()}")
    return t.expand(count)


def _with_reference_frame(residual: Tensor) -> Tensor:
    """ControlNet residual [B, F, C, h, w] for the window frames -> frame batch [B * (F + 1), C, h, w] with a
    zero residual for the reference frame."""
    b, f, *rest = residual.shape
    zero = residual.new_zeros(b, 1, *rest)
    return torch.cat([zero, residual], dim=1).reshape(b * (f + 1), *rest)


def xdyna_unet3d(
    sd: StateDict,
    noisy: Tensor,
    reference: Tensor,
    timestep: Tensor | float | int,
    text_context: Tensor,
    image_tokens: Tensor | None,
    *,
    adapter: bool = True,
    ip: bool = True,
    motion: bool = True,
    joint_group_norm: bool = True,
    control: dict | None = None,
    adapter_scale: float = 1.0,
    ip_scale: float = 1.0,
    heads: int = 8,
) -> Tensor:
    """eps of one X-Dyna UNet evaluation for the F window frames of B CFG branches (docs/xdyna_model.md §3).

    ``noisy`` [B, F, 4, h, w]; ``reference`` [B, 4, h, w] (clean, frame 0 of each branch); ``timestep`` scalar or
    [B] (shared by all frames of a branch, reference included); ``text_context`` [B, 77, D]; ``image_tokens``
    [B, 16, D] (unused when ``ip`` is False); ``control`` optional ``{"down": [12 x [B, F, C, h', w']], "mid":
    [B, F, C, h'', w'']}`` for the window frames (the reference gets zero). Returns [B, F, 4, h, w]; the
    reference frame's output is discarded. The switches turn the X-Dyna components on and off; all off is plain
    per-frame SD1.5, and then the reference has no influence on the window frames. ``heads`` is the head count
    of every spatial and temporal attention (8 in X-Dyna, head width C / 8). Computation runs in ``noisy``'s dtype.
    """
    b, f, c, height, width = noisy.shape
    if reference.shape != (b, c, height, width):
        raise ValueError(f"reference {tuple(reference.shape)} does not match noisy frames {tuple(noisy.shape)}")
    if ip and image_tokens is None:
        raise ValueError("ip=True needs image_tokens")
    frames = f + 1
    sd = _cast(sd, noisy.dtype, noisy.device)
    x = torch.cat([reference[:, None].to(noisy.dtype), noisy], dim=1).reshape(b * frames, c, height, width)
    t = _timesteps(timestep, b, noisy.device).repeat_interleave(frames)
    cond = _Conditioning(
        frames=frames,
        temb=time_embedding(sd, t, noisy.dtype),
        text=text_context.to(noisy.dtype).repeat_interleave(frames, dim=0),
        image=image_tokens.to(noisy.dtype).repeat_interleave(frames, dim=0) if ip else None,
        switches=_Switches(adapter, ip, motion, joint_group_norm, adapter_scale, ip_scale, heads),
    )
    frame_control = None
    if control is not None:
        frame_control = {
            "down": [_with_reference_frame(r.to(noisy.dtype)) for r in control["down"]],
            "mid": _with_reference_frame(control["mid"].to(noisy.dtype)),
        }
    eps = _unet(sd, x, cond, frame_control)
    return eps.reshape(b, frames, c, height, width)[:, 1:]


def sd15_unet2d(
    sd: StateDict,
    x: Tensor,
    timestep: Tensor | float | int,
    context: Tensor,
    control: dict | None = None,
    heads: int = 8,
) -> Tensor:
    """Plain SD1.5 UNet on independent images: ``x`` [N, 4, h, w], ``timestep`` scalar or [N], ``context``
    [N, 77, D] -> eps [N, 4, h, w]. ``control`` optionally ``{"down": [12 x [N, C, h', w']], "mid": [N, ...]}``
    (diffusers' ``down_block_additional_residuals`` / ``mid_block_additional_residual``). Only the SD1.5 keys of
    ``sd`` are used; X-Dyna's extra keys may be present."""
    sd = _cast(sd, x.dtype, x.device)
    cond = _Conditioning(
        frames=1,
        temb=time_embedding(sd, _timesteps(timestep, x.shape[0], x.device), x.dtype),
        text=context.to(x.dtype),
        image=None,
        switches=_Switches(heads=heads),
    )
    return _unet(sd, x, cond, control)
