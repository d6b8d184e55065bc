"""DWPose's whole-body estimator (`dw-ll_ucoco_384.onnx`): top-down affine crops and SimCC decoding.

What the released file expects (DWPose's `dwpose-l_384x288.py` config and its `onnxpose.py`): each person box
is enlarged 1.25× about its centre and widened or heightened to the input aspect 288:384; that region is warped
(bilinear, black outside the frame) onto a 288×384 RGB input normalised with mean (123.675, 116.28, 103.53)
and std (58.395, 57.12, 57.375). Outputs `simcc_x` [1, 133, 576] and `simcc_y` [1, 133, 768] are 1-D
classification vectors at `simcc_split_ratio` 2 bins per input pixel: a keypoint sits at `argmax / 2`, with the
smaller of the two maxima as its score (locations whose score is ≤ 0 are set to −1 before the division, as
released). Points map back to the frame through the inverse of the crop transform.

The 133 points are COCO-WholeBody's: 17 body, 6 feet, 68 face, 21 left hand, 21 right hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .onnx_runtime import OnnxModel

ESTIMATOR_INPUT_SIZE = (288, 384)  # (width, height)
BOX_PADDING = 1.25
PIXEL_MEAN = (123.675, 116.28, 103.53)  # RGB
PIXEL_STD = (58.395, 57.12, 57.375)
SIMCC_SPLIT_RATIO = 2.0
NUM_WHOLEBODY_KEYPOINTS = 133


@dataclass(frozen=True)
class CropTransform:
    """The similarity transform between a frame and one person's estimator input (no rotation).

    `centre` and `size` are the region of the frame (pixels) that fills the whole `input_size` input.
    Pixel coordinates index pixel centres in both spaces, as OpenCV's `warpAffine` does.
    """

    centre: tuple[float, float]
    size: tuple[float, float]
    input_size: tuple[int, int] = ESTIMATOR_INPUT_SIZE

    @classmethod
    def from_box(cls, box, input_size: tuple[int, int] = ESTIMATOR_INPUT_SIZE, padding: float = BOX_PADDING):
        """The crop of an (x1, y1, x2, y2) person box: `padding`× larger, then fitted to the input aspect."""
        x1, y1, x2, y2 = (float(v) for v in box)
        # at least a pixel: a degenerate box must not make the scale infinite
        width, height = max((x2 - x1) * padding, 1.0), max((y2 - y1) * padding, 1.0)
        aspect = input_size[0] / input_size[1]
        if width > height * aspect:
            height = width / aspect
        else:
            width = height * aspect
        return cls(((x1 + x2) / 2.0, (y1 + y2) / 2.0), (width, height), tuple(input_size))

    @property
    def scale(self) -> float:
        """Input pixels per frame pixel (the same along x and y, since the size has the input's aspect)."""
        return self.input_size[0] / self.size[0]

    def to_input(self, points: np.ndarray) -> np.ndarray:
        half = np.array(self.input_size, dtype=np.float64) / 2.0
        return (np.asarray(points, dtype=np.float64) - self.centre) * self.scale + half

    def to_source(self, points: np.ndarray) -> np.ndarray:
        half = np.array(self.input_size, dtype=np.float64) / 2.0
        return (np.asarray(points, dtype=np.float64) - half) / self.scale + self.centre


def crop_people(pixels: torch.Tensor, crops: list[CropTransform]) -> torch.Tensor:
    """Warp the crops of one frame (`[3, H, W]` RGB, 0–255) to `[P, 3, h, w]` inputs, rounded to 8-bit levels."""
    _, height, width = pixels.shape
    in_w, in_h = crops[0].input_size
    cols = torch.arange(in_w, dtype=torch.float64)
    rows = torch.arange(in_h, dtype=torch.float64)
    # All crops of the frame as one tall grid: one sampling call, and the frame is never copied per person.
    grid = torch.empty(len(crops), in_h, in_w, 2, dtype=torch.float32)
    for i, crop in enumerate(crops):
        src_x = (cols - in_w / 2.0) / crop.scale + crop.centre[0]
        src_y = (rows - in_h / 2.0) / crop.scale + crop.centre[1]
        # grid_sample's normalised coordinates (align_corners=False): pixel centre i ↦ (2i + 1) / size − 1.
        grid[i, :, :, 0] = ((2.0 * src_x + 1.0) / width - 1.0).float()[None, :]
        grid[i, :, :, 1] = ((2.0 * src_y + 1.0) / height - 1.0).float()[:, None]
    grid = grid.view(1, len(crops) * in_h, in_w, 2).to(device=pixels.device, dtype=pixels.dtype)
    warped = F.grid_sample(pixels[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return warped[0].reshape(3, len(crops), in_h, in_w).permute(1, 0, 2, 3).round()


def normalise(inputs: torch.Tensor) -> np.ndarray:
    mean = torch.tensor(PIXEL_MEAN, dtype=inputs.dtype, device=inputs.device).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD, dtype=inputs.dtype, device=inputs.device).view(1, 3, 1, 1)
    return ((inputs - mean) / std).float().cpu().numpy()


def decode_simcc(
    simcc_x: np.ndarray, simcc_y: np.ndarray, split_ratio: float = SIMCC_SPLIT_RATIO
) -> tuple[np.ndarray, np.ndarray]:
    """SimCC vectors `[N, K, Wx]`, `[N, K, Wy]` → keypoints `[N, K, 2]` in input pixels and scores `[N, K]`."""
    x_locs = simcc_x.argmax(axis=-1).astype(np.float32)
    y_locs = simcc_y.argmax(axis=-1).astype(np.float32)
    scores = np.minimum(simcc_x.max(axis=-1), simcc_y.max(axis=-1)).astype(np.float32)
    locs = np.stack([x_locs, y_locs], axis=-1)
    locs[scores <= 0.0] = -1.0
    return locs / np.float32(split_ratio), scores


class WholebodyEstimator:
    """Top-down whole-body keypoints for given person boxes with an RTMPose/DWPose SimCC ONNX model.

    Args:
        model: the estimator session (`dw-ll_ucoco_384.onnx`: input `input` [1, 3, 384, 288], outputs
            `simcc_x` [1, 133, 576] and `simcc_y` [1, 133, 768]). Input size and split ratio are read from it.
        padding: box enlargement before cropping (1.25 as released).
    """

    def __init__(self, model: OnnxModel, padding: float = BOX_PADDING):
        self.model = model
        self.padding = padding
        self.input_size = model.spatial_size(ESTIMATOR_INPUT_SIZE)
        names = model.output_names
        if len(names) < 2:
            raise ValueError(f"{model.name}: a SimCC pose model has two outputs (simcc_x, simcc_y), found {names}")
        self._x_out, self._y_out = (
            (names.index("simcc_x"), names.index("simcc_y")) if {"simcc_x", "simcc_y"} <= set(names) else (0, 1)
        )

    def split_ratio(self, simcc_x: np.ndarray, simcc_y: np.ndarray) -> float:
        ratio_x, ratio_y = simcc_x.shape[-1] / self.input_size[0], simcc_y.shape[-1] / self.input_size[1]
        if ratio_x != ratio_y:
            raise ValueError(
                f"{self.model.name}: SimCC outputs of lengths {simcc_x.shape[-1]} and {simcc_y.shape[-1]} do not share "
                f"one split ratio for a {self.input_size[0]}x{self.input_size[1]} input"
            )
        return ratio_x

    def __call__(
        self, pixels: torch.Tensor, boxes: list[np.ndarray], max_batch: int = 8
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Keypoints `[P, K, 2]` (frame pixels) and scores `[P, K]` per frame of `[B, 3, H, W]` RGB pixels (0–255)."""
        crops = [
            [CropTransform.from_box(b, self.input_size, self.padding) for b in frame_boxes] for frame_boxes in boxes
        ]
        inputs = [crop_people(pixels[i], c) for i, c in enumerate(crops) if c]
        if not inputs:
            nobody = (
                np.zeros((0, NUM_WHOLEBODY_KEYPOINTS, 2), np.float32),
                np.zeros((0, NUM_WHOLEBODY_KEYPOINTS), np.float32),
            )
            return [nobody] * len(boxes)
        outputs = self.model.run(normalise(torch.cat(inputs)), max_batch)
        simcc_x, simcc_y = outputs[self._x_out], outputs[self._y_out]
        locs, scores = decode_simcc(simcc_x, simcc_y, self.split_ratio(simcc_x, simcc_y))
        results, start = [], 0
        for frame_crops in crops:
            stop = start + len(frame_crops)
            points = [crop.to_source(locs[start + j]) for j, crop in enumerate(frame_crops)]
            keypoints = np.stack(points).astype(np.float32) if points else np.zeros((0,) + locs.shape[1:], np.float32)
            results.append((keypoints, scores[start:stop]))
            start = stop
        return results
