"""A pose backend that needs no download: MediaPipe Holistic, mapped to the POSE_KEYPOINT layout.

MediaPipe 0.10.x up to 0.10.21 ships the legacy "solutions" with their TFLite models inside the wheel
(`mediapipe/modules/...`): Holistic gives 33 BlazePose body landmarks, 21 landmarks per hand and the
468-point face mesh, on CPU, offline. Releases from 0.10.30 on dropped the solutions and their models.
Every release that has them pins `protobuf<5` (and from 0.10.15 `numpy<2`) although they run with newer
ones; ComfyUI environments usually hold newer ones that other packages need (onnx's generated code needs
protobuf ≥ 6), so install it without letting pip downgrade them:
`python -m pip install --no-deps mediapipe==0.10.21` and `python -m pip install absl-py flatbuffers matplotlib`.

The graph is run through `SolutionBase` without calculator-option overrides: Holistic's own constructor
edits calculator options with `FieldDescriptor.label`, which protobuf 7 removed, while the graph's default
detection and tracking thresholds (0.5) equal Holistic's defaults anyway.

Landmarks → our layout:
- body: OpenPose-18 from BlazePose-33 (`BLAZEPOSE_TO_BODY`), the neck as the mean of the shoulders (as
  DWPose does); a point is kept when its visibility reaches the threshold.
- hands: MediaPipe's 21-point hand layout is OpenPose's. Holistic's `left_hand_landmarks` is the person's
  own left hand (its wrist is the pose's left wrist), matching `hand_left_keypoints_2d`.
- face: the 468-point mesh → the 68 iBUG points by the one table the S-Face stage also uses
  (`xdyna_core.face.landmarks.MEDIAPIPE_TO_IBUG68`), plus the body's right and left eye as points 68/69, as
  controlnet_aux writes DWPose faces.
- every point outside the picture (or a given content area, e.g. inside letterbox bars) is missing:
  BlazePose extrapolates joints it cannot see, such as feet below the frame edge.

Hands: Holistic runs its hand landmark model on a region it derives from the body pose and keeps a hand only
when the model's hand-presence score reaches 0.5. On dance footage (motion blur, small hands) that drops
about half the hands although most are placed correctly (measured on `driving_1.mp4` against the official
DWPose renderings), so the threshold is a setting here (`hand_presence`), written into the graph's
`ThresholdingCalculator` options before the graph starts. Measured on all 571 frames of `driving_1.mp4`
(video mode), left / right hand found in: 51 / 37 % at MediaPipe's 0.5; 70 / 64 % at 0.1; 76 / 73 % at
0.05 (ours), with 90 / 88 % of the hands within 10 px of the official DWPose hands (95 / 96 % at 0.5).
Interpolating gaps of up to 4 frames relative to the wrist then gives 87 / 89 % (87 / 85 % of them within
10 px of the official hands). A second look on wrist crops (`hand_crops`, MediaPipe Hands) adds about one
point more (89 / 89 %) at about 35 ms per frame, so it is off by default.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence, Sized

import numpy as np

from ..face.landmarks import mediapipe_to_ibug68
from .bounds import person_inside
from .hands import fill_hand_gaps, hand_rates
from .keypoints import L_EYE, NECK, NUM_BODY, NUM_HAND, R_EYE, PersonPose, missing_points
from .mediapipe_hands import HandCropDetector
from .mediapipe_runtime import (
    MEDIAPIPE_INSTALL_HINT,
    MediaPipeUnavailableError,
    load_holistic_module,
    mediapipe_status,
    quiet_import,
)

__all__ = [
    "MEDIAPIPE_INSTALL_HINT",
    "MediaPipeHolistic",
    "MediaPipeUnavailableError",
    "detect_people",
    "load_holistic_module",
    "mediapipe_status",
    "person_from_landmarks",
]

logger = logging.getLogger("xdyna")

# OpenPose-18 index → BlazePose-33 index (MediaPipe `PoseLandmark`); the neck (1) has none.
BLAZEPOSE_TO_BODY: tuple[int | None, ...] = (0, None, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7)
BLAZEPOSE_SHOULDERS = (11, 12)
BLAZEPOSE_WRISTS = {"left_hand": 15, "right_hand": 16}


# Holistic's hand-presence threshold (hand_landmark_cpu.pbtxt); ours defaults lower (see the module notes).
MEDIAPIPE_HAND_PRESENCE = 0.5
DEFAULT_HAND_PRESENCE = 0.05
# Longest run of frames without a hand that is interpolated (at 8 fps, half a second).
DEFAULT_HAND_GAP = 4
_HAND_PRESENCE_NODE = "handlandmarkcpu__ThresholdingCalculator"


def _landmark_array(landmarks, with_visibility: bool) -> np.ndarray | None:
    if landmarks is None:
        return None
    rows = [(lm.x, lm.y, lm.visibility if with_visibility else 1.0) for lm in landmarks.landmark]
    return np.asarray(rows, dtype=np.float64)


def person_from_landmarks(
    pose: np.ndarray | None,
    left_hand: np.ndarray | None,
    right_hand: np.ndarray | None,
    face: np.ndarray | None,
    width: int,
    height: int,
    min_visibility: float = 0.3,
    content: Sequence[int] | None = None,
) -> PersonPose | None:
    """MediaPipe Holistic landmarks (normalised image coordinates) as a `PersonPose` in pixels.

    Args:
        pose: `[33, 3]` (x, y, visibility), or None when no person was found (then None is returned).
        left_hand, right_hand: `[21, ≥2]` or None. face: `[468, ≥2]` (or 478 with irises) or None.
        min_visibility: body points below it are missing (MediaPipe still places occluded joints).
        content: `(left, top, right, bottom)` pixels of the picture inside any letterbox bars (default: the
            whole image); points outside it are missing.
    """
    if pose is None:
        return None
    scale = np.array([width, height], dtype=np.float64)
    body = missing_points(NUM_BODY)
    for op_index, bp_index in enumerate(BLAZEPOSE_TO_BODY):
        if bp_index is not None and pose[bp_index, 2] >= min_visibility:
            body[op_index] = (*(pose[bp_index, :2] * scale), 1.0)
    left, right = BLAZEPOSE_SHOULDERS
    if min(pose[left, 2], pose[right, 2]) >= min_visibility:
        body[NECK] = (*(pose[[left, right], :2].mean(axis=0) * scale), 1.0)

    def hand(points: np.ndarray | None) -> np.ndarray | None:
        if points is None:
            return None
        if points.shape[0] != NUM_HAND:
            raise ValueError(f"a MediaPipe hand has {NUM_HAND} landmarks, got {points.shape[0]}")
        return np.concatenate([points[:, :2] * scale, np.ones((NUM_HAND, 1))], axis=1)

    face_points = None
    if face is not None:
        ibug = mediapipe_to_ibug68(np.asarray(face)[:, :2]) * scale
        face_points = np.concatenate([np.concatenate([ibug, np.ones((68, 1))], axis=1), body[[R_EYE, L_EYE]]])
    person = person_inside(
        PersonPose(body, face_points, hand(left_hand), hand(right_hand)),
        content if content is not None else (0, 0, width, height),
    )
    return None if person.is_empty() else person


def holistic_graph_config(solution_base, holistic, hand_presence: float):
    """Holistic's graph, expanded, with the hand-presence threshold of both hands set to `hand_presence`."""
    calculator_pb2 = quiet_import("mediapipe.framework.calculator_pb2")
    thresholding_pb2 = quiet_import("mediapipe.calculators.util.thresholding_calculator_pb2")
    validated = quiet_import("mediapipe.python._framework_bindings.validated_graph_config")
    root = os.sep.join(os.path.abspath(solution_base.__file__).split(os.sep)[:-3])
    graph = validated.ValidatedGraphConfig()
    graph.initialize(binary_graph_path=os.path.join(root, holistic._BINARYPB_FILE_PATH))
    config = calculator_pb2.CalculatorGraphConfig()
    config.ParseFromString(graph.binary_config)
    nodes = [n for n in config.node if n.name.endswith(_HAND_PRESENCE_NODE)]
    if len(nodes) != 2:
        raise RuntimeError(
            f"this MediaPipe's Holistic graph has {len(nodes)} hand-presence thresholds, expected 2 (one per hand); "
            f"use mediapipe 0.10.21 ({MEDIAPIPE_INSTALL_HINT})"
        )
    for node in nodes:
        node.options.Extensions[thresholding_pb2.ThresholdingCalculatorOptions.ext].threshold = hand_presence
    return config


