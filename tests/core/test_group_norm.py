"""Joint GroupNorm: one set of statistics per group over all frames of a CFG branch (docs/xdyna_model.md §3.3)."""

from __future__ import annotations

import pytest
import torch

from xdyna_core.group_norm import joint_group_norm


def reference_joint_group_norm(x, frames, groups, weight, bias, eps):
    """Statistics over (channels in group, frames, H, W) per branch, written out by hand in float64."""
    total, channels, h, w = x.shape
    xb = x.double().reshape(total // frames, frames, groups, channels // groups, h, w)
    mean = xb.mean(dim=(1, 3, 4, 5), keepdim=True)
    var = xb.var(dim=(1, 3, 4, 5), unbiased=False, keepdim=True)
    normed = ((xb - mean) / torch.sqrt(var + eps)).reshape(total, channels, h, w)
    return normed * weight.double()[None, :, None, None] + bias.double()[None, :, None, None]


@pytest.mark.parametrize("branches,frames", [(1, 1), (1, 5), (2, 17)])
def test_statistics_are_joint_over_each_branch_frames(branches, frames):
    gen = torch.Generator().manual_seed(frames)
    norm = torch.nn.GroupNorm(4, 8, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(8, generator=gen))
        norm.bias.copy_(torch.randn(8, generator=gen))
    x = torch.randn(branches * frames, 8, 3, 5, generator=gen) * 3 + torch.arange(branches * frames).reshape(
        -1, 1, 1, 1
    )
    out = joint_group_norm(x, frames, norm)
    expected = reference_joint_group_norm(x, frames, 4, norm.weight, norm.bias, 1e-5)
    torch.testing.assert_close(out.double(), expected, atol=2e-5, rtol=1e-5)
    if frames > 1:  # per-frame statistics would differ (the frames have different means)
        assert not torch.allclose(out, norm(x), atol=1e-3)


def test_a_single_frame_is_a_plain_group_norm():
    norm = torch.nn.GroupNorm(2, 4)
    x = torch.randn(3, 4, 2, 2)
    torch.testing.assert_close(joint_group_norm(x, 1, norm), norm(x))


def test_the_norm_is_called_on_the_stacked_layout():
    seen = []
    joint_group_norm(torch.zeros(6, 4, 2, 3), 3, lambda t: seen.append(tuple(t.shape)) or t)
    assert seen == [(2, 4, 6, 3)]


def test_a_batch_that_is_not_whole_windows_is_refused():
    with pytest.raises(ValueError, match="not whole windows of 4"):
        joint_group_norm(torch.zeros(6, 4, 2, 2), 4, torch.nn.GroupNorm(2, 4))
