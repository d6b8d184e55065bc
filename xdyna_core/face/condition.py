"""The S-Face condition of a clip as hint frames: canvases rendered for the frames asked for, never held.

Both S-Face canvases of a frame are copies of pixels of the fitted driving frame (the face box, and the eye
and mouth patches), so a clip's condition is fully described by a reference to the driving frames, how they
are fitted to the generation size, and the per-frame boxes and patch centres: about a hundred bytes per
frame instead of two float32 canvases (10.5 MB per frame at 512×896). `frames(index)` fits just those
driving frames and cuts their canvases, exactly as rendering the whole clip would.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import torch

from ..hints import LitHintFrames
from ..image_prep import CropAnchor, ResizeMethod, fit_region
from .follow import is_identity, place_face
from .landmarks import FEATURE_NAMES
from .sface import Border, canvas_windows, copy_windows, shifted, windows_bounds


class SFaceCondition(LitHintFrames):
    """The S-Face ControlNet input of a clip (the `XDYNA_FACE_CONDITION` socket type): 6 channels, local then
    global, at the generation size.

    Args:
        driving: `[F, H, W, C]` driving frames in [0, 1] at any size (kept by reference, not copied).
        width, height: the generation size the frames are fitted to.
        boxes: `[F, 4]` int64 face boxes (left, top, right, bottom) in pixels of the fitted frame.
        centres: `[F, 3, 2]` int64 patch centres (x, y): left eye, right eye, mouth.
        status: per frame, `detected`, `body`, `interpolated`, `held` or `none`.
        crop, resize: how the driving frames are fitted (`image_prep.fit_to_size`).
        border: how patches crossing the frame edge are cut (`sface.patch_window`).
        placements: optional `[F, 6]` head placements (`follow.head_placements`): each frame's canvases are
            moved and scaled by it after cutting, onto a retargeted head. None: where the driving face is.
    """

    def __init__(
        self,
        driving: torch.Tensor,
        width: int,
        height: int,
        boxes: torch.Tensor,
        centres: torch.Tensor,
        status: Sequence[str],
        crop: CropAnchor = "top_biased",
        resize: ResizeMethod = "bilinear",
        border: Border = "clip",
        placements: torch.Tensor | None = None,
    ) -> None:
        if driving.ndim != 4 or driving.shape[-1] < 3:
            raise ValueError(f"driving frames must be [F, H, W, C>=3], got shape {tuple(driving.shape)}")
        count = driving.shape[0]
        if boxes.shape != (count, 4) or centres.shape != (count, 3, 2) or len(status) != count:
            raise ValueError(
                f"{count} driving frames but boxes {tuple(boxes.shape)}, centres {tuple(centres.shape)} and "
                f"{len(status)} status entries"
            )
        self.driving = driving
        self._width, self._height = int(width), int(height)
        self.boxes = boxes.to(torch.int64)
        self.centres = centres.to(torch.int64)
        self.status = tuple(status)
        self.crop, self.resize, self.border = crop, resize, border
        if placements is not None:
            placements = torch.as_tensor(placements, dtype=torch.float64)
            if placements.shape != (count, 6) or not torch.isfinite(placements).all():
                raise ValueError(f"{count} driving frames need [F, 6] finite placements, got {tuple(placements.shape)}")
        self.placements = placements

    @property
    def num_frames(self) -> int:
        return self.driving.shape[0]

    @property
    def height(self) -> int:
        return self._height

    @property
    def width(self) -> int:
        return self._width

    @property
    def channels(self) -> int:
        return 6

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the canvases: the generation size."""
        return self._width, self._height

    def _fitted(self, i: int, rows: tuple[int, int], cols: tuple[int, int], device: torch.device) -> torch.Tensor:
        """Rows and columns of driving frame i fitted to the generation size, `[h, w, 3]` float32 on `device`:
        only the source pixels they read are moved there and resized there (`image_prep.fit_region`)."""
        frame = self.driving[i, ..., :3]  # the canvases copy colour only
        return fit_region(frame, self._width, self._height, rows, cols, self.crop, self.resize, device)

    def _lit(self, i: int, device: torch.device) -> tuple[slice, slice, torch.Tensor] | None:
        """Where frame i's canvases can be non-black, and their values there: `(rows, cols, [h, w, 6])`
        float32 on `device`, the caller's own; black everywhere else. None: black everywhere.

        Of the driving frame only the part the canvases copy is fitted, on `device`. A frame placed onto a
        retargeted head has its face box moved, or resampled there (`follow.place_face`).
        """
        windows = canvas_windows(
            self.boxes[i].tolist(), self.centres[i].numpy(), self._width, self._height, self.border
        )
        lit = windows_bounds(windows)
        if lit is None:
            return None
        top, bottom, left, right = lit
        face = self._fitted(i, (top, bottom), (left, right), device)
        canvases = torch.zeros(bottom - top, right - left, 6, device=device)
        copy_windows(canvases[..., :3], canvases[..., 3:], face, shifted(windows, top, left))
        if self.placements is None or is_identity(self.placements[i]):
            return slice(top, bottom), slice(left, right), canvases
        region = place_face(canvases, (top, left), (self._height, self._width), self.placements[i])
        if region is None:
            return None
        rows, cols, values = region
        return rows, cols, values.to(torch.float32)

    def hint(self, index: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """The 6-channel hint `[k, H, W, 6]` = `cat([local, global])` of the indexed frames (all by default)."""
        return self.frames(range(self.num_frames) if index is None else index)

    def local_canvases(self, index: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """`[k, H, W, 3]`: the eye and mouth patches of the indexed frames."""
        return self.hint(index)[..., :3]

    def global_canvases(self, index: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """`[k, H, W, 3]`: the face boxes of the indexed frames."""
        return self.hint(index)[..., 3:]

    def to_json(self) -> str:
        """Per-frame boxes, patch centres and status as JSON text (for inspection and other tools)."""
        frames = []
        for i in range(self.num_frames):
            entry = {"frame": i, "status": self.status[i], "box": [int(v) for v in self.boxes[i]]}
            for name, centre in zip(FEATURE_NAMES, self.centres[i]):
                entry[name] = [int(v) for v in centre]
            if self.placements is not None:  # p ↦ A p + t onto the retargeted head: A row-major, then t
                entry["placement"] = [round(float(v), 6) for v in self.placements[i]]
            frames.append(entry)
        return json.dumps({"width": self._width, "height": self._height, "frames": frames})

    def held_bytes(self) -> int:
        """Bytes this object owns (the driving frames are a reference to the caller's tensor)."""
        held = (self.boxes, self.centres) + (() if self.placements is None else (self.placements,))
        return sum(t.element_size() * t.nelement() for t in held)
