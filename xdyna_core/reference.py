"""The prepared reference: what every UNet evaluation needs from the reference image (docs/xdyna_model.md §3, §5)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class XDynaReference:
    """The reference image as the model consumes it.

    Args:
        latent: VAE latent `[1, 4, h, w]` in ComfyUI's LATENT convention (before the SD1.5 scale factor);
            it becomes frame 0 of every window, clean, at every step.
        image_tokens: IP-Adapter-plus tokens `[1, 16, D]` of the reference (conditional branch).
        uncond_image_tokens: tokens of an all-zero normalised pixel tensor (unconditional branch).
        image: the cropped and resized reference `[1, H, W, 3]`, for previews.
    """

    latent: torch.Tensor
    image_tokens: torch.Tensor
    uncond_image_tokens: torch.Tensor
    image: torch.Tensor

    def __post_init__(self) -> None:
        if self.latent.ndim != 4 or self.latent.shape[0] != 1:
            raise ValueError(f"reference latent must be [1, C, h, w], got {tuple(self.latent.shape)}")
        if self.image_tokens.shape != self.uncond_image_tokens.shape:
            raise ValueError(
                f"conditional and unconditional image tokens differ in shape: "
                f"{tuple(self.image_tokens.shape)} vs {tuple(self.uncond_image_tokens.shape)}"
            )

    @property
    def latent_size(self) -> tuple[int, int]:
        """(height, width) of the latent."""
        return self.latent.shape[-2], self.latent.shape[-1]
