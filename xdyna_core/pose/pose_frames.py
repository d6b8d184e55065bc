"""A clip's rendered poses as hint frames: drawn from the keypoints for the frames asked for, never held.

A rendered pose frame at 512×896 is 5.5 MB as float32 (3.3 GB for 600 frames); its keypoints are a few
kilobytes. `PoseHintFrames` keeps the keypoints and draws each requested frame with `draw.draw_pose`, so
the pose ControlNet can be fed a window at a time and the clip never exists as images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..hints import LitHintFrames
from .draw import draw_pose
from .keypoints import PoseFrame


def spread_index(num_frames: int, count: int) -> list[int]:
    """`count` frame indices spread evenly over a clip, first and last included (every frame when `count` is 0
    or at least the clip's length)."""
    if count <= 0 or count >= num_frames:
        return list(range(num_frames))
    return sorted({int(round(v)) for v in np.linspace(0, num_frames - 1, count)})


class PoseHintFrames(LitHintFrames):
    """Pose frames drawn in the X-Dyna style on demand (the `XDYNA_POSE_FRAMES` socket type).

    Args:
        frames: one `PoseFrame` per video frame (any canvas size; drawn scaled to `width × height`).
        width, height: the size of the drawn frames.
        style: `draw.draw_pose` settings (stick_width, point_radius, body, hands, head, face, min_confidence).
    """

    def __init__(self, frames: Sequence[PoseFrame], width: int, height: int, **style) -> None:
        if width < 1 or height < 1:
            raise ValueError(f"pose frames need a positive size, got {width}x{height}")
        self.poses = list(frames)
        self._width, self._height = int(width), int(height)
        self.style = dict(style)
        draw_pose(PoseFrame(1, 1), 1, 1, **self.style)  # a bad style fails here, not inside the sampler

    @property
    def num_frames(self) -> int:
        return len(self.poses)

    @property
    def height(self) -> int:
        return self._height

    @property
    def width(self) -> int:
        return self._width

    @property
    def channels(self) -> int:
        return 3

    def _frames(self, index: list[int]) -> torch.Tensor:
        return self._drawn(index).float().div_(255.0)

    def _planar(self, index: list[int], device: torch.device) -> torch.Tensor:
        # moved as uint8 (a quarter of float32), converted and transposed in one pass on the device
        drawn = self._drawn(index).to(device).permute(0, 3, 1, 2)
        return drawn.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)

    def _lit(self, i: int, device: torch.device) -> tuple[slice, slice, torch.Tensor] | None:
        # drawn on the CPU; only the box of the skeleton's pixels travels, as uint8, and is converted there
        drawn = draw_pose(self.poses[i], self._width, self._height, **self.style)
        flat = drawn.reshape(self._height, -1)  # reductions along memory order (numpy's fast ones)
        rows = np.flatnonzero(flat.max(axis=1))
        cols = np.flatnonzero(flat.max(axis=0).reshape(self._width, -1).max(axis=1))
        if not rows.size:
            return None
        rows, cols = slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)
        return rows, cols, torch.from_numpy(drawn[rows, cols]).to(device).float().div_(255.0)

    def _drawn(self, index: list[int]) -> torch.Tensor:
        """`[k, H, W, 3]` uint8 frames as drawn."""
        drawn = torch.empty(len(index), self._height, self._width, 3, dtype=torch.uint8)
        for k, i in enumerate(index):
            drawn[k] = torch.from_numpy(draw_pose(self.poses[i], self._width, self._height, **self.style))
        return drawn

    def held_bytes(self) -> int:
        """Bytes of keypoint arrays this object holds (Python object overhead not counted)."""
        total = 0
        for frame in self.poses:
            for person in frame.people:
                for part in (*person.parts().values(), *person.extra.values()):
                    total += 0 if part is None else part.nbytes
        return total