class MediaPipeHolistic:
    """MediaPipe Holistic on RGB uint8 frames → one `PersonPose` (or None) per frame.

    Args:
        video: treat successive calls as a video (tracking between frames and MediaPipe's landmark
            smoothing); False runs every frame independently (for unrelated images).
        min_visibility: threshold on BlazePose's visibility for body points.
        face: also run the face mesh (needed for S-Face boxes; off saves time).
        hand_presence: lowest hand-presence score of a kept hand (MediaPipe's own: 0.5).
        content: `(left, top, right, bottom)` of the picture inside letterbox bars; points outside are missing.
        hand_crops: look again for each hand Holistic missed, on a crop around its wrist
            (`mediapipe_hands.HandCropDetector`).

    Use as a context manager, or call `close()`: the MediaPipe graph holds native resources.
    """

    def __init__(
        self,
        video: bool = True,
        min_visibility: float = 0.3,
        face: bool = True,
        hand_presence: float = DEFAULT_HAND_PRESENCE,
        content: Sequence[int] | None = None,
        hand_crops: bool = False,
    ):
        if not 0.0 <= hand_presence <= 1.0:
            raise ValueError(f"hand_presence is a score in [0, 1], got {hand_presence}")
        solution_base, holistic = load_holistic_module()
        self.min_visibility = min_visibility
        self.content = None if content is None else tuple(int(v) for v in content)
        outputs = ["pose_landmarks", "left_hand_landmarks", "right_hand_landmarks"]
        if face:
            outputs.append("face_landmarks")
        if hand_presence == MEDIAPIPE_HAND_PRESENCE:
            graph = {"binary_graph_path": holistic._BINARYPB_FILE_PATH}
        else:
            graph = {"graph_config": holistic_graph_config(solution_base, holistic, hand_presence)}
        # model_complexity 1 (pose_landmark_full.tflite) is the body model inside the wheel; 0 and 2 download.
        self._graph = solution_base.SolutionBase(
            **graph,
            side_inputs={
                "model_complexity": 1,
                "smooth_landmarks": video,
                "enable_segmentation": False,
                "smooth_segmentation": False,
                "refine_face_landmarks": False,
                "use_prev_landmarks": video,
            },
            outputs=outputs,
        )
        self._outputs = outputs
        self._crops = HandCropDetector() if hand_crops else None
        self.hands_from_crops = 0

    def __call__(self, image: np.ndarray) -> PersonPose | None:
        if image.ndim != 3 or image.shape[2] < 3:
            raise ValueError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
        rgb = np.ascontiguousarray(image[:, :, :3], dtype=np.uint8)
        result = self._graph.process({"image": rgb})
        height, width = rgb.shape[:2]
        person = person_from_landmarks(
            _landmark_array(result.pose_landmarks, True),
            _landmark_array(result.left_hand_landmarks, False),
            _landmark_array(result.right_hand_landmarks, False),
            _landmark_array(getattr(result, "face_landmarks", None), False),
            width,
            height,
            self.min_visibility,
            self.content,
        )
        if self._crops is not None and person is not None:
            person, found = self._crops.complete(rgb, person)
            if found:
                self.hands_from_crops += found
                person = person_inside(person, self.content if self.content is not None else (0, 0, width, height))
        return person

    def close(self) -> None:
        if self._graph is not None:
            self._graph.close()
            self._graph = None
        if self._crops is not None:
            self._crops.close()
            self._crops = None

    def __enter__(self) -> MediaPipeHolistic:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def detect_people(
    frames: Iterable[np.ndarray],
    video: bool = True,
    min_visibility: float = 0.3,
    face: bool = True,
    on_frame=None,
    total: int | None = None,
    hand_presence: float = DEFAULT_HAND_PRESENCE,
    content: Sequence[int] | None = None,
    hand_crops: bool = False,
    hand_gap: int = DEFAULT_HAND_GAP,
) -> list[PersonPose | None]:
    """Run Holistic over frames (`[H, W, 3]` uint8 RGB each, any iterable: a long clip need not be converted
    at once); `on_frame(done, total)` is called after each frame (`total` defaults to `len(frames)`).

    `hand_presence`, `content` and `hand_crops` as for `MediaPipeHolistic`. In video mode a hand missing for at
    most `hand_gap` frames is interpolated relative to its wrist (`hands.fill_hand_gaps`; 0 turns it off).
    """
    if total is None:
        total = len(frames) if isinstance(frames, Sized) else 0
    people: list[PersonPose | None] = []
    settings = dict(
        video=video,
        min_visibility=min_visibility,
        face=face,
        hand_presence=hand_presence,
        content=content,
        hand_crops=hand_crops,
    )
    with MediaPipeHolistic(**settings) as holistic:
        for i, frame in enumerate(frames):
            people.append(holistic(frame))
            if on_frame is not None:
                on_frame(i + 1, max(total, i + 1))
        from_crops = holistic.hands_from_crops
    filled = {}
    if video and hand_gap > 0:
        people, filled = fill_hand_gaps(people, hand_gap)
    rates = hand_rates(people)
    logger.info(
        "X-Dyna MediaPipe: left hand in %.0f%%, right hand in %.0f%% of %d frames (%d found on wrist crops, "
        "%d interpolated)",
        100 * rates["left_hand"],
        100 * rates["right_hand"],
        len(people),
        from_crops,
        sum(filled.values()),
    )
    return people
