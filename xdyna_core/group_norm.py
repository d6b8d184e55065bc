"""GroupNorm joint over the frames of a window (docs/xdyna_model.md §3.3).

X-Dyna's ResNet norms and the final `conv_norm_out` normalise each group over (channels in the group, all
F+1 frames of a CFG branch, H, W), reference included, not frame by frame. This couples the reference's
features to the window, which is why reference features cannot be cached across windows.

A GroupNorm computes each group's statistics over everything after the channel axis, so laying a branch's
frames side by side along the height (`[branches, C, frames * H, W]`) and applying the block's own GroupNorm
gives exactly the joint statistics, with the per-channel affine unchanged. Passing the norm itself (rather
than its weight and bias) keeps whatever the host does inside it: casting weights to the input's dtype,
fetching them from an offload device, weight patches.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Norm = Callable[[torch.Tensor], torch.Tensor]


def joint_group_norm(x: torch.Tensor, frames: int, norm: Norm) -> torch.Tensor:
    """Apply `norm` (a GroupNorm) to `[branches * frames, C, H, W]` with statistics shared by each branch's frames."""
    total, channels, height, width = x.shape
    if frames < 1 or total % frames:
        raise ValueError(f"a batch of {total} frames is not whole windows of {frames} frames")
    branches = total // frames
    # [b, f, c, h, w] -> [b, c, f*h, w]: each group's statistics then cover all frames of the branch.
    stacked = x.reshape(branches, frames, channels, height, width).transpose(1, 2)
    normed = norm(stacked.reshape(branches, channels, frames * height, width))
    return (
        normed.reshape(branches, channels, frames, height, width)
        .transpose(1, 2)
        .reshape(total, channels, height, width)
    )
