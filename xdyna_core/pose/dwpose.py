"""DWPose as a two-stage pipeline on onnxruntime: YOLOX-L finds people, DW-LL UCOCO 384 gives 133 keypoints each.

The released files are `yolox_l.onnx` and `dw-ll_ucoco_384.onnx` from Hugging Face `yzd-v/DWPose` (the ones
comfyui_controlnet_aux and ControlNet use). Pre- and post-processing live in `dwpose_detector` and
`dwpose_estimator`; person choice and no-person frames in `dwpose_sequence`. Results stay in the estimator's
COCO-WholeBody layout; `keypoints.frame_from_wholebody` turns a frame into controlnet_aux's POSE_KEYPOINT.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..downloads import RemoteFile, ensure_model_files, find_model_file
from .dwpose_detector import NMS_IOU, SCORE_THRESHOLD, YoloxPersonDetector, to_pixels
from .dwpose_estimator import WholebodyEstimator
from .dwpose_sequence import FramePeople, choose_people, fill_missing
from .onnx_runtime import OnnxModel, choose_providers

logger = logging.getLogger("xdyna")

DWPOSE_REPO = "yzd-v/DWPose"
DETECTOR_FILE = "yolox_l.onnx"
ESTIMATOR_FILE = "dw-ll_ucoco_384.onnx"
DWPOSE_FILES = (RemoteFile(DWPOSE_REPO, DETECTOR_FILE), RemoteFile(DWPOSE_REPO, ESTIMATOR_FILE))


def locate_model_files(
    detector_name: str, estimator_name: str, folders: Sequence[str | Path], download: bool = True
) -> tuple[Path, Path]:
    """Paths of the chosen detector and estimator files.

    The released names (`yolox_l.onnx`, `dw-ll_ucoco_384.onnx`) are downloaded from `yzd-v/DWPose` into
    `folders[0]` when no folder has them; any other name must already be in one of `folders`.
    """
    if not folders:
        raise ValueError("no folder to look for the DWPose files in")
    released = {f.filename: f for f in DWPOSE_FILES}
    wanted = [released[n] for n in dict.fromkeys((detector_name, estimator_name)) if n in released]
    found = dict(zip((f.filename for f in wanted), ensure_model_files(wanted, folders[0], folders[1:], download)))
    for name in (detector_name, estimator_name):
        if name not in found:
            path = find_model_file(name, [Path(f) for f in folders])
            if path is None:
                raise FileNotFoundError(
                    f"{name} is in none of the DWPose model folders ({', '.join(map(str, folders))})"
                )
            found[name] = path
    return found[detector_name], found[estimator_name]


def open_models(
    detector_path: str | Path, estimator_path: str | Path, provider: str = "auto", device_id: int | None = None
) -> tuple[OnnxModel, OnnxModel]:
    """Sessions for the detector and estimator files; logs the provider each actually runs on."""
    providers = choose_providers(provider)
    models = OnnxModel.load(detector_path, providers, device_id), OnnxModel.load(estimator_path, providers, device_id)
    for model in models:
        batch = "dynamic batch" if model.fixed_batch is None else f"batch {model.fixed_batch}"
        logger.info("X-Dyna DWPose: %s runs on %s (%s)", model.name, ", ".join(model.providers), batch)
        if providers[0] not in model.providers:
            logger.warning(
                "X-Dyna DWPose: %s asked for %s but onnxruntime runs it on %s (for CUDA: is onnxruntime-gpu "
                "installed, with the CUDA and cuDNN libraries it was built for?)",
                model.name,
                providers[0],
                model.providers[0],
            )
    return models


class DWPose:
    """Whole-body poses of the people in video frames.

    Args:
        detector: the person detector (YOLOX).
        estimator: the whole-body keypoint estimator (SimCC).
    """

    def __init__(self, detector: YoloxPersonDetector, estimator: WholebodyEstimator):
        self.detector = detector
        self.estimator = estimator

    @classmethod
    def load(
        cls,
        detector_path: str | Path,
        estimator_path: str | Path,
        provider: str = "auto",
        device_id: int | None = None,
        score_threshold: float = SCORE_THRESHOLD,
        iou_threshold: float = NMS_IOU,
    ) -> DWPose:
        """Open both ONNX files on the best available provider (`auto`), the CPU (`cpu`), or a named provider."""
        detector, estimator = open_models(detector_path, estimator_path, provider, device_id)
        return cls(YoloxPersonDetector(detector, score_threshold, iou_threshold), WholebodyEstimator(estimator))

    @property
    def providers(self) -> dict[str, list[str]]:
        """The providers each model actually runs on, by file name."""
        return {m.name: m.providers for m in (self.detector.model, self.estimator.model)}

    def detect(self, frames: torch.Tensor, batch_size: int = 8) -> list[FramePeople]:
        """Everyone found in each of `frames` (`[B, H, W, 3]` RGB in [0, 1]), in detector-score order."""
        pixels = to_pixels(frames)
        detections = self.detector(pixels, batch_size)
        poses = self.estimator(pixels, [boxes for boxes, _ in detections], batch_size)
        return [
            FramePeople(keypoints, scores, boxes, box_scores)
            for (boxes, box_scores), (keypoints, scores) in zip(detections, poses)
        ]

    def __call__(
        self,
        frames: torch.Tensor,
        person: str = "largest",
        person_index: int = 0,
        missing: str = "repeat_previous",
        batch_size: int = 8,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> list[FramePeople]:
        """Poses for a video: detect in chunks of `batch_size` frames, keep the chosen person, fill gaps.

        Args:
            frames: `[B, H, W, 3]` RGB in [0, 1] (a ComfyUI IMAGE batch).
            person, person_index: see `dwpose_sequence.choose_people`.
            missing: see `dwpose_sequence.fill_missing`.
            batch_size: frames per detector call and crops per estimator call, where the files allow batches.
            on_progress: called with (frames done, total) as frames finish (progress bars, interruption).
        """
        total = frames.shape[0]
        # A detector file with a fixed batch runs frame by frame anyway: report progress (and let ComfyUI
        # interrupt) after every frame then, after every batch otherwise.
        step = self.detector.model.fixed_batch or max(1, batch_size)
        people: list[FramePeople] = []
        for start in range(0, total, step):
            chunk = self.detect(frames[start : start + step], batch_size)
            people.extend(choose_people(p, person, person_index) for p in chunk)
            if on_progress is not None:
                on_progress(len(people), total)
        return fill_missing(people, missing)
