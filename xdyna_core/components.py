"""The X-Dyna weights that sit on top of SD1.5: Dynamics-Adapter, IP-Adapter k/v and motion modules.

One `XDynaComponents` module holds all three, keyed by the diffusers name of the block each belongs to
(e.g. `down_blocks.0.attentions.0.transformer_blocks.0.attn1`), so the ComfyUI glue can move it on and off
the GPU as one model beside the UNet and look up a block's parts by name.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .motion_module import MotionModule


def module_key(diffusers_prefix: str) -> str:
    """`nn.ModuleDict` keys cannot contain dots."""
    return diffusers_prefix.replace(".", "__")


def _linear_from(weight: torch.Tensor, bias: torch.Tensor | None = None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta", dtype=weight.dtype)
    layer.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
    if bias is not None:
        layer.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
    return layer


class DynamicsAdapterBlock(nn.Module):
    """The Dynamics-Adapter of one self-attention: `to_q_ff` (no bias) and `to_out_ff`.

    Args:
        to_q_ff: queries from the frame's own normed tokens, `C → C`.
        to_out_ff: output projection of the reference attention, `C → C` with bias.
    """

    def __init__(self, to_q_ff: nn.Linear, to_out_ff: nn.Linear) -> None:
        super().__init__()
        self.to_q_ff = to_q_ff
        self.to_out_ff = to_out_ff

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor]) -> DynamicsAdapterBlock:
        return cls(_linear_from(sd["to_q_ff.weight"]), _linear_from(sd["to_out_ff.weight"], sd["to_out_ff.bias"]))


class ImagePromptKV(nn.Module):
    """The IP-Adapter key/value projections of one cross-attention: image tokens `D → C`, no bias."""

    def __init__(self, to_k_ip: nn.Linear, to_v_ip: nn.Linear) -> None:
        super().__init__()
        self.to_k_ip = to_k_ip
        self.to_v_ip = to_v_ip

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor]) -> ImagePromptKV:
        return cls(_linear_from(sd["to_k_ip.weight"]), _linear_from(sd["to_v_ip.weight"]))


class XDynaComponents(nn.Module):
    """Every X-Dyna addition to the SD1.5 UNet, addressed by diffusers block names.

    Args:
        dynamics_adapter: `…transformer_blocks.0.attn1` prefix → that block's adapter (16 in the release).
        ip_adapter: `…transformer_blocks.0.attn2` prefix → that block's IP k/v (16).
        motion_modules: `down_blocks.i.motion_modules.j` / `up_blocks.i.motion_modules.j` → module (20).
    """

    def __init__(
        self,
        dynamics_adapter: Mapping[str, DynamicsAdapterBlock],
        ip_adapter: Mapping[str, ImagePromptKV],
        motion_modules: Mapping[str, MotionModule],
    ) -> None:
        super().__init__()
        self.dynamics_adapter = nn.ModuleDict({module_key(k): v for k, v in dynamics_adapter.items()})
        self.ip_adapter = nn.ModuleDict({module_key(k): v for k, v in ip_adapter.items()})
        self.motion_modules = nn.ModuleDict({module_key(k): v for k, v in motion_modules.items()})
        self.requires_grad_(False)

    @classmethod
    def from_parts(
        cls,
        dynamics_adapter: Mapping[str, Mapping[str, torch.Tensor]],
        ip_adapter: Mapping[str, Mapping[str, torch.Tensor]],
        motion_modules: Mapping[str, Mapping[str, torch.Tensor]],
        motion_heads: int = 8,
    ) -> XDynaComponents:
        """Build from per-block state dicts, as `checkpoints.split_xdyna_unet` returns them."""
        return cls(
            {k: DynamicsAdapterBlock.from_state_dict(sd) for k, sd in dynamics_adapter.items()},
            {k: ImagePromptKV.from_state_dict(sd) for k, sd in ip_adapter.items()},
            {k: MotionModule.from_state_dict(sd, heads=motion_heads) for k, sd in motion_modules.items()},
        )

    def adapter(self, attn1_prefix: str) -> DynamicsAdapterBlock | None:
        return (
            self.dynamics_adapter[module_key(attn1_prefix)]
            if module_key(attn1_prefix) in self.dynamics_adapter
            else None
        )

    def image_kv(self, attn2_prefix: str) -> ImagePromptKV | None:
        key = module_key(attn2_prefix)
        return self.ip_adapter[key] if key in self.ip_adapter else None

    def motion(self, prefix: str) -> MotionModule | None:
        return self.motion_modules[module_key(prefix)] if module_key(prefix) in self.motion_modules else None

    @property
    def max_frames(self) -> int:
        """The longest window the motion modules can position-encode (24 in the release)."""
        return min((m.pe_length for m in self.motion_modules.values()), default=10**9)
