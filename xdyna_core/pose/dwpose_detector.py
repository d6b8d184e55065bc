"""DWPose's person detector: YOLOX-L (`yolox_l.onnx`) with its letterbox input and grid decoding.

What the released file expects, as DWPose runs it (IDEA-Research/DWPose `annotator/dwpose/onnxdet.py`):
the frame is resized by `r = min(640 / H, 640 / W)` to `(int(W r), int(H r))` (bilinear, no antialiasing),
placed at the top-left of a 640×640 canvas filled with 114, and fed as float 0–255 without normalisation.
The output `[1, 8400, 85]` holds, per anchor of the stride-8/16/32 grids (80², 40², 20² cells, row-major),
`(dx, dy, log w, log h, objectness, 80 class scores)`, sigmoids already applied: the box centre is
`(dx + col, dy + row) * stride`, its size `exp(log w) * stride`. A person's score is objectness × class-0
score; boxes above 0.3 survive a 0.45-IoU NMS.

Channel order: YOLOX was trained on OpenCV-decoded (BGR) images, so we feed BGR. The ControlNet integration of
DWPose passes RGB here; the estimator (trained with `bgr_to_rgb=True`) gets RGB in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from .onnx_runtime import OnnxModel

YOLOX_INPUT_SIZE = (640, 640)  # (width, height)
YOLOX_STRIDES = (8, 16, 32)
LETTERBOX_PAD = 114.0
PERSON_CLASS = 0
SCORE_THRESHOLD = 0.3
NMS_IOU = 0.45


@dataclass(frozen=True)
class Letterbox:
    """How a `src_width×src_height` frame sits in the detector input: scaled by `ratio`, at the top-left corner."""

    ratio: float
    src_width: int
    src_height: int

    @classmethod
    def fit(cls, src_width: int, src_height: int, input_size: tuple[int, int] = YOLOX_INPUT_SIZE) -> Letterbox:
        return cls(min(input_size[1] / src_height, input_size[0] / src_width), src_width, src_height)

    @property
    def resized_size(self) -> tuple[int, int]:
        """(width, height) of the resized frame inside the canvas (truncated, as released)."""
        return max(1, int(self.src_width * self.ratio)), max(1, int(self.src_height * self.ratio))

    def to_input(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points, dtype=np.float64) * self.ratio

    def to_source(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points, dtype=np.float64) / self.ratio


def to_pixels(frames: torch.Tensor) -> torch.Tensor:
    """ComfyUI images `[B, H, W, 3]` (or RGBA) in [0, 1] → `[B, 3, H, W]` float32 on the 0–255 grid of 8-bit frames.

    The models were run on 8-bit frames; rounding here keeps our inputs on the same grid.
    """
    if frames.ndim != 4 or frames.shape[-1] not in (3, 4):
        raise ValueError(f"frames must be [batch, height, width, 3] RGB images, got shape {tuple(frames.shape)}")
    # channels-last view (alpha dropped): interpolate and grid_sample read it as it is, so frames are copied once
    pixels = frames[..., :3].detach().float().mul(255.0)
    return pixels.nan_to_num_(0.0).clamp_(0.0, 255.0).round_().movedim(-1, 1)


def letterbox(pixels: torch.Tensor, input_size: tuple[int, int] = YOLOX_INPUT_SIZE) -> tuple[np.ndarray, Letterbox]:
    """Detector input for `[B, 3, H, W]` RGB pixels (0–255): `[B, 3, h, w]` float32 BGR canvases and the geometry."""
    _, _, height, width = pixels.shape
    box = Letterbox.fit(width, height, input_size)
    new_w, new_h = box.resized_size
    resized = F.interpolate(pixels, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=False)
    canvas = torch.full((pixels.shape[0], 3, input_size[1], input_size[0]), LETTERBOX_PAD, dtype=torch.float32)
    canvas[:, :, :new_h, :new_w] = resized.flip(1).round_().clamp_(0.0, 255.0).to(canvas.device)  # RGB → BGR
    return canvas.numpy(), box


@lru_cache(maxsize=8)
def yolox_grid(input_size: tuple[int, int] = YOLOX_INPUT_SIZE, strides: tuple[int, ...] = YOLOX_STRIDES):
    """Anchor cells `(col, row)` `[N, 2]` and their strides `[N, 1]`, in the order of YOLOX's output rows."""
    cells, cell_strides = [], []
    for stride in strides:
        rows, cols = input_size[1] // stride, input_size[0] // stride
        row, col = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        cells.append(np.stack([col.ravel(), row.ravel()], axis=1))
        cell_strides.append(np.full((rows * cols, 1), stride))
    return np.concatenate(cells).astype(np.float32), np.concatenate(cell_strides).astype(np.float32)


