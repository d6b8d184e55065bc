"""GroupNorm joint over the frames of a window (spec §3.3).

X-Dyna's ResNet norms and the final `conv_norm_out` normalise each group over (channels in the group, all
F+1 frames of a CFG branch, H, W), reference included, not frame by frame. This couples the reference's
features to the window, which is why reference features cannot be cached across windows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def joint_group_norm(
    x: torch.Tensor,
    frames: int,
    num_groups: int,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
) -> torch.Tensor:
    """GroupNorm of `[branches * frames, C, H, W]` with statistics shared by the `frames` of each branch.

    The affine `weight`/`bias` stay per channel, as in `torch.nn.GroupNorm`.
    """
    total, channels, height, width = x.shape
    if frames < 1 or total % frames:
        raise ValueError(f"a batch of {total} frames is not whole windows of {frames} frames")
    branches = total // frames
    # [b, f, c, h, w] -> [b, c, f*h, w]: each group's statistics then cover all frames of the branch.
    stacked = x.reshape(branches, frames, channels, height, width).transpose(1, 2)
    normed = F.group_norm(stacked.reshape(branches, channels, frames * height, width), num_groups, weight, bias, eps)
    return (
        normed.reshape(branches, channels, frames, height, width)
        .transpose(1, 2)
        .reshape(total, channels, height, width)
    )
