"""The X-Dyna weights that sit on top of SD1.5: Dynamics-Adapter, IP-Adapter k/v and motion modules.

One `XDynaComponents` module holds all three, keyed by the diffusers name of the block each belongs to
(e.g. `down_blocks.0.attentions.0.transformer_blocks.0.attn1`), so the ComfyUI glue can move it on and off
the GPU as one model beside the UNet and look up a block's parts by name.

Every layer comes from an `operations` namespace (`torch.nn` by default); the ComfyUI glue passes ComfyUI's
casting ops, so each projection computes in its input's dtype on its input's device, whatever dtype the
weights are stored in and wherever the memory manager left them.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .motion_module import MotionModule, Operations


def module_key(diffusers_prefix: str) -> str:
    """`nn.ModuleDict` keys cannot contain dots."""
    return diffusers_prefix.replace(".", "__")


def _linear_from(weight: torch.Tensor, bias: torch.Tensor | None = None, operations: Operations = nn) -> nn.Linear:
    """An `operations.Linear` holding these tensors (assigned, not copied)."""
    with torch.device("meta"):
        layer = operations.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    state = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
    layer.load_state_dict(state, strict=True, assign=True)
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
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor], operations: Operations = nn) -> DynamicsAdapterBlock:
        return cls(
            _linear_from(sd["to_q_ff.weight"], operations=operations),
            _linear_from(sd["to_out_ff.weight"], sd["to_out_ff.bias"], operations),
        )


class ImagePromptKV(nn.Module):
    """The IP-Adapter key/value projections of one cross-attention: image tokens `D → C`, no bias."""

    def __init__(self, to_k_ip: nn.Linear, to_v_ip: nn.Linear) -> None:
        super().__init__()
        self.to_k_ip = to_k_ip
        self.to_v_ip = to_v_ip

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor], operations: Operations = nn) -> ImagePromptKV:
        return cls(
            _linear_from(sd["to_k_ip.weight"], operations=operations),
            _linear_from(sd["to_v_ip.weight"], operations=operations),
        )


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
        operations: Operations = nn,
        dtype: torch.dtype | None = None,
    ) -> XDynaComponents:
        """Build from per-block state dicts, as `checkpoints.split_xdyna_unet` returns them.

        Args:
            motion_heads: attention heads of the motion modules (8; the weights do not record it).
            operations: where the layers come from.
            dtype: the dtype to store the weights in (None keeps the checkpoint's).
        """

        def cast(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {k: v if dtype is None else v.to(dtype) for k, v in sd.items()}

        return cls(
            {k: DynamicsAdapterBlock.from_state_dict(cast(sd), operations) for k, sd in dynamics_adapter.items()},
            {k: ImagePromptKV.from_state_dict(cast(sd), operations) for k, sd in ip_adapter.items()},
            {
                k: MotionModule.from_state_dict(cast(sd), heads=motion_heads, operations=operations)
                for k, sd in motion_modules.items()
            },
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