def decode_yolox(raw: np.ndarray, input_size: tuple[int, int] = YOLOX_INPUT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """One image's YOLOX output `[N, 5 + classes]` → person boxes `[N, 4]` (x1, y1, x2, y2, input pixels), scores `[N]`."""
    cells, strides = yolox_grid(tuple(input_size))
    if raw.ndim != 2 or raw.shape[0] != cells.shape[0] or raw.shape[1] < 6:
        raise ValueError(
            f"YOLOX output has shape {raw.shape}, but a {input_size[0]}x{input_size[1]} input with strides "
            f"{YOLOX_STRIDES} gives [{cells.shape[0]}, 5 + classes]; is this the yolox_l.onnx of yzd-v/DWPose?"
        )
    centre = (raw[:, :2] + cells) * strides
    size = np.exp(raw[:, 2:4]) * strides
    boxes = np.concatenate([centre - size / 2.0, centre + size / 2.0], axis=1)
    return boxes, raw[:, 4] * raw[:, 5 + PERSON_CLASS]


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = NMS_IOU) -> np.ndarray:
    """Greedy non-maximum suppression; indices kept, best first.

    Areas and overlaps count pixels inclusively (`x2 - x1 + 1`), as the released numpy NMS does.
    """
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1.0) * (y2 - y1 + 1.0)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1.0)
        h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1.0)
        inter = w * h
        order = rest[inter / (areas[best] + areas[rest] - inter) <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def people_from_yolox(
    raw: np.ndarray,
    box: Letterbox,
    input_size: tuple[int, int] = YOLOX_INPUT_SIZE,
    score_threshold: float = SCORE_THRESHOLD,
    iou_threshold: float = NMS_IOU,
) -> tuple[np.ndarray, np.ndarray]:
    """Person boxes `[P, 4]` in source-frame pixels and their scores `[P]`, best first."""
    boxes, scores = decode_yolox(raw, input_size)
    # The release thresholds at 0.1, runs NMS, then keeps scores > 0.3: boxes below the final threshold
    # can only suppress boxes below it too, so thresholding first gives the same people.
    candidates = np.flatnonzero(scores > score_threshold)
    keep = candidates[nms(boxes[candidates], scores[candidates], iou_threshold)]
    return box.to_source(boxes[keep]).astype(np.float32), scores[keep].astype(np.float32)


class YoloxPersonDetector:
    """Finds people in frames with a YOLOX ONNX model (80 COCO classes, person = class 0).

    Args:
        model: the detector session (`yolox_l.onnx`: input `images` [1, 3, 640, 640], output `output` [1, 8400, 85]).
        score_threshold: minimum objectness × person score (0.3 as released).
        iou_threshold: NMS overlap above which the weaker of two boxes is dropped (0.45 as released).
    """

    def __init__(self, model: OnnxModel, score_threshold: float = SCORE_THRESHOLD, iou_threshold: float = NMS_IOU):
        self.model = model
        self.input_size = model.spatial_size(YOLOX_INPUT_SIZE)
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold

    def __call__(self, pixels: torch.Tensor, max_batch: int = 8) -> list[tuple[np.ndarray, np.ndarray]]:
        """Boxes and scores per frame for `[B, 3, H, W]` RGB pixels (0–255, see `to_pixels`)."""
        canvases, box = letterbox(pixels, self.input_size)
        (raw,) = self.model.run(canvases, max_batch)[:1]
        return [people_from_yolox(r, box, self.input_size, self.score_threshold, self.iou_threshold) for r in raw]
